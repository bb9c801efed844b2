"""The block Hadamard rotation (spec K10): the butterfly against the definition, H_B H_B = B I,
the K10.2 width rule (never exceeded, and tight), the preconditions, the op's load-time checks,
and the shipped model compiled with QuantConfig.rotate."""
import itertools

from hypothesis import given, settings, strategies as st, HealthCheck
import numpy as np
import pytest

import intsim.pipeline as ip
from intsim import execute
from intsim.arith import ArithSpecError, IntFormat
from intsim.conformance import Case, case_program, reference_outputs, run_op
from intsim.conformance.hadamard import extreme_blocks, hadamard_cases
from intsim.coverage import hadamard_range
from intsim.errors import ProgramError
from intsim.kernels import hadamard
from intsim.program import Program
from intsim.quantize import QuantConfig

BLOCKS = [1 << n for n in range(1, 11)]


def fmts():
    """Every input format K10.1 admits at some block: signed 2..31 bits (narrow too), unsigned 1..30."""
    return st.one_of(st.builds(IntFormat, st.integers(2, 31), st.just(True), st.booleans()),
                     st.builds(IntFormat, st.integers(1, 30), st.just(False)))


@st.composite
def inputs(draw):
    """(x, fmt, block): x of shape (..., k B) in fmt, K10.1's preconditions met; codes drawn from
    the format's ends and 0 as often as from inside it."""
    fmt = draw(fmts())
    n_max = min(10, 32 - fmt.bits - (not fmt.signed))
    block = 1 << draw(st.integers(1, n_max))
    lead = draw(st.lists(st.integers(1, 3), min_size=0, max_size=2))
    shape = tuple(lead) + (block * draw(st.integers(1, 3)),)
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    x = rng.integers(fmt.lo, fmt.hi + 1, size=shape, dtype=np.int64)
    ends = np.array([fmt.lo, fmt.hi, 0 if fmt.lo <= 0 <= fmt.hi else fmt.lo])
    pick = rng.random(shape) < 0.5
    x[pick] = ends[rng.integers(0, 3, size=int(pick.sum()))]
    return x, fmt, block


@given(inputs())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_butterfly_equals_definition_and_stays_in_the_output_format(case):
    x, fmt, block = case
    hadamard.check(fmt, block, x.shape[-1])
    z = hadamard.reference(x, block)
    assert z.shape == x.shape and z.dtype == np.int64
    assert np.array_equal(hadamard.fast(x, block), z)
    out = hadamard.out_format(fmt, block)
    assert out.signed and out.bits <= 32
    assert out.lo <= z.min() and z.max() <= out.hi
    z_min, z_max = hadamard_range(fmt, block)
    assert z_min <= z.min() and z.max() <= z_max


@pytest.mark.slow
def test_definition_is_the_sylvester_matrix():
    for block in BLOCKS:
        h = hadamard.sylvester(block)
        i, l = np.indices(h.shape)
        assert np.array_equal(h, 1 - 2 * (np.bitwise_count(i & l).astype(np.int64) % 2))      # (-1)^popcount
        assert np.array_equal(h, h.T) and np.array_equal(h @ h, block * np.eye(block, dtype=np.int64))
    for block in BLOCKS[:6]:        # the reference of a unit vector e_l is column l of H_B, block by block
        h = hadamard.sylvester(block)
        x = np.eye(2 * block, dtype=np.int64)
        z = hadamard.reference(x, block)
        assert np.array_equal(z[:block, :block], h) and np.array_equal(z[block:, block:], h)
        assert not z[:block, block:].any() and not z[block:, :block].any()


def test_output_width_rule_is_exhaustively_right_and_tight():
    """Over every input block of small formats: the range of z is K10.2's [min z, max z], inside
    out_format; for a signed input min z is the format's lowest value, for an unsigned one max z
    does not fit one bit less."""
    for fmt, block in itertools.product([IntFormat(2), IntFormat(3), IntFormat(2, narrow=True),
                                         IntFormat(1, False), IntFormat(2, False)], [2, 4]):
        codes = np.arange(fmt.lo, fmt.hi + 1)
        x = np.array(list(itertools.product(codes, repeat=block)), dtype=np.int64)
        z = hadamard.reference(x, block)
        assert (z.min(), z.max()) == hadamard_range(fmt, block), (fmt, block)
        out = hadamard.out_format(fmt, block)
        assert out.lo <= z.min() and z.max() <= out.hi
        smaller = IntFormat(out.bits - 1)
        assert z.min() < smaller.lo or z.max() > smaller.hi, (fmt, block)
        if fmt.signed and not fmt.narrow:
            assert z.min() == out.lo


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("fmt", [IntFormat(8), IntFormat(16), IntFormat(16, False), IntFormat(2),
                                 IntFormat(1, False)])
def test_extreme_inputs_reach_both_ends(fmt, block):
    if hadamard.out_bits(fmt, block) > 32:
        pytest.skip("beyond K10.1")
    x = np.stack(extreme_blocks(fmt, block))
    z = hadamard.fast(x, block)
    z_min, z_max = hadamard_range(fmt, block)
    assert z.min() == z_min and z.max() == z_max
    out = hadamard.out_format(fmt, block)
    if fmt.signed:
        assert z_min == out.lo == -block << (fmt.bits - 1)
    else:
        assert z_max == block * fmt.hi and z_max > IntFormat(out.bits - 1).hi


def test_worked_example():
    """docs/arithmetic.md K10.3."""
    x = np.array([[3, -1, 4, -2, -128, -128, -128, -128]])
    out = hadamard.out_format(IntFormat(8), 4)
    assert out == IntFormat(10)
    for path in (hadamard.reference, hadamard.fast):
        assert path(x, 4).tolist() == [[4, 10, 0, -2, -512, 0, 0, 0]]
    real = hadamard.fast(x, 4) * (0.25 / np.sqrt(4))
    np.testing.assert_array_equal(real, hadamard.rotate_float(x * 0.25, 4))
    assert real.tolist() == [[0.5, 1.25, 0.0, -0.25, -64.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize("block", [2, 16, 1024])
def test_rotate_float_is_orthonormal_and_matches_the_integers(block):
    rng = np.random.default_rng(block)
    x = rng.standard_normal((5, 2 * block))
    y = hadamard.rotate_float(x, block)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(hadamard.rotate_float(y, block), x, atol=1e-12)      # H/sqrt(B) is its own inverse
    assert hadamard.rotate_float(x.astype(np.float32), block).dtype == np.float32
    q = rng.integers(-128, 128, size=(3, block))
    np.testing.assert_allclose(hadamard.fast(q, block) / np.sqrt(block), hadamard.rotate_float(q, block),
                               rtol=1e-12, atol=1e-9)


def test_block_for():
    assert hadamard.block_for(192, 64) == 64
    assert hadamard.block_for(192, 1024) == 64           # the largest power of two dividing C
    assert hadamard.block_for(96, 16) == 16
    assert hadamard.block_for(768, 100) == 64            # at most the largest power of two <= max_block
    assert hadamard.block_for(10, 1024) == 2
    assert hadamard.block_for(7, 64) == 0                # odd C: no block
    assert hadamard.block_for(64, 0) == 0 and hadamard.block_for(64, 1) == 0
    assert hadamard.block_for(1, 64) == 0


@pytest.mark.parametrize("fmt, block, channels, match", [
    (IntFormat(8), 3, 12, r"^Hadamard block 3: a power of two in \[2, 1024\]$"),
    (IntFormat(8), 1, 12, r"^Hadamard block 1: a power of two"),
    (IntFormat(8), 2048, 2048, r"^Hadamard block 2048: a power of two"),
    (IntFormat(8), 4.0, 8, r"^Hadamard block 4.0: a power of two"),
    (IntFormat(8), None, 8, r"^Hadamard block None: a power of two"),
    (IntFormat(8), 8, 12, r"^Hadamard block 8 does not divide the 12 channels$"),
    (IntFormat(31), 4, 8, r"^Hadamard block 4 on a 31-bit input needs 33 bits \(at most 32\)$"),
    (IntFormat(24, False), 256, 256, r"^Hadamard block 256 on a 24-bit input needs 33 bits"),
])
def test_check_errors_are_one_clear_line(fmt, block, channels, match):
    with pytest.raises(ArithSpecError, match=match):
        hadamard.check(fmt, block, channels)


def test_check_accepts_the_widest_output():
    hadamard.check(IntFormat(31), 2, 2)
    hadamard.check(IntFormat(21, False), 1024, 1024)
    assert hadamard.out_bits(IntFormat(21, False), 1024) == 32


# --- the op: a one-op program (as a conformance case builds it) -----------------------------------

def _program(fmt=None, block=4, channels=8, out_fmt=None):
    """The one-op program of a hadamard op on (2, channels) samples, as a conformance case makes it;
    fmt defaults to s8, out_fmt to K10.2's."""
    fmt = fmt or IntFormat(8)
    out_fmt = out_fmt or hadamard.out_format(fmt, block if hadamard.is_block(block) else 4)
    x = np.zeros((1, 2, channels), dtype=np.int64)
    return case_program(Case("hadamard", "t", "hadamard", [("in", x, fmt)], [out_fmt], attrs={"block": block},
                             spec="K10"))


def test_op_runs_both_paths_and_costs_n_adds():
    from intsim.ops import program_op
    rng = np.random.default_rng(1)
    p = _program(IntFormat(8), 8, 24)
    x = rng.integers(-128, 128, size=(3, 2, 24))
    ref, = run_op(p, [x], "reference")
    fast, = run_op(p, [x], "fast")
    assert ref.dtype == hadamard.out_format(IntFormat(8), 8).storage and np.array_equal(ref, fast) and np.array_equal(ref, hadamard.reference(x, 8))
    cost = program_op("hadamard").cost(p.ops[0], p)
    assert cost.ops == {"add": 2 * 24 * 3}


@pytest.mark.parametrize("change, match", [
    ({"block": 3}, r"Hadamard block 3: a power of two"),
    ({"block": 16}, r"Hadamard block 16 does not divide the 8 channels"),
    ({"block": None}, r"Hadamard block None"),
    ({"out_fmt": IntFormat(9)}, r"hadamard: output format .* is not K10.2's .*bits=10"),
    ({"out_fmt": IntFormat(11)}, r"is not K10.2's"),
    ({"fmt": IntFormat(8, False), "out_fmt": IntFormat(10)}, r"is not K10.2's .*bits=11"),
    ({"fmt": IntFormat(31), "block": 4, "out_fmt": IntFormat(32)}, r"31-bit input needs 33 bits"),
])
def test_bind_rejects_a_wrong_block_or_output_format(change, match):
    p = _program(**change)
    with pytest.raises(ProgramError, match=match):
        execute.Executable(p, path="reference")


def test_bind_rejects_constants():
    p = _program()
    p.ops[0].consts = {"m": 1}
    with pytest.raises(ProgramError, match="hadamard has no constants"):
        execute.Executable(p)


def test_conformance_cases_are_their_own_reference():
    """Every generated case's dumped output is the definition's (the generator builds no output)."""
    for case in hadamard_cases(np.random.default_rng(0)):
        _, (out,) = reference_outputs(case)
        x, = (v for _, v, _ in case.inputs)
        assert np.array_equal(out, hadamard.reference(x, case.attrs["block"])), case.name


# --- the shipped model with QuantConfig.rotate ---------------------------------------------------

@pytest.fixture(scope="module")
def rotated():
    graph = ip.load()
    data = ip.open_data("fashion-mnist")
    program = ip.compile(graph, ip.calibrate(graph, data.calibration(48), rotate=32), QuantConfig(rotate=32))
    images, _ = data.evaluation(3)
    return program, execute.quantize_input(program, ip.to_model_input(images))


def test_rotated_model_runs_identically_on_both_paths_and_after_save_load(rotated, tmp_path):
    program, q = rotated
    had = [op for op in program.ops if op.kind == "hadamard"]
    assert had, "no Linear input chose the rotation at rotate=32"
    assert {op.attrs["block"] for op in had} <= {2, 4, 8, 16, 32}
    seen = {}

    def observe(op, ins, outs):
        if op.kind == "hadamard":
            seen[op.name] = (ins[0], outs[0])
    fast = execute.Executable(program, path="fast").run(q, observe)
    ref = execute.Executable(program, path="reference").run(q)
    assert fast.dtype == ref.dtype and np.array_equal(fast, ref)
    assert set(seen) == {op.name for op in had}
    for op in had:                       # the documentary scale is S_x / sqrt(B): z S_z = rotate(x S_x)
        x, z = seen[op.name]
        xi, zi = program.tensors[op.inputs[0]], program.tensors[op.outputs[0]]
        assert zi.fmt == hadamard.out_format(xi.fmt, op.attrs["block"]) and np.any(z)
        np.testing.assert_allclose(zi.dequantize(z), hadamard.rotate_float(xi.dequantize(x), op.attrs["block"]),
                                   rtol=1e-9, atol=1e-9 * float(xi.scale) * np.abs(x).max())
    loaded = Program.load(program.save(tmp_path / "rot"))
    assert loaded.fingerprint() == program.fingerprint()
    assert [op.attrs.get("block") for op in loaded.ops] == [op.attrs.get("block") for op in program.ops]
    assert np.array_equal(execute.run_program(loaded, q, path="reference"), ref)
    assert np.array_equal(execute.run_program(loaded, q, path="fast"), fast)


def test_a_loaded_program_with_a_bad_block_is_refused(rotated, tmp_path):
    program, _ = rotated
    path = program.save(tmp_path / "rot")
    bad = Program.load(path)
    op = next(op for op in bad.ops if op.kind == "hadamard")
    op.attrs = dict(op.attrs, block=op.attrs["block"] * 2 + 1)
    with pytest.raises(ProgramError, match=rf"{op.name}.*Hadamard block {op.attrs['block']}: a power of two"):
        execute.Executable(bad)
