"""`intsim layers`: the per-tensor SQNR through depth of the shipped model (table, JSON, PNG), and
the local error of each op on exact inputs (analysis.local_sqnr) beside the accumulated one."""
import json

import numpy as np
import pytest

from intsim.cli import main
from intsim.experiment import plots


def _layers(capsys, *extra):
    assert main(["layers", "--calib", "16", "--limit", "8", *extra]) == 0
    return capsys.readouterr().out


@pytest.mark.slow
def test_json_lists_every_tensor_through_depth_with_its_local_error(capsys, tmp_path):
    png = tmp_path / "depth.png"
    args = ["--local", "--json"] + (["--png", str(png)] if plots.available() else [])
    report = json.loads(_layers(capsys, *args))
    rows = report["tensors"]
    names = [r["tensor"] for r in rows]
    assert report["images"] == 8 and len(names) == len(set(names)) > 50
    assert any(n.startswith("blocks.3.") for n in names) and names[-1] == "logits"
    both = [(r["sqnr_db"], r["local_db"]) for r in rows
            if r["sqnr_db"] is not None and r["local_db"] is not None]
    acc, loc = np.array(both).T
    assert len(both) > 50 and 15 < acc.min() < acc.max() < 80
    # an op fed exact inputs adds its own error only: locally it is at least as clean, typically
    assert np.median(loc - acc) > 0
    if plots.available():
        assert png.stat().st_size > 10_000


@pytest.mark.slow
def test_table_and_bad_png_path(capsys, tmp_path):
    out = _layers(capsys)
    assert out.splitlines()[0].split()[:3] == ["tensor", "op", "SQNR"]
    assert "blocks.0.attn.softmax" in out and "local" not in out.splitlines()[0]
    if plots.available():
        new_dir = tmp_path / "no" / "such" / "dir" / "x.png"       # made, as --save-program's is
        _layers(capsys, "--png", str(new_dir))
        assert new_dir.stat().st_size > 10_000
        (tmp_path / "file").write_text("")
        for bad, why in [(tmp_path / "file" / "x.png", "is not a folder"),
                         (tmp_path / "ly.txt", ".txt is not an image format")]:
            assert main(["layers", "--calib", "16", "--limit", "8", "--png", str(bad)]) == 1
            err = capsys.readouterr().err
            assert why in err and len(err.strip().splitlines()) == 1
