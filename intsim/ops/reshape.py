"""Reshape: one sample's values in row-major order, read into another shape (spec K6.1). ONNX
Reshape, Flatten, Squeeze and Unsqueeze all import as this op. Exact: the integers keep their order,
format and scale."""
import numpy as np

from .base import MovementOp


class Reshape(MovementOp):
    semantic = "Reshape"
    kind = "reshape"
    spec = "K6.1"
    attrs = ("shape",)

    def infer(self, node, in_shapes):
        shape = tuple(int(d) for d in node.attrs["shape"])
        if not all(d > 0 for d in shape) or np.prod(shape, dtype=np.int64) != np.prod(in_shapes[0], dtype=np.int64):
            self.bad(node, in_shapes, f"cannot reshape to {shape}")
        return [shape]

    def contraction_source(self, node, out_index, axis, shapes):
        """The last axis split into (H, Dh), or kept with the leading axes regrouped: the last
        output axis walks runs of Dh (or the unchanged) consecutive input channels."""
        x, y = shapes[node.inputs[0]], shapes[node.outputs[0]]
        if axis != len(y) - 1:
            return None
        if y[-1] == x[-1]:
            return len(x) - 1, None, None
        if len(y) >= 2 and y[:-2] == x[:-1] and y[-2] * y[-1] == x[-1]:
            return len(x) - 1, y[-1], None
        return None

    def move(self, x, attrs):
        return x.reshape((x.shape[0],) + tuple(attrs["shape"]))
