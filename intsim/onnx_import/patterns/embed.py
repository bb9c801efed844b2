"""Patterns of the embedding: the patchify convolution and the cls token + position embedding."""
import numpy as np

from ..errors import Miss, applies, need
from .common import LAYOUT
from .registry import matcher

PATCH_CONV = "2-D, square kernel = stride, no padding, dilation 1, group 1"


def patch_size(n, w):
    """The patch size of a patchify Conv node with weight w, or None if n is not one."""
    a = n.attrs
    ks = list(a.get("kernel_shape", w.shape[2:]))
    ok = (w.ndim == 4 and len(ks) == 2 and ks[0] == ks[1] and list(a.get("strides", [1, 1])) == ks
          and not any(a.get("pads", [0] * 4)) and all(d == 1 for d in a.get("dilations", [1, 1]))
          and a.get("group", 1) == 1 and a.get("auto_pad", "NOTSET") in ("NOTSET", "VALID"))
    return int(ks[0]) if ok else None


def _geometry(n, w):
    a = n.attrs
    return (f"kernel {list(a.get('kernel_shape', w.shape[2:]))}, strides {a.get('strides')}, pads "
            f"{a.get('pads')}, dilations {a.get('dilations')}, group {a.get('group', 1)}, auto_pad "
            f"{a.get('auto_pad', 'NOTSET')}")


@matcher("Conv", claims=LAYOUT,
         expects=f"the patch-embedding Conv ({PATCH_CONV}) -> Reshape/Flatten -> Transpose to (N, P, D)")
def patch_embed(m, n):
    applies(n.inputs[0] == m.f.in_name, "its input is not the image")
    w = m.c(n.inputs[1])
    p = patch_size(n, w)
    need(p is not None, f"it is not a patchify Conv ({PATCH_CONV}); got {_geometry(n, w)}")
    b = m.c(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] else np.zeros(w.shape[0], w.dtype)
    first = m.sole(n.outputs[0])
    need(m.is_layout(first), f"its output goes to {first!r}, not to a Reshape/Flatten")
    chain = m.match_chain(m.chain_from(first), n.outputs[0],
                          lambda x: x.reshape(x.shape[0], x.shape[1], -1).transpose(0, 2, 1))
    need(chain is not None, "the data movement after it does not flatten (N, D, H, W) to (N, H*W, D)")
    m.emit("PatchEmbed", [m.sem(m.f.in_name)], 1, [n] + chain, [chain[-1].outputs[0]],
           dict(weight=w.copy(), bias=b.copy()), dict(patch=p), role="patch_embed", scope=n.scope)


@matcher("Conv", claims=LAYOUT,
         expects=f"the patch-embedding Conv ({PATCH_CONV}) -> Transpose to (N, H, W, D) (Swin)")
def patch_embed_nhwc(m, n):
    applies(n.inputs[0] == m.f.in_name, "its input is not the image")
    w = m.c(n.inputs[1])
    p = patch_size(n, w)
    applies(p is not None, f"it is not a patch-embedding Conv ({PATCH_CONV})")
    b = m.c(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] else np.zeros(w.shape[0], w.dtype)
    first = m.sole(n.outputs[0])
    need(m.is_layout(first), f"its output goes to {first!r}, not to a Transpose")
    chain = m.match_chain(m.chain_from(first), n.outputs[0], lambda x: x.transpose(0, 2, 3, 1))
    need(chain is not None, "the data movement after it does not transpose (N, D, H, W) to (N, H, W, D)")
    grid = m.shapes[chain[-1].outputs[0]][1:]
    pe = m.emit("PatchEmbed", [m.sem(m.f.in_name)], 1, [n] + chain, [None],
                dict(weight=w.copy(), bias=b.copy()), dict(patch=p), role="patch_embed", scope=n.scope)
    m.emit("Reshape", pe.outputs, 1, [], [chain[-1].outputs[0]], attrs=dict(shape=list(grid)),
           role="reshape", scope=n.scope)


def _position_add(m, out, t, d):
    """The optional Add of a (T, D) position embedding after the cls concat: (node, pos) or None."""
    try:
        add = m.sole(out, ("Add",))
        return add, m.batch_free(m.c(m.split_live(add)[1]), (t, d))
    except Miss:
        return None


@matcher("Concat", claims=("Add",),
         expects="the cls token Concat (constant (1, D) token before the (N, P, D) patches, axis 1) "
                 "and an optional position-embedding Add")
def cls_pos(m, n):
    applies(len(n.inputs) == 2 and n.inputs[1] in m.live and n.inputs[0] not in m.live,
            "it does not put one constant before one image-dependent tensor")
    x = n.inputs[1]
    shp = m.shapes[x]
    need(len(shp) == 3 and int(n.attrs["axis"]) % 3 == 1,
         f"it concatenates on axis {n.attrs['axis']} of a {shp} tensor, not on the token axis")
    cls = m.batch_free(m.c(n.inputs[0]), (1, shp[2]))[0]
    out, claimed, pos = n.outputs[0], [n], np.zeros((shp[1] + 1, shp[2]), cls.dtype)
    found = _position_add(m, out, shp[1] + 1, shp[2])
    if found is not None:
        add, pos = found
        out = add.outputs[0]
        claimed.append(add)
    m.emit("ClsPos", [m.sem(x)], 1, claimed, [out], dict(cls=cls, pos=pos), role="cls_pos", scope=n.scope)
