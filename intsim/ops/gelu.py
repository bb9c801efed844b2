"""GELU, exact erf form x/2 * (1 + erf(x / sqrt 2)) (spec K3).

Lowering: the input is requantized to `abits` at its calibrated scale; every candidate is planned
with the layer's calibration sample (Poly-GELU fits its (a, b) to it, K3.1.1; the others ignore it)."""
from ..arith import IntFormat
from ..floatfn import gelu
from .base import KernelOp


class Gelu(KernelOp):
    semantic = "GELU"
    kind = family = "gelu"
    spec = "K3"

    def infer(self, node, in_shapes):
        return [in_shapes[0]]

    def evaluate(self, node, inputs, dtype):
        return [gelu(inputs[0])]

    def lower(self, node, b):
        src = node.inputs[0]
        kernel = b.kernel_for(node, self.family)
        fmt = IntFormat(b.cfg.abits)
        x = b.realise(src, fmt, b.act_scale(src, fmt), f"{node.name}.in")
        plan = kernel.plan(float(b.scale_of(x)), fmt, sample=b.observer(src).sample)
        self.emit(b, node, kernel, plan, x, b.shapes[src])
