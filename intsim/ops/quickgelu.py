"""QuickGELU: y = x * sigmoid(alpha * x), elementwise (spec K8.2); CLIP's activation (alpha =
1.702), SiLU / Swish for alpha = 1.

Lowering: the input is requantized to `gelu_bits` (a GELU: docs/quantization.md Q9; a
`QuantConfig.wide` width first) at its calibrated scale; alpha is folded into the sigmoid's
exponential constant; the output is the exact product x * sigmoid at scale S * 2^-16."""
import numpy as np

from ..floatfn import quick_gelu
from .base import KernelOp, NonProductInput
from .sigmoid import SIGMOID_BITS, activation_input


class QuickGelu(NonProductInput, KernelOp):
    semantic = "QuickGELU"
    kind = family = "quickgelu"
    spec = "K8.2"
    attrs = ("alpha",)

    def infer(self, node, in_shapes):
        alpha = node.attrs["alpha"]
        if not (np.isfinite(alpha) and alpha > 0):
            self.bad(node, in_shapes, f"alpha must be positive and finite, got {alpha}")
        return [in_shapes[0]]

    def evaluate(self, node, inputs, dtype):
        return [quick_gelu(inputs[0], node.attrs["alpha"])]

    def lower(self, node, b):
        kernel = b.kernel_for(node, self.family)
        x, fmt = activation_input(b, node, self.input_bits(b, node))
        plan = kernel.plan(float(b.scale_of(x)), fmt, out_bits=SIGMOID_BITS,
                           gain=float(node.attrs["alpha"]))
        self.emit(b, node, kernel, plan, x, b.shapes[node.inputs[0]])
