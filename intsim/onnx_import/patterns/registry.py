"""The matcher registry: anchor op -> the patterns that may start at a node of that op."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Pattern:
    name: str           # the matcher function's name
    expects: str        # what the pattern is, for error messages ("attention scores q @ k^T ...")
    fn: object          # fn(matching, anchor ONode): emits a semantic node or raises a Miss
    claims: tuple       # ops other than the anchor that the pattern may claim


MATCHERS = {}           # anchor op -> [Pattern], tried in registration (import) order
FALLBACKS = {}          # anchor op -> [Pattern]: the generic ops, tried where no pattern matched


def matcher(*anchors, expects, claims=()):
    """Register the decorated function as the matcher of a pattern anchored at any of `anchors`."""
    def register(fn):
        pattern = Pattern(fn.__name__, expects, fn, tuple(claims))
        for op in anchors:
            MATCHERS.setdefault(op, []).append(pattern)
        return fn
    return register


def fallback(*anchors, expects):
    """Register the decorated function as the generic fallback of one ONNX op: a node that no
    pattern explains maps to one generic semantic op (or a few, e.g. Split to Slices)."""
    def register(fn):
        pattern = Pattern(fn.__name__, expects, fn, ())
        for op in anchors:
            FALLBACKS.setdefault(op, []).append(pattern)
        return fn
    return register
