"""Constant registers (spec A1 "Constant registers", a Registers paragraph per section): each op's
declaration (OpDef.const_formats, Kernel.const_formats) and ops.check_constants."""
import copy
from pathlib import Path

import numpy as np
import pytest

from intsim.arith import ArithSpecError, ConstFormat, IntFormat
from intsim.errors import ProgramError
from intsim.golden import load_program
from intsim.ops import check_constants, constant_problems, program_op

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def w8a8():
    return load_program(REPO / "golden" / "fmnist_w8a8")


def test_registers_are_the_narrowest_holding_the_allowed_values():
    k = ConstFormat.holding(-31, 62)
    assert (k.describe(), k.lo, k.hi) == ("s7", -31, 62)
    assert ConstFormat.holding(1, (1 << 31) - 1).describe() == "u31"
    assert ConstFormat.holding(0, (1 << 62) - 1).describe() == "u62"       # wider than any tensor
    assert ConstFormat.fixed(20).describe() == "u5" and ConstFormat.fixed(20).lo == 20
    assert ConstFormat.holding(-1, -1).describe() == "s2"                   # A1: signed is >= 2 bits
    assert ConstFormat.of(IntFormat(16, narrow=True)).describe() == "s16n"
    assert ConstFormat.holding(2, 16).exactly(8).violation(9) == "value 9 outside [8, 8] (register u5)"
    assert k.violation(70) == "value 70 outside [-31, 62] (register s7)"
    any_shape = ConstFormat(7, True, lo=-31, hi=62)
    assert any_shape.violation(np.array([3, -32])) == "value -32 outside [-31, 62] (register s7)"
    assert k.violation(np.uint64(2**64 - 1)).startswith("value 18446744073709551615 outside")   # no wrap
    assert "not an integer" in k.violation(3.0) and "not an integer" in k.violation(True)
    assert ConstFormat.holding(0, 5, (4,)).violation(np.zeros(3, np.int64)) == "shape (3,), declared (4,)"
    for bad in (dict(bits=65), dict(bits=8, narrow=True), dict(bits=4, lo=0, hi=16)):
        with pytest.raises(ArithSpecError):
            ConstFormat(**bad)


def test_every_constant_of_the_committed_programs_is_declared_and_valid(w8a8):
    assert constant_problems(w8a8) == []
    check_constants(w8a8)
    declared = {(op.kind, c) for op in w8a8.ops for c in program_op(op.kind).const_formats(op, w8a8)}
    present = {(op.kind, c) for op in w8a8.ops for c in op.consts}
    assert declared == present


def _op(program, kind):
    """The first op of a kind (a per-tensor one for requant)."""
    return next(op for op in program.ops if op.kind == kind and np.ndim(op.consts.get("m", 0)) == 0)


@pytest.mark.parametrize("kind, const, value, message", [
    ("requant", "k", 70, r"constant 'k': value 70 outside \[-31, 62\] \(register s7\) \(spec A6\)"),
    ("add", "ma", 1 << 31, r"constant 'ma': value 2147483648 outside \[1, 2147483647\] \(register u31\)"),
    ("softmax", "K", -5, r"constant 'K': value -5 outside \[65536, 4611686018427387904\] \(register u63\)"),
    ("softmax", "F", 21, r"constant 'F': value 21 outside \[20, 20\]"),
    ("layernorm", "g", np.ones(95, np.int64), r"constant 'g': shape \(95,\), declared \(96,\) \(spec K4.2\)"),
    ("layernorm", "C", 95, r"constant 'C': value 95 outside \[96, 96\]"),
    ("gelu", "in_hi", 40000, r"constant 'in_hi': value 40000 outside \[32767, 32767\]"),
    ("linear", "weight", np.full((288, 96), 128, np.int64), r"constant 'weight': value 128 outside s8n\[-127, 127\]"),
    ("cls_pos", "pos", np.zeros((49, 96), np.int64), r"constant 'pos': shape \(49, 96\), declared \(50, 96\)"),
    ("requant", "m", 31.7, r"constant 'm': float 31.7 is not an integer constant"),
])
def test_a_planted_fault_is_named(w8a8, kind, const, value, message):
    program = copy.deepcopy(w8a8)
    op = _op(program, kind)
    op.consts[const] = value
    with pytest.raises(ProgramError, match=message):
        check_constants(program)
    idx = program.ops.index(op)
    assert constant_problems(program)[0].startswith(f"op {idx} {kind} {op.name!r}")


def test_undeclared_and_missing_constants(w8a8):
    program = copy.deepcopy(w8a8)
    sm = _op(program, "softmax")
    sm.consts["EXTRA"] = 1
    del sm.consts["DS"]
    problems = constant_problems(program)
    assert any("constant 'EXTRA' is not one of its constants" in p for p in problems)
    assert any("constant 'DS' is missing (spec K2.1)" in p for p in problems)
    with pytest.raises(ProgramError, match=r"\(and 1 more\)"):
        check_constants(program)


def test_the_multiplier_register_follows_the_configured_width(w8a8):
    """A2: m is as wide as the program's multiplier_bits (31 in the committed sets)."""
    program = copy.deepcopy(w8a8)
    req = _op(program, "requant")
    assert program_op("requant").const_formats(req, program)["m"].describe() == "u31"
    program.meta["config"]["multiplier_bits"] = 16
    assert program_op("requant").const_formats(req, program)["m"].describe() == "u16"
    assert program_op("add").const_formats(_op(program, "add"), program)["mb"].describe() == "u16"
    with pytest.raises(ProgramError, match=r"outside \[1, 65535\] \(register u16\)"):
        check_constants(program)                         # its 31-bit multipliers no longer fit
