"""Transpose: the axes of one sample permuted, y = x.transpose(perm) (spec K6.2). The batch axis
stays first (`perm` names per-sample axes). Exact: the integers keep their format and scale."""
import numpy as np

from .base import MovementOp, batch_axes


class Transpose(MovementOp):
    semantic = "Transpose"
    kind = "transpose"
    spec = "K6.2"
    attrs = ("perm",)

    def infer(self, node, in_shapes):
        perm = [int(p) for p in node.attrs["perm"]]
        x = in_shapes[0]
        if sorted(perm) != list(range(len(x))):
            self.bad(node, in_shapes, f"perm {perm} is not a permutation of the {len(x)} axes")
        return [tuple(x[p] for p in perm)]

    def contraction_source(self, node, out_index, axis, shapes):
        return int(node.attrs["perm"][axis]), None, None

    def move(self, x, attrs):
        return np.ascontiguousarray(x.transpose([0] + batch_axes(attrs["perm"])))
