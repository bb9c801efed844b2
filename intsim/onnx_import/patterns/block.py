"""The rest of the network around the blocks: residual Adds and the cls token select."""
from ..errors import applies, need
from .common import LAYOUT
from .registry import matcher


@matcher("Add", expects="a residual Add of two image-dependent tensors of the same shape")
def residual(m, n):
    a, b = n.inputs
    applies(a in m.live and b in m.live, "one of its inputs is a constant")
    need(m.shapes[a] == m.shapes[b], f"its inputs have shapes {m.shapes[a]} and {m.shapes[b]}")
    m.emit("Add", [m.sem(a), m.sem(b)], 1, [n], [n.outputs[0]], role="add", scope=n.scope)


@matcher("Gather", "Slice", "Reshape", "Flatten", "Squeeze", claims=LAYOUT,
         expects="the cls token select x[:, 0] of an (N, T, D) tensor")
def cls_select(m, n):
    x = n.inputs[0]
    applies(m.is_layout(n) and len(m.shapes[x]) == 3 and len(n.outputs) == 1,
            "it is not data movement of one (N, T, D) tensor")
    chain = m.match_chain(m.chain_from(n), x, lambda x: x[:, 0])
    applies(chain is not None, "the data movement from it does not select token 0")
    m.emit("ClsSelect", [m.sem(x)], 1, chain, [chain[-1].outputs[0]], role="cls_select", scope=n.scope)
