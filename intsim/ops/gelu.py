"""GELU, exact erf form x/2 * (1 + erf(x / sqrt 2)) (spec K3).

Lowering: the input is requantized to `gelu_bits` (default 16; or a `QuantConfig.wide` width) at
its calibrated scale (docs/quantization.md Q9); every candidate is planned with the layer's
calibration sample (Poly-GELU fits its (a, b) to it, K3.1.1; the others ignore it)."""
from ..arith import IntFormat
from ..floatfn import gelu
from .base import KernelOp, NonProductInput


class Gelu(NonProductInput, KernelOp):
    semantic = "GELU"
    kind = family = "gelu"
    spec = "K3"

    def evaluate(self, node, inputs, dtype):
        return [gelu(inputs[0])]

    def lower(self, node, b):
        self.lower_at(b, node, IntFormat(self.input_bits(b, node)), sample=b.observer(node.inputs[0]).sample)
