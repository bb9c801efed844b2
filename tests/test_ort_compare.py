"""scripts/ort_compare.py on a tiny zoo model: intsim and ONNX Runtime's quantize_static both
measured against the same float reference (slow: exports the zoo model on first use)."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_intsim_and_onnx_runtime_side_by_side(tmp_path):
    pytest.importorskip("onnxruntime.quantization")
    spec = importlib.util.spec_from_file_location("ort_compare", ROOT / "scripts" / "ort_compare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "r.json"
    mod.main(["timm-deit-tiny", "--calib", "8", "--eval", "8", "--ort", "minmax", "--json", str(out)])
    rows = json.loads(out.read_text())[0]["rows"]
    assert [r["method"] for r in rows] == ["intsim W8A8", "ORT QDQ minmax W8A8"]
    for r in rows:     # both track the float model: a wrong output or reference would be near 0 dB
        assert np.isfinite(r["output"]["sqnr_db"]) and r["output"]["sqnr_db"] > 10, r
