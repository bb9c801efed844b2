"""ClsSelect: the class token, (N, T, D) -> (N, D) = x[:, 0] (spec K6: data movement only)."""
import numpy as np

from .base import OpDef


class ClsSelect(OpDef):
    semantic = "ClsSelect"
    kind = "cls_select"
    spec = "K6"

    def infer(self, node, in_shapes):
        x = in_shapes[0]
        if len(x) != 2:
            self.bad(node, in_shapes, "expects (T, D)")
        return [x[1:]]

    def evaluate(self, node, inputs, dtype):
        return [inputs[0][:, 0]]

    def lower(self, node, b):
        src = node.inputs[0]
        x = b.realised[src]
        info = b.tensors[x]
        out = b.add_tensor(node.name, info.fmt, info.scale, b.shapes[src][1:])
        b.emit(self.kind, node.name, [x], [out], {}, {}, self.spec)
        b.bind(node.outputs[0], out, b.shapes[src][1:])

    def run(self, op, inputs, bound, path):
        return [np.ascontiguousarray(inputs[0][:, 0])]
