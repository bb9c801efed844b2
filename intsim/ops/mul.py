"""Mul of two activations: y = a * b elementwise, per-sample shapes broadcast (spec K7.5). Exact:
each operand is requantized to `abits` at its calibrated scale, the product (|a b| < 2^(2 abits))
is an int32 at the product of the scales."""
import numpy as np

from .. import arith
from .attn_scores import ACC
from .base import OpCost, OpDef, tensor_elements
from .matmul import product_operand


class Mul(OpDef):
    semantic = "Mul"
    kind = "mul"
    spec = "K7.5"
    n_inputs = 2
    reads_narrow = True

    def infer(self, node, in_shapes):
        a, b = in_shapes
        try:
            shape = tuple(np.broadcast_shapes(a, b))
        except ValueError:
            shape = None
        if shape is None or len(a) != len(b):
            self.bad(node, in_shapes, "the two inputs do not broadcast (equal ranks needed)")
        return [shape]

    def evaluate(self, node, inputs, dtype):
        return [inputs[0] * inputs[1]]

    def lower(self, node, b):
        a, c = (product_operand(b, t, f"{node.name}.in{i}") for i, t in enumerate(node.inputs))
        s = float(b.scale_of(a)) * float(b.scale_of(c))
        shape = b.infer(node)[0]
        out = b.add_tensor(f"{node.name}.acc", ACC, s, shape)
        b.emit(self.kind, node.name, [a, c], [out], {}, {}, self.spec)
        b.bind(node.outputs[0], out, shape)

    def bind(self, op, program):
        super().bind(op, program)
        self.check_shapes(op, program)

    def run(self, op, inputs, bound, path):
        a, c = inputs
        y = a.astype(np.int64) * c.astype(np.int64)
        arith.check_fits(f"mul {op.name!r}", y, ACC)       # two 16-bit operands could pass int32
        return [y.astype(ACC.storage)]

    def cost(self, op, program):
        return OpCost({"mul": tensor_elements(program, op.outputs[0])})
