"""Slice: y = x[s0:e0:t0, s1:e1:t1, ...] over the axes of one sample, steps >= 1, bounds already
clamped to the axis (spec K6.3). Exact: the integers keep their format and scale."""
from .base import MovementOp


def sample_slices(attrs):
    return tuple(slice(int(s), int(e), int(t)) for s, e, t in
                 zip(attrs["starts"], attrs["ends"], attrs["steps"]))


class Slice(MovementOp):
    semantic = "Slice"
    kind = "slice"
    spec = "K6.3"
    attrs = ("starts", "ends", "steps")

    def infer(self, node, in_shapes):
        x = in_shapes[0]
        a = node.attrs
        if not len(a["starts"]) == len(a["ends"]) == len(a["steps"]) == len(x):
            self.bad(node, in_shapes, "give one start, end and step per axis")
        if not all(0 <= int(s) < int(e) <= d and int(t) >= 1
                   for s, e, t, d in zip(a["starts"], a["ends"], a["steps"], x)):
            self.bad(node, in_shapes, f"slices {a['starts']}:{a['ends']}:{a['steps']} are not "
                                      f"non-empty forward ranges inside the axes")
        return [tuple(len(range(d)[s]) for d, s in zip(x, sample_slices(a)))]

    def move(self, x, attrs):
        return x[(slice(None),) + sample_slices(attrs)]
