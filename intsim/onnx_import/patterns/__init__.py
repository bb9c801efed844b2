"""Step 3: pattern-match the image path into semantic ops.

Each pattern is a small matcher function registered for the op of the node where it starts (its
anchor). Matchers run in graph order at every node not yet claimed; the first that matches emits a
semantic node and claims the ONNX nodes it explains. Pure data-movement chains (Reshape,
Transpose, Split, Slice, Gather, Squeeze, Flatten, ...) are not matched by their op sequence but
checked by what they do to a tensor of labels (Matching.run_layout), so any exporter's variant of
the same data movement is accepted and any other is rejected. Every image-path node must be
claimed; otherwise the error names the likely cause (report.py).
"""
from ..errors import Miss, OnnxImportError
from . import attention, block, embed, linear, mlp, norm  # noqa: F401  (register the matchers)
from .common import Matching
from .registry import MATCHERS
from .report import unmatched_error

# Ops a pattern can explain on the image path: anchors and the ops patterns claim around them.
PATTERN_OPS = tuple(sorted(set(MATCHERS) | {op for ps in MATCHERS.values() for p in ps for op in p.claims}))


def _try_patterns(m, n):
    """Run the matchers anchored at n's op until one matches: [] or the (pattern, miss) of each."""
    tried = []
    for pattern in MATCHERS.get(n.op, ()):
        try:
            pattern.fn(m, n)
            return []
        except Miss as e:
            tried.append((pattern, e))
    return tried


def match(folded, opset_imports, source):
    """The Matching of the folded image path: semantic nodes, their roles, scopes, claimed nodes."""
    m = Matching(folded, opset_imports)
    misses = {}
    for n in folded.nodes:
        if id(n) not in m.claimed:
            misses[id(n)] = _try_patterns(m, n)
    left = [n for n in folded.nodes if id(n) not in m.claimed]
    if left:
        raise unmatched_error(m, left, misses, source)
    if folded.out_name not in m.sem_of:
        raise OnnxImportError(f"{source}: output {folded.out_name!r} is not produced by a recognised "
                              "pattern")
    return m
