"""Elementwise activations: Relu; QuickGELU x * sigmoid(alpha x) (CLIP's alpha = 1.702, SiLU's
alpha = 1) as Mul(x, alpha) -> Sigmoid -> Mul(x, .) or Sigmoid(x) -> Mul(x, .) in either operand
order; any other Sigmoid."""
import math

from ..errors import Miss, applies, need
from .registry import matcher


@matcher("Relu", expects="Relu")
def relu(m, n):
    m.emit("Relu", [m.sem(n.inputs[0])], 1, [n], [n.outputs[0]], role="relu", scope=n.scope)


def _gain_before(m, t):
    """(x, alpha, [Mul node]) if t is x * alpha (a scalar Mul read only by the Sigmoid), else (t, 1, [])."""
    p = m.producer.get(t)
    if p is None or p.op != "Mul":
        return t, 1.0, []
    try:
        x, alpha = m.scalar_factor(p)
        m.sole(t)
    except Miss:
        return t, 1.0, []
    return x, alpha, [p]


@matcher("Sigmoid", claims=("Mul",),
         expects="QuickGELU x * sigmoid(alpha * x): Mul(x, alpha) -> Sigmoid -> Mul with x")
def quick_gelu(m, n):
    x, alpha, pre = _gain_before(m, n.inputs[0])
    try:
        gate = m.sole(n.outputs[0], ("Mul",))
    except Miss:
        gate = None
    applies(gate is not None and sorted(gate.inputs) == sorted([x, n.outputs[0]]),
            "its output is not multiplied by its (unscaled) input")
    need(math.isfinite(alpha) and alpha > 0, f"the gain {alpha} is not positive and finite")
    m.emit("QuickGELU", [m.sem(x)], 1, pre + [n, gate], [gate.outputs[0]], attrs=dict(alpha=alpha),
           role="act", scope=n.scope)


@matcher("Sigmoid", expects="Sigmoid")
def sigmoid(m, n):
    m.emit("Sigmoid", [m.sem(n.inputs[0])], 1, [n], [n.outputs[0]], role="sigmoid", scope=n.scope)
