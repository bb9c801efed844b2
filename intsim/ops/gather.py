"""Gather: y = take(x, indices, axis) with constant indices (spec K6.4): an integer index removes
the axis (x[:, i] of a token), a list of indices replaces it by their shape. Exact: the integers keep
their format and scale."""
import numpy as np

from .base import MovementOp


class Gather(MovementOp):
    semantic = "Gather"
    kind = "gather"
    spec = "K6.4"
    attrs = ("axis", "indices")

    def infer(self, node, in_shapes):
        x, axis = in_shapes[0], int(node.attrs["axis"])
        idx = np.asarray(node.attrs["indices"])
        if not 0 <= axis < len(x) or idx.dtype.kind not in "iu" or not idx.size or not (
                0 <= idx.min() and idx.max() < x[axis]):
            self.bad(node, in_shapes, f"indices {node.attrs['indices']} on axis {axis} are not "
                                      f"non-negative integers inside the axis")
        return [x[:axis] + idx.shape + x[axis + 1:]]

    def move(self, x, attrs):
        return np.take(x, np.asarray(attrs["indices"], dtype=np.int64), axis=int(attrs["axis"]) + 1)
