"""The integer program as plain data: save/load, fingerprint, documentary scales."""
import json

import numpy as np
import pytest

from conftest import toy_input, toy_program
from intsim.errors import ProgramError
from intsim.execute import run_program
from intsim.program import Program


def test_save_load_round_trip_is_exact(tmp_path):
    p = toy_program()
    path = p.save(tmp_path / "prog")
    assert path.name == "prog.json" and (tmp_path / "prog.npz").exists()
    assert not list(tmp_path.glob("*.tmp"))
    q = Program.load(tmp_path / "prog")
    assert q.fingerprint() == p.fingerprint()
    assert [o.kind for o in q.ops] == ["linear", "requant", "softmax"]
    assert q.tensors["fc.acc"].scale == p.tensors["fc.acc"].scale
    x = toy_input()
    np.testing.assert_array_equal(run_program(q, x), run_program(p, x))


def test_fingerprint_sees_every_constant_and_attribute():
    p, q = toy_program(), toy_program()
    assert p.fingerprint() == q.fingerprint()
    q.ops[1].consts["k"] = q.ops[1].consts["k"].copy()
    q.ops[1].consts["k"][0] += 1
    assert q.fingerprint() != p.fingerprint()
    r = toy_program()
    r.ops[0].attrs["weight_fmt"] = {"bits": 7, "signed": True, "narrow": True}
    assert r.fingerprint() != p.fingerprint()


def test_documentary_scale_dequantizes():
    p = toy_program()
    np.testing.assert_allclose(p.tensors["fc.acc"].dequantize(np.array([[1, 2, 3, 4]])),
                               [[0.001, 0.004, 0.009, 0.016]])
    assert p.input.name == "x" and p.output.name == "sm"
    assert "3 ops" in p.summary() and "bitshift-softmax" in p.summary()
    with pytest.raises(KeyError, match="no op named"):
        p.op("nope")


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ProgramError, match="cannot read integer program"):
        Program.load(tmp_path / "missing")
    toy_program().save(tmp_path / "p")
    doc = json.loads((tmp_path / "p.json").read_text())
    doc["schema"] = 99
    (tmp_path / "p.json").write_text(json.dumps(doc))
    with pytest.raises(ProgramError, match="schema 99"):
        Program.load(tmp_path / "p")
