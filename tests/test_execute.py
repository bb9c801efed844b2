"""The executor: one kernel per op, fast and reference paths, the observe hook, run-time checks."""
import numpy as np
import pytest

from conftest import toy_input, toy_program
from intsim.arith import ArithSpecError, IntOverflowError
from intsim.errors import ExecutionError, ProgramError
from intsim.execute import Executable, run_program


def test_fast_and_reference_paths_agree():
    p, x = toy_program(), toy_input(8)
    np.testing.assert_array_equal(Executable(p).run(x), Executable(p, "reference").run(x))


def test_observe_sees_every_op_in_order_with_its_tensors():
    p, x = toy_program(), toy_input()
    seen = []
    out = Executable(p).run(x, observe=lambda op, ins, outs: seen.append((op.name, ins, outs)))
    assert [s[0] for s in seen] == ["fc", "fc.out", "sm"]
    np.testing.assert_array_equal(seen[0][1][0], x)
    np.testing.assert_array_equal(seen[1][1][0], seen[0][2][0])      # consumer reads producer
    np.testing.assert_array_equal(seen[-1][2][0], out)
    assert seen[0][2][0].dtype == np.int32 and seen[1][2][0].dtype == np.int8
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)


def test_an_executable_runs_many_batches_and_frees_dead_tensors():
    exe = Executable(toy_program())
    assert exe.last == {"x": 0, "fc.acc": 1, "fc.out": 2, "sm": 3}
    a, b = toy_input(3, seed=2), toy_input(5, seed=3)
    np.testing.assert_array_equal(exe.run(np.concatenate([a, b])),
                                  np.concatenate([exe.run(a), exe.run(b)]))


def test_input_is_checked_against_the_program():
    exe = Executable(toy_program())
    with pytest.raises(ArithSpecError, match="expects"):
        exe.run(np.zeros((2, 3, 7), np.int8))
    with pytest.raises(IntOverflowError, match="program input 'x'"):
        exe.run(np.full((1, 3, 8), 200, np.int16))


def test_bad_programs_are_refused_when_bound():
    p = toy_program()
    p.ops[1].kind = "no-such-op"
    with pytest.raises(ProgramError, match="op 1 'fc.out'.*unknown op kind 'no-such-op'"):
        Executable(p)
    p = toy_program()
    p.ops[1].consts["m"] = p.ops[1].consts["m"].astype(np.float64)
    with pytest.raises(ExecutionError, match="constant 'm'"):
        Executable(p)
    with pytest.raises(ExecutionError, match="path"):
        Executable(toy_program(), "turbo")


def test_an_output_outside_its_declared_format_names_the_op():
    p = toy_program()
    p.tensors["fc.acc"].fmt = type(p.tensors["fc.acc"].fmt)(8)      # declared int8, produces int32
    with pytest.raises(ExecutionError, match="op 0 linear 'fc'"):
        run_program(p, toy_input())


# --- the fast path's fused requantizations (OpDef.fuse_requant) -----------------------------------

def committed_program():
    from pathlib import Path
    from intsim import golden
    root = Path(__file__).resolve().parents[1] / "golden" / "fmnist_w8a8"
    program = golden.load_program(root)
    return program, golden.load(root).input.astype(program.input.fmt.storage)


def unrotated_program():
    """The shipped model without Hadamard rotation (docs/quantization.md Q8): no hadamard op
    between a GELU's requant and fc2, the product reads the requant directly."""
    from intsim import pipeline as ip
    from intsim.quantize import QuantConfig
    graph = ip.load()
    data = ip.open_data("fashion-mnist")
    program = ip.compile(graph, ip.calibrate(graph, data.calibration(32), rotate=0), QuantConfig(rotate=0))
    from intsim.execute import quantize_input
    return program, quantize_input(program, ip.to_model_input(data.evaluation(limit=2)[0]))


FUSED_KINDS = {"committed": ["attn_context", "attn_scores", "gelu", "hadamard", "layernorm", "linear", "patch_embed"],
               "unrotated": ["attn_context", "attn_scores", "gelu", "layernorm", "linear", "patch_embed"]}


@pytest.mark.slow
@pytest.mark.parametrize("which", ["committed", "unrotated"])
@pytest.mark.parametrize("engine", ["auto", "blas", "ort", "numba"])
def test_a_fused_run_equals_every_op_on_its_own(engine, which):
    """Without an observer, each matmul's accumulator is requantized in its epilogue (never
    stored) and GELU and its requant are one table; with an observer every op runs alone. Same
    integers either way, and the reference's."""
    from intsim.kernels import gemm
    if engine not in gemm.available_engines():
        pytest.skip(f"engine {engine} not available here")
    program, x = committed_program() if which == "committed" else unrotated_program()
    exe = Executable(program, engine=engine)
    kinds = sorted({program.ops[i].kind for i in exe.fused})
    assert kinds == FUSED_KINDS[which]
    assert all(program.ops[j].kind == "requant" for j, _ in exe.fused.values())
    seen = []
    separate = exe.run(x, observe=lambda op, ins, outs: seen.append(op.name))
    assert len(seen) == len(program.ops)                  # the observer saw every op
    fused = exe.run(x)
    assert fused.dtype == separate.dtype and np.array_equal(fused, separate)
    assert np.array_equal(fused, Executable(program, "reference").run(x))


def test_a_fused_overflow_is_the_same_error_naming_both_ops():
    p, x = toy_program(), toy_input()
    p.ops[0].consts["bias"] = np.full_like(p.ops[0].consts["bias"], (1 << 31) - 1)   # acc leaves int32
    exe = Executable(p)
    assert list(exe.fused) == [0]
    with pytest.raises(ExecutionError, match=r"op 0 linear 'fc' \(with op 1 requant 'fc.out'\).*accumulator"):
        exe.run(x)
    with pytest.raises(ExecutionError, match=r"op 0 linear 'fc': .*accumulator"):
        exe.run(x, observe=lambda *a: None)
