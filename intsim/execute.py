"""Execution of an integer program: one kernel call per op, integers in and out.

    exe = Executable(program)             # checks the constants, binds every op once (kernel
                                          # plans, weights prepared for the fast path's engine)
    q_out = exe.run(q_in, observe=None)   # integers in, integers out
    y = exe.infer(images)                 # float images in, float output out (boundary A7)

A program with several outputs returns a tuple of arrays where a single-output program returns one
array (`as_outputs` turns either into a list). `observe(op, inputs, outputs)` is called after each
op: golden dumps, comparators and per-layer SQNR are consumers of this hook, not separate paths.
Without an observer, the fast path computes a requant together with the op that makes its input
when nothing else reads that tensor (a matmul's accumulator is requantized in the product's own
epilogue pass, a GELU and its requant are one table: `OpDef.fuse_requant`): the same integers, one
pass and one tensor fewer. With an observer every op runs on its own, so the observer sees every
tensor of the program. `path="reference"` runs every kernel's plain
NumPy reference instead of its fast path; both give identical integers. `engine` picks the exact
integer GEMM engine of the fast path (spec K1.5: "auto", "ort", "blas", "numba", "reference"); every
engine gives the same integers; `threads` the threads of its ONNX Runtime products (default
$INTSIM_THREADS, else 1: gemm.engine_threads). The Executable is the one, explicit place where run-time state lives
(nothing is stashed on the Program).
"""
import collections
from dataclasses import replace

import numpy as np

from . import arith
from .arith import ArithSpecError
from .errors import ExecutionError, ProgramError
from .kernels import gemm
from .ops import REQUANT, program_op
from .schedule import last_uses

PATHS = ("fast", "reference")


class Executable:
    """A program ready to run: each op's definition and bound state, and when each tensor dies."""

    def __init__(self, program, path="fast", engine="auto", threads=None):
        if path not in PATHS:
            raise ExecutionError(f"path must be 'fast' or 'reference', got {path!r}")
        if engine not in gemm.ENGINES:
            raise ExecutionError(f"engine must be one of {', '.join(gemm.ENGINES)}, got {engine!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ExecutionError(f"threads must be an integer >= 1, got {threads!r}")
        self.program, self.path, self.engine = program, path, engine
        self.threads = gemm.engine_threads() if threads is None else threads
        check_wiring(program)
        with gemm.use_engine(engine), gemm.use_threads(self.threads):   # weights laid out for the run
            self._bind(program)
        self.last = last_uses(program.ops, lambda op: op.inputs, keep=program.outputs)
        self.fused = self._fusions(program) if path == "fast" else {}
        self.fused_away = {j for j, _ in self.fused.values()}

    def _bind(self, program):
        self.steps = []
        for idx, op in enumerate(program.ops):
            where = f"op {idx} {op.name!r}: "
            d = program_op(op.kind, where)
            op = replace(op, consts=canonical_constants(idx, op))
            try:
                self.steps.append((d, op, d.bind(op, program)))
            except (ArithSpecError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
                # malformed constants or attributes (bind checks them): one line naming the op
                raise ProgramError(f"{where}{op.kind}: cannot prepare it ({type(e).__name__}: {e})") from None

    def _fusions(self, program):
        """{producer index: (requant index, run)}: each requant whose input tensor only it reads (not
        a program output), made by an op that can requantize its result in its own pass;
        run(inputs) gives the requant's output from the producer's inputs. The tensor in between is
        never made, so its declaration must be what the requant's output check covers (its shape)."""
        readers = collections.Counter(t for op in program.ops for t in op.inputs)
        made_by = {t: i for i, op in enumerate(program.ops) for t in op.outputs}
        fused = {}
        for j, (d, op, plan) in enumerate(self.steps):
            src = op.inputs[0] if d is REQUANT else None
            i = made_by.get(src)
            if (i is None or readers[src] != 1 or src in program.outputs or len(program.ops[i].outputs) != 1
                    or program.tensors[src].shape != program.tensors[op.outputs[0]].shape):
                continue
            producer, producer_op, bound = self.steps[i]
            run = producer.fuse_requant(producer_op, bound, plan.runtime)
            if run is not None:
                fused[i] = (j, run)
        return fused

    def run(self, q_input, observe=None, check=True, feed=None):
        """The integer output (a tuple for several) for a quantized input batch. check=True
        verifies that every op output is an integer array within its declared format.
        feed(op, inputs) -> the inputs the op runs on instead (an analysis that gives each op
        exact inputs, analysis.local_sqnr); like an observer, it makes every op run on its own."""
        with gemm.use_engine(self.engine), gemm.use_threads(self.threads):
            return self._run(q_input, observe, check, feed)

    def _run(self, q_input, observe, check, feed=None):
        program = self.program
        env = {program.input_name: check_input(program, q_input)}
        fuse = observe is None and feed is None     # else every op runs on its own
        for idx, (op, (d, bound_op, bound)) in enumerate(zip(program.ops, self.steps)):
            if fuse and idx in self.fused_away:
                continue                # computed by its input's producer
            ins = [env[t] for t in op.inputs]
            if feed is not None:
                ins = feed(op, ins)
            fusion = self.fused.get(idx) if fuse else None
            out_idx = idx if fusion is None else fusion[0]
            try:
                outs = d.run(bound_op, ins, bound, self.path) if fusion is None else [fusion[1](ins)]
            except (ArithSpecError, ValueError) as e:
                also = "" if fusion is None else f" (with op {out_idx} requant {program.ops[out_idx].name!r})"
                raise ExecutionError(f"op {idx} {op.kind} {op.name!r}{also}: {e}") from e
            for name, val in zip(program.ops[out_idx].outputs, outs):
                if check:
                    check_output(program, out_idx, program.ops[out_idx], name, val)
                env[name] = val
            if observe is not None:
                observe(op, ins, outs)
            for t in op.inputs:     # free what no later op reads (bounded memory on deep models)
                if self.last.get(t) == idx and t != program.input_name:
                    env.pop(t, None)
        outs = tuple(env[t] for t in program.outputs)
        return outs[0] if len(outs) == 1 else outs

    def infer(self, images_float, observe=None, feed=None):
        """Float images in, float output(s) out (the model boundary, spec A7); integers between."""
        q = quantize_input(self.program, images_float)
        return dequantize_output(self.program, self.run(q, observe, feed=feed))


def check_wiring(program):
    """Every op reads tensors made before it and declares the tensors it makes; the output exists."""
    known = {program.input_name}
    for idx, op in enumerate(program.ops):
        where = f"op {idx} {op.kind} {op.name!r}"
        late = [t for t in op.inputs if t not in known]
        if late:
            raise ProgramError(f"{where} reads {late} before any op makes it")
        undeclared = [t for t in op.outputs if t not in program.tensors]
        if undeclared:
            raise ProgramError(f"{where} makes {undeclared}, which the program does not declare")
        known.update(op.outputs)
    outs = program.output_name if isinstance(program.output_name, list) else [program.output_name]
    if (program.input_name not in program.tensors or not outs
            or any(not isinstance(t, str) or t not in known for t in outs)):
        raise ProgramError(f"the program's input {program.input_name!r} or output "
                           f"{program.output_name!r} is not a tensor it declares and makes")


def check_input(program, q_input):
    info = program.input
    q_input = np.asarray(q_input)
    if q_input.ndim != len(info.shape) + 1 or tuple(q_input.shape[1:]) != tuple(info.shape):
        raise ArithSpecError(f"input of shape {q_input.shape}: the program expects (N, "
                             f"{', '.join(map(str, info.shape))})")
    arith.check_fits(f"program input {program.input_name!r}", q_input, info.fmt)
    return q_input


def canonical_constants(idx, op):
    """The op's constants as the kernels read them: integers only (spec K0), scalars as Python
    ints, arrays as int64 (a weight keeps its narrow storage), whatever dtype a program file used."""
    out = {}
    for cname, v in op.consts.items():
        try:
            a = arith.integer_input(f"op {idx} {op.kind} {op.name!r} constant {cname!r}",
                                    arith.int_const(f"op {idx} {op.kind} {op.name!r} constant {cname!r}", v)
                                    if not isinstance(v, np.ndarray) else v)
        except ArithSpecError as e:
            raise ExecutionError(str(e)) from None
        out[cname] = int(a) if a.ndim == 0 else (a if cname == "weight" else a.astype(np.int64, copy=False))
    return out


def check_output(program, idx, op, name, val):
    what = f"op {idx} {op.kind} {op.name!r}"
    if tuple(val.shape[1:]) != tuple(program.tensors[name].shape):
        raise ExecutionError(f"{what} produced {name!r} of shape {val.shape[1:]}, the program declares "
                             f"{tuple(program.tensors[name].shape)}")
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


def as_outputs(result):
    """The outputs of a run as a list, whether the model has one output or several."""
    return list(result) if isinstance(result, tuple) else [result]


def dequantize_output(program, q):
    outs = tuple(arith.dequantize(v, program.tensors[t].scale)
                 for t, v in zip(program.outputs, as_outputs(q)))
    return outs[0] if len(outs) == 1 else outs


def run(program, images_float, path="fast", observe=None):
    """One-off float images in, float output out (hold an Executable to run many batches)."""
    return Executable(program, path).infer(images_float, observe)
