"""Attention patterns (timm's fused qkv form): one qkv Linear whose (N, T, 3D) output is split into
heads as qkv.reshape(N, T, 3, H, Dh).permute(2, 0, 3, 1, 4) -> q, k, v (checked on labels, so any
exporter's chain of Reshape/Transpose/Split/Slice/Gather/Squeeze doing that is accepted); scores
scale * q @ k^T with the scale anywhere (on q, on k, on both, after the MatMul); Softmax over the
last axis; context (probs @ v).transpose(1, 2).reshape(N, T, D)."""
import math

import numpy as np

from ..errors import Broken, Miss, Upstream, applies, need
from .common import LAYOUT
from .registry import matcher

QKV_SPLIT = "reshape(N, T, 3, H, Dh).permute(2, 0, 3, 1, 4)"


def split_heads(label, heads):
    """timm's qkv split of an (N, T, 3D) tensor: array of q, k, v, each (N, H, T, Dh)."""
    n, t, d3 = label.shape
    return label.reshape(n, t, 3, heads, d3 // (3 * heads)).transpose(2, 0, 3, 1, 4)


def _made_by(m, t):
    """What produced tensor t, for messages: "Linear 'blocks.0.attn.q'" or the ONNX node."""
    s = m.sem_of.get(t)
    node = next((x for x in m.nodes if s in x.outputs), None)
    if node is None:
        return repr(m.producer.get(t)) if t in m.producer else repr(t)
    scope = m.info[node.name]["scope"]
    return f"{node.op} {scope!r}" if scope else f"{node.op} at {m.info[node.name]['onnx'][0]!r}"


def _value_source(m, scores):
    """The tensor v traces back to in the attention whose scores MatMul is `scores`, or None."""
    t = scores.outputs[0]
    for _ in range(8):       # scale, mask, Softmax, ... up to the context MatMul
        cs = m.cons(t)
        if len(cs) != 1:
            return None
        if cs[0].op == "MatMul":
            return m.trace_back(cs[0].inputs[1])[0] if cs[0].inputs[0] == t else None
        t = cs[0].outputs[0]
    return None


def _different_sources(m, n, q_src, k_src):
    """Why q and k of the scores MatMul n are not one qkv split: names their (and v's) sources."""
    v_src = _value_source(m, n)
    srcs = dict(q=q_src, k=k_src) | ({} if v_src is None else dict(v=v_src))
    makers = {k: _made_by(m, t) for k, t in srcs.items()}
    kinds = {mk.split(" ")[0] for mk in makers.values()}
    what = f"{kinds.pop()} outputs" if len(kinds) == 1 else "tensors"
    count = {2: "two", 3: "three"}[len(set(srcs.values()))]
    listed = ", ".join(f"{k}: {mk}" for k, mk in makers.items())
    names = ", ".join(list(srcs)[:-1]) + " and " + list(srcs)[-1]
    return (f"{names} come from {count} different {what} ({listed}), not from one qkv "
            f"Linear split into heads (separate q/k/v projections are not supported yet)")


def _post_scale(m, t):
    """The optional scalar Mul/Div after q @ k^T: (node, factor) or (None, 1.0)."""
    try:
        post = m.sole(t, ("Mul", "Div"))
        return post, m.scalar_factor(post)[1]
    except Miss:
        return None, 1.0


def _check_split(m, na, nb, a, b, src, heads):
    """The data movement from src to a and b is q and k^T of timm's qkv split."""
    for nodes, tgt, which, want in ((na, a, "q", lambda x: split_heads(x, heads)[0]),
                                    (nb, b, "k^T", lambda x: split_heads(x, heads)[1].swapaxes(-1, -2))):
        label, env = m.run_layout(nodes, src)
        got, exp = env[tgt], want(label)
        need(got.shape == exp.shape and np.array_equal(got, exp),
             f"the data movement from {src!r} to {which} is not {QKV_SPLIT} with {heads} heads")


def _qkv_split(m, src, heads, scope):
    """The QKVSplit of qkv tensor src: emitted by the first attention reading it."""
    split = m.splits.get(src)
    if split is None:
        split = m.emit("QKVSplit", [m.sem(src)], 3, [], [None] * 3, attrs=dict(heads=heads),
                       role="split", scope=scope)
        m.splits[src] = split
    need(split.attrs["heads"] == heads, f"{src!r} is split into {split.attrs['heads']} heads elsewhere")
    return split


@matcher("MatMul", claims=LAYOUT + ("Mul", "Div"),
         expects=f"attention scores scale * q @ k^T, with q, k from one qkv Linear split as {QKV_SPLIT}")
def attn_scores(m, n):
    a, b = n.inputs
    applies(a in m.live and b in m.live, "one of its inputs is a constant")
    applies(m.producer.get(a, n).op != "Softmax", "its first input is a Softmax output")
    src, na, fa = m.trace_back(a)
    src_b, nb, fb = m.trace_back(b)
    applies(all(m.producer.get(s, n).op != "Softmax" for s in (src, src_b)),
            "its first input is computed from a Softmax output")
    if src != src_b:
        raise Broken(_different_sources(m, n, src, src_b))
    need(na and nb, "q and k are not split from their source by data movement")
    qshape, sshape = m.shapes[a], m.shapes[src]
    need(len(qshape) == 4 and len(sshape) == 3, f"q {qshape} is not (N, H, T, Dh) or {src!r} "
                                                f"{sshape} is not (N, T, 3D)")
    heads = qshape[1]
    need(sshape[2] % (3 * heads) == 0, f"{src!r} {sshape} does not split into q, k, v of {heads} heads")
    _check_split(m, na, nb, a, b, src, heads)
    post, fpost = _post_scale(m, n.outputs[0])
    scale = fa * fb * fpost
    need(math.isfinite(scale) and scale > 0, f"the scale {scale} is not positive and finite")
    split = _qkv_split(m, src, heads, n.scope)
    claimed = [n] + na + nb + ([post] if post is not None else [])
    m.emit("AttnScores", split.outputs[:2], 1, claimed, [post.outputs[0] if post else n.outputs[0]],
           attrs=dict(scale=scale), role="scores", scope=n.scope)


@matcher("MatMul", claims=LAYOUT + ("Mul", "Div"),
         expects="attention context (probs @ v).transpose(1, 2).reshape(N, T, D), v from the qkv split")
def attn_context(m, n):
    p, v = n.inputs
    applies(p in m.live and v in m.live, "one of its inputs is a constant")
    src, nv, fv = m.trace_back(v)
    split = m.splits.get(src)
    applies(split is not None or m.producer.get(p, n).op == "Softmax",
            "its first input is not a Softmax output")
    if split is None:
        raise Upstream(f"v comes from {src!r}, which no recognised attention scores split into q, k, v")
    need(fv == 1.0 and nv, f"v is scaled by {fv} or not split from {src!r}")
    label, env = m.run_layout(nv, src)
    want = split_heads(label, split.attrs["heads"])[2]
    need(env[v].shape == want.shape and np.array_equal(env[v], want),
         f"the data movement from {src!r} to v is not {QKV_SPLIT}")
    first = m.sole(n.outputs[0])
    need(m.is_layout(first), f"its output goes to {first!r}, not to a Transpose/Reshape merging the heads")
    chain = m.match_chain(m.chain_from(first), n.outputs[0],
                          lambda x: x.transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1))
    need(chain is not None,
         "the data movement after it does not merge the heads as transpose(1, 2).reshape(N, T, D)")
    m.emit("AttnContext", [m.sem(p), split.outputs[2]], 1, [n] + nv + chain, [chain[-1].outputs[0]],
           role="context", scope=n.scope)


def softmax_axis(n, rank, opset):
    return int(n.attrs.get("axis", -1 if opset >= 13 else 1)) % rank


@matcher("Softmax", expects="Softmax over the last axis")
def softmax(m, n):
    x = n.inputs[0]
    rank = len(m.shapes[x])
    need(softmax_axis(n, rank, m.opset) == rank - 1, f"it is over axis {n.attrs.get('axis')}, not the last")
    m.emit("Softmax", [m.sem(x)], 1, [n], [n.outputs[0]], role="softmax", scope=n.scope)
