"""Step 3: pattern-match the image path into semantic ops.

Each pattern is a small matcher function registered for the op of the node where it starts (its
anchor). Matchers run in graph order at every node not yet claimed; the first that matches emits a
semantic node and claims the ONNX nodes it explains. Pure data-movement chains (Reshape,
Transpose, Split, Slice, Gather, Squeeze, Flatten, ...) are not matched by their op sequence but
checked by what they do to a tensor of labels (Matching.run_layout), so any exporter's variant of
the same data movement is accepted and any other is rejected.

The ViT patterns come first, so that a model they explain gives the same graph as always. A node
none of them explains falls back to one generic op of its ONNX op (generic.py, `fallback`): at once
for computing nodes, and on demand (when a reader needs its output, `Matching.sem`) for data
movement and scalar Mul/Div, which a pattern anchored further on (an attention's q, k, v split, a
GELU's x / sqrt 2) may still claim. Every image-path node must be claimed; otherwise the error
names the likely cause (report.py).
"""
from ..errors import Miss, OnnxImportError
from . import attention, block, embed, linear, mlp, norm  # noqa: F401  (register the matchers)
from . import activation, conv, resize  # noqa: F401  (after embed: a Conv is first tried as the patch embedding)
from . import generic  # noqa: F401  (registered last: the fallbacks)
from .common import Matching
from .registry import FALLBACKS, MATCHERS
from .report import unmatched_error

# Ops a pattern can explain on the image path: anchors and the ops patterns claim around them.
PATTERN_OPS = tuple(sorted(set(MATCHERS) | set(FALLBACKS)
                           | {op for ps in MATCHERS.values() for p in ps for op in p.claims}))


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
            if id(n) not in m.claimed and not m.lazy(n):
                m.try_fallbacks(n)
    for t in folded.out_names:                       # outputs made by waiting (lazy) nodes
        try:
            m.sem(t)
        except Miss:
            pass
    for n in folded.nodes:                           # anything else no reader asked for
        m.try_fallbacks(n)
    left = [n for n in folded.nodes if id(n) not in m.claimed]
    for n in left:
        misses[id(n)] = misses.get(id(n), []) + m.fallback_misses.get(id(n), [])
    if left:
        raise unmatched_error(m, left, misses, source)
    for out in folded.out_names:
        if out not in m.sem_of:
            raise OnnxImportError(f"{source}: output {out!r} is not produced by a recognised pattern")
    return m
