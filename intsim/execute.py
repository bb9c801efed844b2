"""Execution of an integer program: one kernel call per op, integers in and out.

`run_program` takes the quantized input (integers) and returns the integer output; `observe`
receives (op, inputs, outputs) after each op (golden dumps, comparators and per-layer SQNR are
consumers of this hook, not separate paths). `path="reference"` runs every kernel's plain NumPy
reference instead of its fast path; both must give identical integers.
"""
import numpy as np

from . import arith
from .arith import IntFormat, ArithSpecError
from .kernels import get_kernel
from .kernels.add import residual_add, residual_add_ref
from .kernels import gemm
from .kernels.matmul import matmul, matmul_ref
from .kernels.requantize import requantize, requantize_ref


class ExecutionError(RuntimeError):
    """An op failed; the message names the op (index, kind, name) and the cause."""


def _prepared_weight(ctx, op, w_fmt):
    """The weight (In, Out) checked and laid out once per engine (gemm.prepare_weight)."""
    key = ("weight", op.name, gemm.scoped_engine())
    if key not in ctx:
        ctx[key] = gemm.prepare_weight(op.consts["weight"].T, w_fmt)
    return ctx[key]


def _matmul(path, a, b, a_fmt, b_fmt, bias=None, b_prepared=None):
    if path == "reference":
        return matmul_ref(a, b, bias)
    return matmul(a, b, a_fmt, b_fmt, bias=bias, b_prepared=b_prepared)


def _unfold_patches(x, p):
    """(N, C, H, W) -> (N, P, C*p*p), patches in row-major order, features in (C, ph, pw) order:
    the order of the Conv weight flattened, so PatchEmbed is a Linear on unfolded patches."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(n, (h // p) * (w // p), c * p * p)


def op_linear(op, ins, fmts, ctx, path):
    x, = ins
    w = op.consts["weight"]                                 # (Out, In)
    if op.kind == "patch_embed":
        x = _unfold_patches(x, op.attrs["patch"])
    w_fmt = IntFormat(**op.attrs["weight_fmt"])
    prepared = _prepared_weight(ctx, op, w_fmt) if path == "fast" else None
    return [_matmul(path, x, w.T, fmts[0], w_fmt, op.consts.get("bias"), prepared)]


def op_requant(op, ins, fmts, ctx, path, out_fmt):
    x, = ins
    m, k = op.consts["m"], op.consts["k"]
    axis = -1 if np.ndim(m) else None
    fn = requantize_ref if path == "reference" else requantize
    return [fn(x, m, k, out_fmt, axis)]


def op_cls_pos(op, ins, fmts, ctx, path, out_fmt):
    x, = ins
    n = x.shape[0]
    cls = np.broadcast_to(op.consts["cls"].astype(np.int64), (n, 1, x.shape[2]))
    y = np.concatenate([cls, x.astype(np.int64)], axis=1) + op.consts["pos"].astype(np.int64)
    return [arith.saturate(y, out_fmt)]


def op_kernel(op, ins, fmts, ctx, path):
    kernel = get_kernel(op.attrs["family"], op.attrs["kernel"])
    fn = kernel.reference if path == "reference" else kernel.fast
    return [fn(ins[0], op.consts)]


def op_qkv_split(op, ins, fmts, ctx, path):
    x, = ins
    n, t, d3 = x.shape
    h = op.attrs["heads"]
    qkv = x.reshape(n, t, 3, h, d3 // (3 * h)).transpose(2, 0, 3, 1, 4)
    return [np.ascontiguousarray(qkv[i]) for i in range(3)]


def op_attn_scores(op, ins, fmts, ctx, path):
    q, k = ins
    return [_matmul(path, q, np.swapaxes(k, -1, -2), fmts[0], fmts[1])]


def op_attn_context(op, ins, fmts, ctx, path):
    p, v = ins
    y = _matmul(path, p, v, fmts[0], fmts[1])               # (N, H, T, Dh)
    n, h, t, dh = y.shape
    return [np.ascontiguousarray(y.transpose(0, 2, 1, 3)).reshape(n, t, h * dh)]


def op_add(op, ins, fmts, ctx, path, out_fmt):
    a, b = ins
    c = op.consts
    fn = residual_add_ref if path == "reference" else residual_add
    return [fn(a, b, c["ma"], c["ka"], c["mb"], c["kb"], out_fmt)]


def op_cls_select(op, ins, fmts, ctx, path):
    return [np.ascontiguousarray(ins[0][:, 0])]


# kind -> (function, spec section); functions taking out_fmt get the declared output format
OPS = {
    "patch_embed": (op_linear, "K1"),
    "linear": (op_linear, "K1"),
    "requant": (op_requant, "A6"),
    "cls_pos": (op_cls_pos, "K6"),
    "layernorm": (op_kernel, "K4"),
    "gelu": (op_kernel, "K3"),
    "softmax": (op_kernel, "K2"),
    "qkv_split": (op_qkv_split, "K6"),
    "attn_scores": (op_attn_scores, "K1"),
    "attn_context": (op_attn_context, "K1"),
    "add": (op_add, "K5"),
    "cls_select": (op_cls_select, "K6"),
}
_NEEDS_OUT_FMT = {"requant", "cls_pos", "add"}


def run_program(program, q_input, observe=None, path="fast", check=True):
    """Run the integer program on a quantized input batch. Returns the integer output.

    check=True verifies every op output is an integer array within its declared format."""
    if path not in ("fast", "reference"):
        raise ValueError(f"path must be 'fast' or 'reference', got {path!r}")
    info = program.input
    q_input = np.asarray(q_input)
    if q_input.ndim != len(info.shape) + 1 or tuple(q_input.shape[1:]) != tuple(info.shape):
        raise ArithSpecError(f"input of shape {q_input.shape}: the program expects (N, "
                             f"{', '.join(map(str, info.shape))})")
    arith.check_fits(f"program input {program.input_name!r}", q_input, info.fmt)
    env = {program.input_name: q_input}
    ctx = program.__dict__.setdefault("_exec_cache", {})
    if "consts_checked" not in ctx:
        _check_consts(program)
        ctx["consts_checked"] = True
    for idx, op in enumerate(program.ops):
        fn, _ = OPS[op.kind]
        ins = [env[t] for t in op.inputs]
        fmts = [program.tensors[t].fmt for t in op.inputs]
        try:
            if op.kind in _NEEDS_OUT_FMT:
                outs = fn(op, ins, fmts, ctx, path, program.tensors[op.outputs[0]].fmt)
            else:
                outs = fn(op, ins, fmts, ctx, path)
        except (ArithSpecError, ValueError) as e:
            raise ExecutionError(f"op {idx} {op.kind} {op.name!r}: {e}") from e
        for name, val in zip(op.outputs, outs):
            if check:
                if val.dtype.kind not in "iu":
                    raise ExecutionError(f"op {idx} {op.kind} {op.name!r} produced {val.dtype} for "
                                         f"{name!r}: integer programs carry integers only")
                try:
                    arith.check_fits(f"op {idx} {op.kind} {op.name!r} output {name!r}", val,
                                     program.tensors[name].fmt)
                except arith.IntOverflowError as e:
                    raise ExecutionError(str(e)) from e
            env[name] = val
        if observe is not None:
            observe(op, ins, outs)
        for t in op.inputs:   # free what no later op reads (bounded memory on deep models)
            if t != program.input_name and _last_use(program, t) == idx:
                env.pop(t, None)
    return env[program.output_name]


def _check_consts(program):
    for idx, op in enumerate(program.ops):
        if op.kind not in OPS:
            raise ExecutionError(f"op {idx} {op.name!r}: unknown kind {op.kind!r}; kinds: {', '.join(OPS)}")
        for cname, v in op.consts.items():
            try:
                arith.int_const(f"op {idx} {op.kind} {op.name!r} constant {cname!r}", v)
            except ArithSpecError as e:
                raise ExecutionError(str(e)) from None


def _last_use(program, tensor):
    cache = program.__dict__.setdefault("_last_use", {})
    if not cache:
        for i, op in enumerate(program.ops):
            for t in op.inputs:
                cache[t] = i
        cache[program.output_name] = len(program.ops)
    return cache.get(tensor, -1)


def quantize_input(program, images_float):
    return arith.quantize(images_float, program.input.scale, program.input.fmt)


def dequantize_output(program, q):
    return arith.dequantize(q, program.output.scale)


def run(program, images_float, path="fast", observe=None):
    """Float images in, float logits out; integers only in between."""
    return dequantize_output(program, run_program(program, quantize_input(program, images_float),
                                                   observe=observe, path=path))
