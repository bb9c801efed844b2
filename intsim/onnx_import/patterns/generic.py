"""The generic fallbacks: an image-path node that no ViT pattern explains maps to one generic
semantic op of its ONNX op (intsim/ops: Reshape, Transpose, Slice, Gather, Pad, Concat, MatMul,
Mul, Scale, ChannelMul, ConstAdd, ReduceMean). Registered with `fallback`, they are tried after every
pattern of the node's op (patterns/__init__.py says when).

Per-sample shapes: a semantic tensor is one sample; an ONNX tensor (B, ...) is (...) per sample, and
one whose first axis holds B * k rows, batch outermost, is (k, ...) per sample (Swin's windows,
(B * windows, tokens, C)). Data movement is checked on labels: the ONNX node runs on a tensor of
distinct labels, and it must move each sample's values within that sample, the same way for every
sample, exactly as the semantic op does on one sample's labels; anything else (a node moving
values between samples or the batch axis) is reported, never guessed."""
import numpy as np

from ...ops import SEMANTIC
from ..errors import Broken, Miss, applies, need
from .common import axes_of
from .registry import fallback


def _data(m, n):
    """The image-dependent data input of a one-tensor node (all its other inputs constant)."""
    x = n.inputs[0]
    applies(x in m.live and all(t not in m.live for t in n.inputs[1:] if t),
            "it does not move one image-dependent tensor (its other inputs must be constants)")
    need(m.sem_shape(x) is not None, f"its input {x!r} {m.shapes[x]} does not hold whole samples "
                                     f"along its first axis (batch {m.batch})")
    return x


def _per_sample_map(m, n, x, out, first=0):
    """Labels of one sample of `out` after node n ran on labels (first, first + 1, ...) of x,
    shifted to sample 0; Broken when n mixes samples or treats them differently."""
    label, env = m.run_layout([n], x, first)
    b, per = m.batch, label.size // m.batch
    y = env[out]
    need(y.size % b == 0 and m.sem_shape(out) is not None,
         f"its output {out!r} {m.shapes[out]} does not hold whole samples along its first axis")
    rows = y.reshape(b, -1)
    offset = np.arange(b)[:, None] * per
    want = rows[:1] + offset if not first else np.where(rows[:1] > 0, rows[:1] + offset, 0)
    need(np.array_equal(rows, want) and ((rows[0] >= first) | (rows[0] == 0)).all()
         and (rows[0] < per + first).all(), "it moves values between the samples of a batch")
    return rows[0]


def _checked(m, n, op, x, out, attrs, first=0):
    """Raise Broken unless semantic op `op` with `attrs` does to one sample of x what n does."""
    got = _per_sample_map(m, n, x, out, first)
    sx = m.sem_shape(x)
    labels = np.arange(first, first + int(np.prod(sx)), dtype=np.int64).reshape((1,) + sx)
    try:
        mine = SEMANTIC[op].move(labels, attrs)
    except (ValueError, TypeError, IndexError) as e:
        raise Broken(f"it is not {op} {attrs} on each sample {sx} ({type(e).__name__}: {e})") from None
    need(mine.shape[1:] == m.sem_shape(out) and np.array_equal(mine.ravel(), got),
         f"it is not {op} {attrs} on each sample {sx}")


def _emit_moved(m, n, op, x, out, attrs, claimed=None, first=0):
    _checked(m, n, op, x, out, attrs, first)
    m.emit(op, [m.sem(x)], 1, [n] if claimed is None else claimed, [out], attrs=attrs,
           role=op.lower(), scope=n.scope)


def per_sample_const(m, c, like):
    """A constant combined with tensor `like` (ONNX broadcasting), as one sample's constant:
    its first axis must be 1 or the same for every sample."""
    s, b = m.shapes[like], m.batch
    c = np.asarray(c)
    need(c.ndim <= len(s), f"a constant of rank {c.ndim} with a rank-{len(s)} tensor")
    c = c.reshape((1,) * (len(s) - c.ndim) + c.shape)
    if c.shape[0] == s[0] and s[0] > 1:
        g = c.reshape((b, s[0] // b) + c.shape[1:])
        need((g == g[:1]).all(), f"a constant of shape {c.shape} that differs between samples")
        c = g[0]
    else:
        need(c.shape[0] == 1, f"a constant of shape {c.shape} that does not broadcast over the batch")
    return np.ascontiguousarray(c[0] if s[0] == b else c)


# --- data movement -------------------------------------------------------------------------------
@fallback("Reshape", "Flatten", "Squeeze", "Unsqueeze",
          expects="a reshape of each sample (the first axis holding whole samples before and after)")
def reshape(m, n):
    x, out = _data(m, n), n.outputs[0]
    so = m.sem_shape(out)
    need(so is not None, f"its output {out!r} {m.shapes[out]} does not hold whole samples along "
                         f"its first axis")
    # row-major order: each sample's values stay one run in order, whatever the shapes
    if so == m.sem_shape(x):
        m.alias(out, x, [n])
        return
    m.emit("Reshape", [m.sem(x)], 1, [n], [out], attrs=dict(shape=list(so)), role="reshape", scope=n.scope)


@fallback("Transpose", expects="a transpose of each sample's axes (the batch axis stays first)")
def transpose(m, n):
    x, out = _data(m, n), n.outputs[0]
    rank = len(m.shapes[x])
    perm = [int(p) % rank for p in n.attrs.get("perm", range(rank - 1, -1, -1))]
    need(perm[0] == 0, f"perm {perm} moves the batch axis")
    sem_perm = [p - 1 for p in perm[1:]] if m.shapes[x][0] == m.batch else perm
    if sem_perm == sorted(sem_perm):
        m.alias(out, x, [n])
        return
    _emit_moved(m, n, "Transpose", x, out, dict(perm=sem_perm))


def _slice_args(m, n):
    """(starts, ends, axes, steps) of a Slice node: attributes (opset < 10) or constant inputs."""
    if "starts" in n.attrs:
        a = n.attrs
        return a["starts"], a["ends"], a.get("axes", range(len(a["starts"]))), [1] * len(a["starts"])
    v = [m.c(t) if t else None for t in n.inputs[1:]] + [None] * 4
    starts, ends = v[0].reshape(-1), v[1].reshape(-1)
    axes = v[2].reshape(-1) if v[2] is not None else range(len(starts))
    steps = v[3].reshape(-1) if v[3] is not None else [1] * len(starts)
    return starts, ends, axes, steps


def _ranges(m, x, starts, ends, axes, steps):
    """Per-sample (starts, ends, steps) of an ONNX slice of x, bounds clamped as ONNX does."""
    sx = m.sem_shape(x)
    st, en, sp = [0] * len(sx), list(sx), [1] * len(sx)
    for s, e, a, t in zip(starts, ends, axes, steps):
        d = m.shapes[x][int(a)]
        r = range(d)[slice(int(s), int(e), int(t))]
        ax = m.sem_axis(x, a)
        if ax is None:
            need(r == range(d), "it slices the batch axis")
            continue
        need(r.step > 0 and len(r) > 0, f"slice {int(s)}:{int(e)}:{int(t)} of an axis of {d} is empty "
                                        f"or runs backwards")
        st[ax], en[ax], sp[ax] = r.start, r.start + (len(r) - 1) * r.step + 1, r.step
    return st, en, sp


@fallback("Slice", expects="a slice of each sample (steps >= 1, the batch axis whole)")
def slice_(m, n):
    x, out = _data(m, n), n.outputs[0]
    st, en, sp = _ranges(m, x, *_slice_args(m, n))
    if (st, en, sp) == ([0] * len(st), list(m.sem_shape(x)), [1] * len(st)):
        m.alias(out, x, [n])
        return
    _emit_moved(m, n, "Slice", x, out, dict(starts=st, ends=en, steps=sp))


@fallback("Split", expects="a split of each sample along one axis (not the batch axis)")
def split(m, n):
    x = _data(m, n)
    axis = int(n.attrs.get("axis", 0)) % len(m.shapes[x])
    d = m.shapes[x][axis]
    if len(n.inputs) > 1 and n.inputs[1]:
        sizes = [int(v) for v in m.c(n.inputs[1]).reshape(-1)]
    elif "split" in n.attrs:
        sizes = [int(v) for v in n.attrs["split"]]
    else:
        sizes = [len(r) for r in np.array_split(range(d), len(n.outputs))]
    need(m.sem_axis(x, axis) is not None, "it splits along the batch axis")
    bounds = np.cumsum([0] + sizes)
    parts = []
    for out, lo, hi in zip(n.outputs, bounds[:-1], bounds[1:]):
        st, en, sp = _ranges(m, x, [lo], [hi], [axis], [1])
        attrs = dict(starts=st, ends=en, steps=sp)
        _checked(m, n, "Slice", x, out, attrs)
        parts.append((out, attrs))
    for i, (out, attrs) in enumerate(parts):
        m.emit("Slice", [m.sem(x)], 1, [n] if i == 0 else [], [out], attrs=attrs, role="slice", scope=n.scope)


@fallback("Gather", expects="a gather of constant indices along one axis of each sample")
def gather(m, n):
    x, out = _data(m, n), n.outputs[0]
    axis = int(n.attrs.get("axis", 0)) % len(m.shapes[x])
    ax = m.sem_axis(x, axis)
    need(ax is not None, "it gathers along the batch axis")
    idx = np.asarray(m.c(n.inputs[1]))
    need(idx.dtype.kind in "iu", f"its indices are {idx.dtype}, not integers")
    need(idx.size > 0, "it gathers nothing")
    idx = np.where(idx < 0, idx + m.shapes[x][axis], idx).astype(np.int64)
    _emit_moved(m, n, "Gather", x, out, dict(axis=ax, indices=idx.tolist()))


@fallback("Pad", expects="zero padding of each sample (mode constant, value 0, the batch axis unpadded)")
def pad(m, n):
    x, out = _data(m, n), n.outputs[0]
    need(n.attrs.get("mode", "constant") == "constant", f"mode {n.attrs.get('mode')!r} is not constant")
    inputs = list(n.inputs) + [""] * 3
    pads = [int(v) for v in (m.c(inputs[1]).reshape(-1) if inputs[1] else n.attrs["pads"])]
    value = float(m.c(inputs[2]).reshape(-1)[0]) if inputs[2] else float(n.attrs.get("value", 0.0))
    need(value == 0.0, f"it pads with {value}, not 0")
    rank = len(m.shapes[x])
    axes = [int(a) % rank for a in m.c(inputs[3]).reshape(-1)] if inputs[3] else list(range(rank))
    sem = [[0, 0] for _ in m.sem_shape(x)]
    for a, before, after in zip(axes, pads[:len(axes)], pads[len(axes):]):
        ax = m.sem_axis(x, a)
        need(before >= 0 and after >= 0 and (ax is not None or before == after == 0),
             f"pads {pads} crop or pad the batch axis")
        if ax is not None:
            sem[ax] = [before, after]
    if not any(v for p in sem for v in p):
        m.alias(out, x, [n])
        return
    _emit_moved(m, n, "Pad", x, out, dict(pads=sem), first=1)


@fallback("Concat", expects="a concatenation of samples and constants along one axis (not the batch axis)")
def concat(m, n):
    live = [t for t in n.inputs if t in m.live]
    applies(bool(live), "all its inputs are constants")
    ref = live[0]
    ax = m.sem_axis(ref, n.attrs["axis"])
    need(ax is not None, "it concatenates along the batch axis")
    pieces, params, inputs = [], {}, []
    for t in n.inputs:
        if t in m.live:
            need(m.sem_shape(t) is not None, f"its input {t!r} {m.shapes[t]} does not hold whole samples")
            pieces.append(len(inputs))
            inputs.append(t)
        else:
            name = f"c{len(params)}"
            params[name] = per_sample_const(m, m.c(t), ref).astype(np.float32)
            pieces.append(name)
    m.emit("Concat", [m.sem(t) for t in inputs], 1, [n], [n.outputs[0]], params=params,
           attrs=dict(axis=ax, pieces=pieces), role="concat", scope=n.scope)


# --- arithmetic ----------------------------------------------------------------------------------
@fallback("MatMul", expects="a product of two image-dependent tensors (..., M, K) @ (..., K, N)")
def matmul(m, n):
    a, b = n.inputs
    applies(a in m.live and b in m.live, "one of its inputs is a constant")
    sa, sb = m.sem_shape(a), m.sem_shape(b)
    need(sa is not None and sb is not None and len(sa) == len(sb) >= 2,
         f"its inputs {m.shapes[a]} and {m.shapes[b]} are not samples of equal rank >= 2")
    m.emit("MatMul", [m.sem(a), m.sem(b)], 1, [n], [n.outputs[0]], role="matmul", scope=n.scope)


@fallback("Mul", "Div", expects="a Mul or Div by a scalar constant")
def scale(m, n):
    applies((n.inputs[0] in m.live) != (n.inputs[1] in m.live), "it does not combine the image path "
                                                                 "with a constant")
    try:
        x, f = m.scalar_factor(n)
    except Miss as e:
        applies(False, str(e))
    need(np.isfinite(f) and f != 0, f"its factor {f} is zero or not finite")
    if f == 1.0:
        m.alias(n.outputs[0], x, [n])
        return
    m.emit("Scale", [m.sem(x)], 1, [n], [n.outputs[0]], attrs=dict(factor=float(f)), role="scale",
           scope=n.scope)


@fallback("Mul", expects="a Mul by a constant per channel of the last axis (layer-scale)")
def channel_mul(m, n):
    applies((n.inputs[0] in m.live) != (n.inputs[1] in m.live), "it does not combine the image path "
                                                                 "with a constant")
    x, c = m.split_live(n)
    c = np.asarray(m.c(c))
    d = m.shapes[x][-1]
    applies(c.ndim >= 1 and c.shape[-1] == d and c.size == d,
            f"its constant {c.shape} is not one value per channel of the last axis ({d})")
    need(c.dtype.kind == "f" and np.isfinite(c).all(), "its constant is not finite floats")
    m.emit("ChannelMul", [m.sem(x)], 1, [n], [n.outputs[0]], params=dict(gamma=c.reshape(d).copy()),
           role="channel_mul", scope=n.scope)


@fallback("Mul", expects="a product of two image-dependent tensors (per-sample shapes broadcast)")
def mul(m, n):
    a, b = n.inputs
    applies(a in m.live and b in m.live, "one of its inputs is a constant")
    sa, sb = m.sem_shape(a), m.sem_shape(b)
    need(sa is not None and sb is not None and len(sa) == len(sb),
         f"its inputs {m.shapes[a]} and {m.shapes[b]} are not samples of equal rank")
    m.emit("Mul", [m.sem(a), m.sem(b)], 1, [n], [n.outputs[0]], role="mul", scope=n.scope)


@fallback("Add", "Sub", expects="an Add (or Sub) of a constant broadcast over each sample")
def const_add(m, n):
    applies((n.inputs[0] in m.live) != (n.inputs[1] in m.live), "it does not combine the image path "
                                                                 "with a constant")
    x, c = m.split_live(n)
    applies(n.op == "Add" or n.inputs[0] == x, "it subtracts the image-dependent tensor from a constant")
    out = n.outputs[0]
    need(m.shapes[out] == m.shapes[x], f"the constant {m.shapes[c]} broadcasts {m.shapes[x]} to "
                                       f"{m.shapes[out]}")
    v = per_sample_const(m, m.c(c), x)
    need(v.dtype.kind == "f", f"its constant is {v.dtype}, not float")
    v = -v if n.op == "Sub" else v
    if not v.any():
        m.alias(out, x, [n])
        return
    m.emit("ConstAdd", [m.sem(x)], 1, [n], [out], params=dict(value=v), role="const_add", scope=n.scope)


def _emit_mean(m, n, x, onnx_axes, keepdims):
    axes = [m.sem_axis(x, a) for a in onnx_axes]
    need(None not in axes, f"it averages over the batch axis (axes {list(onnx_axes)})")
    m.emit("ReduceMean", [m.sem(x)], 1, [n], [n.outputs[0]],
           attrs=dict(axes=sorted(set(axes)), keepdims=int(bool(keepdims))), role="reduce_mean", scope=n.scope)


@fallback("ReduceMean", expects="a mean over axes of each sample (not the batch axis)")
def reduce_mean(m, n):
    x = _data(m, n)
    axes = axes_of(n, [None] + [m.const.get(t) for t in n.inputs[1:]], 1)
    rank = len(m.shapes[x])
    _emit_mean(m, n, x, range(rank) if axes is None else [a % rank for a in axes], n.attrs.get("keepdims", 1))


@fallback("GlobalAveragePool", expects="a mean over every axis after the channels")
def global_average_pool(m, n):
    x = _data(m, n)
    _emit_mean(m, n, x, range(2, len(m.shapes[x])), 1)


@fallback("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Gather",
          expects="data movement within each sample (checked on labels)")
def index_map(m, n):
    """Any other data movement of one tensor that keeps each sample's values within the sample
    (e.g. torch's as_strided exported as Gather over a flattened batch): the sample flattened, then
    a Gather of the constant per-sample index map that the labels show."""
    x, out = _data(m, n), n.outputs[0]
    applies(len(n.outputs) == 1, "it has several outputs")
    idx = _per_sample_map(m, n, x, out)
    sx, so = m.sem_shape(x), m.sem_shape(out)
    src = m.sem(x)
    if len(sx) != 1:
        src = m.emit("Reshape", [src], 1, [], [None], attrs=dict(shape=[int(np.prod(sx))]),
                     role="reshape", scope=n.scope).outputs[0]
    m.emit("Gather", [src], 1, [n], [out], attrs=dict(axis=0, indices=idx.reshape(so).tolist()),
           role="gather", scope=n.scope)
