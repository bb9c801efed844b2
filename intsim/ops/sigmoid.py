"""Sigmoid: y = 1 / (1 + exp(-x)), elementwise (spec K8.1).

Lowering: the input is requantized to `gelu_bits` (no product reads it, like GELU's:
docs/quantization.md Q9, Q12; a `QuantConfig.wide` width first) at its calibrated scale (signed, or
unsigned when it is never negative); the output is unsigned SIGMOID_BITS-bit at scale
2^-SIGMOID_BITS."""
from ..floatfn import sigmoid
from .base import KernelOp, NonProductInput

SIGMOID_BITS = 16       # sigmoid outputs (K8.1), also inside QuickGELU (K8.2)


def activation_input(b, node, bits=None):
    """The node's input realised at `bits` (default `abits`; unsigned when never negative) at its
    calibrated scale."""
    src = node.inputs[0]
    fmt = b.act_format(src, b.cfg.abits if bits is None else bits)
    return b.realise(src, fmt, b.act_scale(src, fmt), f"{node.name}.in"), fmt


class Sigmoid(NonProductInput, KernelOp):
    semantic = "Sigmoid"
    kind = family = "sigmoid"
    spec = "K8.1"

    def infer(self, node, in_shapes):
        return [in_shapes[0]]

    def evaluate(self, node, inputs, dtype):
        return [sigmoid(inputs[0])]

    def lower(self, node, b):
        kernel = b.kernel_for(node, self.family)
        x, fmt = activation_input(b, node, self.input_bits(b, node))
        plan = kernel.plan(float(b.scale_of(x)), fmt, out_bits=SIGMOID_BITS)
        self.emit(b, node, kernel, plan, x, b.shapes[node.inputs[0]])
