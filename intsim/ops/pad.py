"""Pad with zeros: `pads` gives (before, after) per axis of one sample, all >= 0 (spec K6.5). Exact:
zero is representable at any scale, so the integers keep their format and scale."""
import numpy as np

from .base import MovementOp


class Pad(MovementOp):
    semantic = "Pad"
    kind = "pad"
    spec = "K6.5"
    attrs = ("pads",)

    def infer(self, node, in_shapes):
        x, pads = in_shapes[0], [tuple(int(v) for v in p) for p in node.attrs["pads"]]
        if len(pads) != len(x) or any(len(p) != 2 or min(p) < 0 for p in pads):
            self.bad(node, in_shapes, f"pads {node.attrs['pads']}: give (before, after) >= 0 per axis")
        return [tuple(d + a + b for d, (a, b) in zip(x, pads))]

    def move(self, x, attrs):
        return np.pad(x, [(0, 0)] + [tuple(int(v) for v in p) for p in attrs["pads"]])
