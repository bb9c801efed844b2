"""Relu: y = max(x, 0), elementwise (spec K7.1). Exact in integers: the output keeps the input's
format and scale (a comparator and a multiplexer in hardware; no requantization)."""
import numpy as np

from .base import OpCost, OpDef, tensor_elements


class Relu(OpDef):
    semantic = "Relu"
    kind = "relu"
    spec = "K7.1"

    def infer(self, node, in_shapes):
        return [in_shapes[0]]

    def evaluate(self, node, inputs, dtype):
        return [np.maximum(inputs[0], dtype(0))]

    def lower(self, node, b):
        src = node.inputs[0]
        x = b.realised[src]
        info = b.tensors[x]
        out = b.add_tensor(node.name, info.fmt, info.scale, info.shape, axis=info.axis)
        b.emit(self.kind, node.name, [x], [out], {}, {}, self.spec)
        b.bind(node.outputs[0], out, info.shape)

    def run(self, op, inputs, bound, path):
        x, = inputs
        return [np.maximum(x, np.zeros((), x.dtype))]

    def cost(self, op, program):
        return OpCost({"cmp": tensor_elements(program, op.outputs[0])})
