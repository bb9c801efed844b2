"""The error for an image path that the patterns do not explain, naming the likely cause: the
first node where a pattern started and broke (with what it expected and what it found), else the
first node outside every pattern whose inputs are all explained."""
from ..errors import Broken, OnnxImportError
from .common import LAYOUT


def _fed(m, n):
    """Whether every image-dependent input of n comes from a recognised pattern."""
    return all(t not in m.live or t == m.f.in_name or id(m.producer[t]) in m.claimed for t in n.inputs)


def _explained(m, n):
    """Whether every image-dependent input of n is a tensor of the semantic graph."""
    return all(t not in m.live or t in m.sem_of for t in n.inputs)


def likely_cause(m, left, misses):
    """The unclaimed node most likely to be the cause, in order of evidence: a pattern broke at a
    node whose inputs are explained; a node outside every pattern whose inputs are explained; a
    pattern broke; a node outside every pattern."""
    broken = [n for n in left if any(isinstance(e, Broken) for _, e in misses.get(id(n), ()))]
    for n in broken:
        if _explained(m, n):
            return n
    for n in left:
        if n not in broken and n.op not in LAYOUT and _explained(m, n):
            return n
    if broken:
        return broken[0]
    compute = [n for n in left if n.op not in LAYOUT]
    return next((n for n in compute if _fed(m, n)), compute[0] if compute else left[0])


def _explain(n, tried):
    broken = [(p, e) for p, e in tried if isinstance(e, Broken)]
    if broken:
        return f"at {n!r}: " + "; or ".join(f"expected {p.expects}, but {e}" for p, e in broken)
    head = f"{n!r} (inputs {n.inputs}) is not part of a recognised ViT pattern"
    if not tried:
        return f"{head} (no pattern starts at a {n.op} node and no pattern around it claims it)"
    return f"{head}: " + "; ".join(f"not {p.expects}: {e}" for p, e in tried)


def unmatched_error(m, left, misses, source):
    cause = likely_cause(m, left, misses)
    others = [n for n in left if n is not cause]
    more = f"; also unmatched: {', '.join(repr(n) for n in others[:3])}" if others else ""
    more += f" and {len(others) - 3} more" if len(others) > 3 else ""
    return OnnxImportError(f"{source}: {_explain(cause, misses.get(id(cause), []))}{more}")
