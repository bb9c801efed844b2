"""The MLP's activation: exact GELU written with Erf, x * 0.5 * (1 + erf(x / sqrt 2)), in any of the
orders exporters and authors write it."""
import math

from ..errors import Miss, applies, need
from .registry import matcher


def _halved(m, node):
    """The tensor that node multiplies by 0.5 (or divides by 2), or None."""
    try:
        y, h = m.scalar_factor(node)
    except Miss:
        return None
    return y if abs(h - 0.5) < 1e-7 else None


def _gelu_end(m, x, add1, m1):
    """The nodes after (1 + erf) that multiply by x and by 0.5, given the Mul m1 reading 1 + erf:
    (extra nodes claimed, the node producing the GELU)."""
    other = m1.inputs[1] if m1.inputs[0] == add1.outputs[0] else m1.inputs[0]
    if other == x:                             # x * (1 + erf) then * 0.5
        m2 = m.sole(m1.outputs[0], ("Mul", "Div"))
        need(_halved(m, m2) == m1.outputs[0], f"{m2!r} does not halve x * (1 + erf)")
        return [m2], m2
    if other not in m.live:                    # (1 + erf) * 0.5 then * x
        need(_halved(m, m1) == add1.outputs[0], f"{m1!r} does not halve (1 + erf)")
        m2 = m.sole(m1.outputs[0], ("Mul",))
        need(sorted(m2.inputs) == sorted([x, m1.outputs[0]]), f"{m2!r} does not multiply by x")
        return [m2], m2
    h = m.producer.get(other)                  # (x * 0.5) * (1 + erf)
    need(h is not None and _halved(m, h) == x and m.sole(other) is m1,
         f"{m1!r} does not multiply (1 + erf) by x * 0.5")
    return [h], m1


@matcher("Erf", claims=("Mul", "Div", "Add"),
         expects="GELU: x * 0.5 * (1 + erf(x / sqrt 2)), in any order of the products")
def gelu(m, n):
    applies(n.inputs[0] in m.producer, "its input is the image")
    pre = m.producer[n.inputs[0]]
    x, f = m.scalar_factor(pre)
    need(abs(f - 1 / math.sqrt(2)) < 1e-5 and m.sole(pre.outputs[0]) is n,
         f"its input is x * {f:.6g}, not x / sqrt 2 read by the Erf alone")
    add1 = m.sole(n.outputs[0], ("Add",))
    need(m.scalar(m.split_live(add1)[1]) == 1.0, f"{add1!r} does not add 1")
    m1 = m.sole(add1.outputs[0], ("Mul",))
    extra, last = _gelu_end(m, x, add1, m1)
    m.emit("GELU", [m.sem(x)], 1, [pre, n, add1, m1] + extra, [last.outputs[0]], role="act", scope=n.scope)
