"""Execution of an integer program: one kernel call per op, integers in and out.

    exe = Executable(program)             # checks the constants, binds every op once (kernel
                                          # plans, weights prepared for the fast path)
    q_out = exe.run(q_in, observe=None)   # integers in, integers out
    y = exe.infer(images)                 # float images in, float output out (boundary A7)

`observe(op, inputs, outputs)` is called after each op: golden dumps, comparators and per-layer
SQNR are consumers of this hook, not separate paths. `path="reference"` runs every kernel's plain
NumPy reference instead of its fast path; both give identical integers. The Executable is the one,
explicit place where run-time state lives (nothing is stashed on the Program).
"""
import numpy as np

from . import arith
from .arith import ArithSpecError
from .errors import ExecutionError, ProgramError
from .ops import program_op
from .schedule import last_uses

PATHS = ("fast", "reference")


class Executable:
    """A program ready to run: each op's definition and bound state, and when each tensor dies."""

    def __init__(self, program, path="fast"):
        if path not in PATHS:
            raise ExecutionError(f"path must be 'fast' or 'reference', got {path!r}")
        self.program, self.path = program, path
        self.steps = []
        for idx, op in enumerate(program.ops):
            where = f"op {idx} {op.name!r}: "
            d = program_op(op.kind, where)
            check_constants(idx, op)
            try:
                self.steps.append((d, d.bind(op, program)))
            except (ArithSpecError, ValueError, KeyError) as e:
                raise ProgramError(f"{where}{op.kind}: cannot prepare it ({e})") from None
        self.last = last_uses(program.ops, lambda op: op.inputs, keep=[program.output_name])

    def run(self, q_input, observe=None, check=True):
        """The integer output for a quantized input batch. check=True verifies that every op
        output is an integer array within its declared format."""
        program = self.program
        env = {program.input_name: check_input(program, q_input)}
        for idx, (op, (d, bound)) in enumerate(zip(program.ops, self.steps)):
            ins = [env[t] for t in op.inputs]
            try:
                outs = d.run(op, ins, bound, self.path)
            except (ArithSpecError, ValueError) as e:
                raise ExecutionError(f"op {idx} {op.kind} {op.name!r}: {e}") from e
            for name, val in zip(op.outputs, outs):
                if check:
                    check_output(program, idx, op, name, val)
                env[name] = val
            if observe is not None:
                observe(op, ins, outs)
            for t in op.inputs:     # free what no later op reads (bounded memory on deep models)
                if self.last.get(t) == idx and t != program.input_name:
                    env.pop(t, None)
        return env[program.output_name]

    def infer(self, images_float, observe=None):
        """Float images in, float output out (the model boundary, spec A7); integers in between."""
        q = quantize_input(self.program, images_float)
        return dequantize_output(self.program, self.run(q, observe))


def check_input(program, q_input):
    info = program.input
    q_input = np.asarray(q_input)
    if q_input.ndim != len(info.shape) + 1 or tuple(q_input.shape[1:]) != tuple(info.shape):
        raise ArithSpecError(f"input of shape {q_input.shape}: the program expects (N, "
                             f"{', '.join(map(str, info.shape))})")
    arith.check_fits(f"program input {program.input_name!r}", q_input, info.fmt)
    return q_input


def check_constants(idx, op):
    for cname, v in op.consts.items():
        try:
            arith.int_const(f"op {idx} {op.kind} {op.name!r} constant {cname!r}", v)
        except ArithSpecError as e:
            raise ExecutionError(str(e)) from None


def check_output(program, idx, op, name, val):
    what = f"op {idx} {op.kind} {op.name!r}"
    if val.dtype.kind not in "iu":
        raise ExecutionError(f"{what} produced {val.dtype} for {name!r}: integer programs carry "
                             f"integers only")
    try:
        arith.check_fits(f"{what} output {name!r}", val, program.tensors[name].fmt)
    except arith.IntOverflowError as e:
        raise ExecutionError(str(e)) from e


def run_program(program, q_input, observe=None, path="fast", check=True):
    """One-off run (binds the program each call; hold an Executable to run many batches)."""
    return Executable(program, path).run(q_input, observe, check)


def quantize_input(program, images_float):
    return arith.quantize(images_float, program.input.scale, program.input.fmt)


def dequantize_output(program, q):
    return arith.dequantize(q, program.output.scale)


def run(program, images_float, path="fast", observe=None):
    """One-off float images in, float output out (hold an Executable to run many batches)."""
    return Executable(program, path).infer(images_float, observe)
