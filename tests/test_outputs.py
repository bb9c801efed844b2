"""Models with several outputs, and outputs that are not class vectors: the importer, evaluate and
`intsim run` (text and --json) report each output; top-1 and agreement only for a class vector."""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from intsim import model_files
from intsim.cli import main
from intsim.errors import DataError
from intsim.onnx_import import load_onnx

ROOT = Path(__file__).resolve().parents[1]


def _with_outputs(tmp_path, keep_logits):
    """The shipped legacy model with the final LayerNorm's (N, 50, 96) tokens as an output (after
    the logits, or alone)."""
    proto = onnx.load(str(ROOT / "models" / "fmnist_vit_legacy13.onnx"))
    g = proto.graph
    gemm = next(n for n in g.node if n.op_type == "Gemm")
    select = next(n for n in g.node if gemm.input[0] in n.output)
    tokens = onnx.helper.make_tensor_value_info(select.input[0], onnx.TensorProto.FLOAT, [None, 50, 96])
    if not keep_logits:
        del g.output[:]
    g.output.append(tokens)
    path = tmp_path / ("two_outputs.onnx" if keep_logits else "tokens.onnx")
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "images.npz"
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 256, (12, 1, 28, 28)).astype(np.uint8),
             labels=rng.integers(0, 10, 12))
    return path


def test_two_outputs_import_in_order(tmp_path):
    g = load_onnx(_with_outputs(tmp_path, True))
    assert len(g.outputs) == 2 and g.meta["onnx_output"][0] == "logits"
    shapes = g.tensor_shapes()
    assert [shapes[t] for t in g.outputs] == [(10,), (50, 96)]


def test_run_reports_each_output_json(tmp_path, data, capsys):
    path = _with_outputs(tmp_path, True)
    assert main(["run", str(path), "--data", str(data), "--calib", "8", "--limit", "6", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    logits, tokens = r["outputs"]
    assert logits["kind"] == "class" and logits["shape"] == [10] and logits["int_top1"] is not None
    assert tokens["kind"] == "tensor" and tokens["shape"] == [50, 96]
    assert not {"agreement", "float_top1", "int_top1"} & set(tokens)
    assert 0.9 < tokens["pearson"] <= 1 and tokens["max_abs_error"] > 0 and tokens["sqnr_db"] > 15
    assert r["agreement"] == logits["agreement"]


def test_run_text_never_prints_top1_for_a_tensor(tmp_path, data, capsys):
    path = _with_outputs(tmp_path, False)
    assert main(["run", str(path), "--data", str(data), "--calib", "8", "--limit", "6"]) == 0
    text = capsys.readouterr().out
    assert "top-1" not in text and "agreement" not in text
    assert "SQNR" in text and "Pearson r" in text and "max abs error" in text
    assert main(["run", str(_with_outputs(tmp_path, True)), "--data", str(data), "--calib", "8",
                 "--limit", "6"]) == 0
    text = capsys.readouterr().out
    assert text.count("top-1") == 2 and "(N, 10), class vector" in text and "(N, 50, 96), tensor" in text
    assert "Pearson r" in text.split("output ")[-1] and "top-1" not in text.split("output ")[-1]


def test_zoo_names_resolve_and_unknown_ones_are_named():
    with pytest.raises(DataError, match="model 'hf-vit-huge': unknown zoo model"):
        model_files.resolve_model("hf-vit-huge")
    with pytest.raises(DataError, match="unknown form 'onnx'"):
        model_files.resolve_model("timm-vit-tiny:onnx")
    assert model_files.is_zoo_name("timm-swin-full") and not model_files.is_zoo_name("deit-tiny")
