"""Linear layers: MatMul by a constant (In, Out) weight or Gemm, each with an optional bias Add."""
import numpy as np

from ..errors import Miss, applies, need
from .registry import matcher


def _bias_after(m, t, n_out):
    """An Add of a constant (Out,) bias reading t: (node, bias) or (None, None)."""
    try:
        add = m.sole(t, ("Add",))
        return add, m.batch_free(m.c(m.split_live(add)[1]), (n_out,))
    except Miss:
        return None, None


def _emit_linear(m, n, x, params, n_out):
    """Emit the Linear of anchor n with the bias Add after it, if there is one."""
    out, claimed = n.outputs[0], [n]
    add, bias = _bias_after(m, out, n_out)
    if add is not None:
        params["bias"] = params["bias"] + bias if "bias" in params else bias
        out = add.outputs[0]
        claimed.append(add)
    m.emit("Linear", [m.sem(x)], 1, claimed, [out], params, role="linear", scope=n.scope)


@matcher("MatMul", claims=("Add",),
         expects="a Linear layer: MatMul by a constant 2-D weight, optional bias Add")
def linear(m, n):
    x, w = n.inputs
    applies(x in m.live and w not in m.live, "its second input is not a constant weight")
    w = m.c(w)
    need(w.ndim == 2 and w.dtype.kind == "f", f"the weight is not a 2-D float matrix ({w.shape}, {w.dtype})")
    _emit_linear(m, n, x, dict(weight=np.ascontiguousarray(w.T)), w.shape[1])


@matcher("Gemm", claims=("Add",), expects="a Linear layer: Gemm with a constant weight, optional bias")
def gemm(m, n):
    x = n.inputs[0]
    applies(x in m.live and n.inputs[1] not in m.live, "its second input is not a constant weight")
    need(not n.attrs.get("transA", 0), "it transposes its input (transA)")
    w = m.c(n.inputs[1])
    w = w if n.attrs.get("transB", 0) else w.T
    w = (w * w.dtype.type(n.attrs.get("alpha", 1.0))).astype(w.dtype)
    params = dict(weight=np.ascontiguousarray(w))
    if len(n.inputs) > 2 and n.inputs[2]:
        c = m.c(n.inputs[2])
        b = np.full(w.shape[0], c.reshape(-1)[0]) if c.size == 1 else m.batch_free(c, (w.shape[0],))
        params["bias"] = (b * b.dtype.type(n.attrs.get("beta", 1.0))).astype(w.dtype)
    _emit_linear(m, n, x, params, w.shape[0])
