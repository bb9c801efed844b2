"""LayerNorm patterns: the fused LayerNormalization op, and the form older exporters write out,
ReduceMean -> Sub -> Pow (or Mul) -> ReduceMean -> Add eps -> Sqrt -> Div (or Reciprocal, Mul),
with an optional * gamma + beta."""
import numpy as np

from ..errors import Miss, applies, need
from .common import axes_of
from .registry import matcher


@matcher("LayerNormalization", expects="LayerNormalization over the last axis")
def layernorm_fused(m, n):
    x = n.inputs[0]
    rank, axis = len(m.shapes[x]), int(n.attrs.get("axis", -1))
    need(axis % rank == rank - 1, f"it normalises over axis {axis} of a rank-{rank} tensor; only the "
                                  "last axis is supported")
    d = m.shapes[x][-1]
    gamma = m.c(n.inputs[1])
    beta = m.c(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] else np.zeros(d, gamma.dtype)
    need(gamma.size == d and beta.size == d, f"scale {gamma.shape} / bias {beta.shape} are not ({d},)")
    m.emit("LayerNorm", [m.sem(x)], 1, [n], [n.outputs[0]],
           dict(gamma=gamma.reshape(d).copy(), beta=beta.reshape(d).copy()),
           dict(eps=float(n.attrs.get("epsilon", 1e-5))), role="layernorm", scope=n.scope)


def _over_last_axis(m, n, x):
    """Whether ReduceMean node n averages x over its last axis, keeping it."""
    axes = axes_of(n, [None] + [m.const.get(t) for t in n.inputs[1:]], 1)
    r = len(m.shapes[x])
    return axes is not None and [a % r for a in axes] == [r - 1] and n.attrs.get("keepdims", 1)


def _square(m, dev):
    """The node squaring the deviation dev (Pow 2 or dev * dev) and the other reader of dev."""
    cs = m.cons(dev)
    sq = [c for c in cs if c.op == "Pow" or (c.op == "Mul" and c.inputs == [dev, dev])]
    need(len(sq) == 1 and len(cs) == 2, f"the deviation {dev!r} is not squared once and read once more")
    sq = sq[0]
    if sq.op == "Pow":
        need(sq.inputs[0] == dev and m.scalar(sq.inputs[1]) == 2.0, f"{sq!r} is not a square")
    return sq, [c for c in cs if c is not sq][0]


def _normalise(m, dev, sqrt, nrm):
    """The nodes dividing dev by sqrt: [] for Div(dev, sqrt), [Reciprocal] for dev * 1/sqrt."""
    if nrm.op == "Div":
        need(nrm.inputs == [dev, sqrt.outputs[0]] and m.sole(sqrt.outputs[0]) is nrm,
             f"{nrm!r} does not divide the deviation by the standard deviation")
        return []
    rec = m.sole(sqrt.outputs[0], ("Reciprocal",))
    need(nrm.op == "Mul" and set(nrm.inputs) == {dev, rec.outputs[0]},
         f"{nrm!r} does not multiply the deviation by 1 / standard deviation")
    return [rec]


def _affine(m, out, d):
    """The optional * gamma and + beta after the normalisation: (out, gamma, beta, nodes)."""
    gamma, beta, nodes = np.ones(d, np.float32), np.zeros(d, np.float32), []
    for op in ("Mul", "Add"):
        try:
            node = m.sole(out, (op,))
            v = m.batch_free(m.c(m.split_live(node)[1]), (d,))
        except Miss:
            continue
        gamma, beta = (v, beta) if op == "Mul" else (gamma, v)
        out = node.outputs[0]
        nodes.append(node)
    dtype = np.result_type(gamma, beta)
    return out, gamma.astype(dtype), beta.astype(dtype), nodes


@matcher("ReduceMean", claims=("Sub", "Pow", "Mul", "ReduceMean", "Add", "Sqrt", "Div", "Reciprocal"),
         expects="a LayerNorm written out: ReduceMean -> Sub -> Pow 2 -> ReduceMean -> Add eps -> Sqrt "
                 "-> Div, then optional * gamma + beta, over the last axis")
def layernorm_decomposed(m, n):
    x, readers = n.inputs[0], m.cons(n.outputs[0])
    applies(_over_last_axis(m, n, x) and n.outputs[0] not in m.f.out_names and len(readers) == 1
            and readers[0].op == "Sub" and readers[0].inputs == [x, n.outputs[0]],
            "it is not a mean over the last axis that only a Sub from its input reads")
    sub = readers[0]
    dev = sub.outputs[0]
    sq, nrm = _square(m, dev)
    var = m.sole(sq.outputs[0], ("ReduceMean",))
    need(_over_last_axis(m, var, sq.outputs[0]), f"{var!r} does not average over the last axis")
    add = m.sole(var.outputs[0], ("Add",))
    eps = m.scalar(m.split_live(add)[1])
    sqrt = m.sole(add.outputs[0], ("Sqrt",))
    claimed = [n, sub, sq, var, add, sqrt, nrm] + _normalise(m, dev, sqrt, nrm)
    out, gamma, beta, affine = _affine(m, nrm.outputs[0], m.shapes[x][-1])
    m.emit("LayerNorm", [m.sem(x)], 1, claimed + affine, [out], dict(gamma=gamma, beta=beta),
           dict(eps=eps), role="layernorm", scope=n.scope)
