"""Step 4: name the semantic nodes.

From the module names the exporter recorded (legacy: node names such as
"/blocks/blocks.0/attn/qkv/MatMul"; dynamo: the pkg.torch.onnx.name_scopes metadata), falling back
to timm's canonical names ("blocks.3.mlp.fc1") when those are missing or ambiguous. A node's role
(qkv, proj, fc1, norm1, residual2, ...) comes from the structure around it, not from its name.
"""
import ast
import os
import re

ATTN_ROLES = ("qkv", "split", "scores", "softmax", "context", "proj")
MLP_ROLES = ("fc1", "act", "fc2")
ACTIVATIONS = ("GELU", "QuickGELU")      # the MLP's activation between fc1 and fc2
# ops around the backbone (decoders, heads): outside the blocks, named after their module scope
SCOPED_OPS = ("Conv", "ConvTranspose", "Relu", "Sigmoid", "QuickGELU", "Resize", "GlobalAveragePool")
# the generic ops (patterns/generic.py): named after their module scope and their op, numbered
# when a module has several ("blocks.0.attn.reshape", "blocks.0.attn.reshape_2")
GENERIC_ROLES = ("reshape", "transpose", "slice", "gather", "pad", "concat", "matmul", "mul",
                 "scale", "channel_mul", "const_add", "reduce_mean")


def scope_of(proto):
    """Module path of an ONNX node ('blocks.0.attn.qkv'), '' for the root module, None if unknown."""
    for p in proto.metadata_props:                      # dynamo exporter
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                return None
            return scopes[-2] if len(scopes) >= 2 and isinstance(scopes[-2], str) else None
    if proto.name.startswith("/"):      # TorchScript exporter: /blocks/blocks.0/attn/qkv/MatMul
        out = []
        for c in proto.name.split("/")[1:-1]:
            if out and c.startswith(out[-1] + "."):     # "/blocks/blocks.0" means blocks.0
                out[-1] = c
            elif c:
                out.append(c)
        return ".".join(out)
    return None


def _wiring(nodes):
    producer = {t: s for s in nodes for t in s.outputs}
    consumers = {}
    for s in nodes:
        for t in s.inputs:
            consumers.setdefault(t, []).append(s)
    return producer, consumers


def _linear_role(s, producer, consumers):
    feeds = lambda op: any(c.op == op for c in consumers.get(s.outputs[0], []))       # noqa: E731
    fed_by = lambda op: any(t in producer and producer[t].op == op for t in s.inputs)  # noqa: E731
    return ("qkv" if feeds("QKVSplit") else "proj" if fed_by("AttnContext")
            else "fc1" if any(feeds(a) for a in ACTIVATIONS) else "fc2" if any(fed_by(a) for a in ACTIVATIONS)
            else "head" if fed_by("ClsSelect") else "linear")


def _through_scales(producer, t):
    """The node making t, looking through layer-scale and scalar factors (ChannelMul, Scale)."""
    node = producer[t]
    while node.op in ("ChannelMul", "Scale") and node.inputs[0] in producer:
        node = producer[node.inputs[0]]
    return node


def roles(nodes, role):
    """Refine the matchers' roles from the structure: qkv/proj/fc1/fc2/head, norm1/norm2/norm,
    residual1/residual2. `role` maps node name -> the role its matcher gave."""
    producer, consumers = _wiring(nodes)
    role = dict(role)
    for s in nodes:
        if s.op == "Linear":
            role[s.name] = _linear_role(s, producer, consumers)
    for s in nodes:
        if s.op == "LayerNorm":
            nxt = {role[c.name] for c in consumers.get(s.outputs[0], [])}
            role[s.name] = "norm1" if "qkv" in nxt else "norm2" if "fc1" in nxt else "norm"
        elif s.op == "Add":
            src = {role[_through_scales(producer, t).name] for t in s.inputs if t in producer}
            role[s.name] = "residual1" if "proj" in src else "residual2" if "fc2" in src else "add"
    return role


def blocks(nodes, role):
    """{node name: block index} for the nodes inside transformer blocks: a block opens at norm1
    (or at qkv for blocks without one) and closes at residual2."""
    block_of, blk, open_ = {}, -1, False
    for s in nodes:
        r = role[s.name]
        if r == "norm1" or (r in ("qkv", "split") and not open_):
            blk, open_ = blk + 1, True
        if open_:
            block_of[s.name] = blk
        if r == "residual2":
            open_ = False
    return block_of


def canonical_names(nodes, role, block_of):
    """timm's names: blocks.3.attn.qkv, blocks.3.mlp.fc1, norm, head, ..."""
    def name(s):
        r = role[s.name]
        if s.name not in block_of:
            return r
        group = "attn." if r in ATTN_ROLES else "mlp." if r in MLP_ROLES else ""
        return f"blocks.{block_of[s.name]}.{group}{r}"
    return {s.name: name(s) for s in nodes}


def _parent(path):
    return path.rsplit(".", 1)[0] if "." in path else ""


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def _block_scopes(nodes, role, scope, block_of):
    """{block: {role: scope}} of the parametrised nodes, or None if any lacks a scope."""
    out = {}
    for s in nodes:
        if s.op in ("Linear", "LayerNorm", "PatchEmbed"):
            if not scope[s.name]:
                return None
            if s.name in block_of:
                out.setdefault(block_of[s.name], {})[role[s.name]] = scope[s.name]
    return out


def _scoped_name(s, r, scope, block, in_block):
    """The scope-derived name of one node, or None if it cannot be derived. `block` maps the roles
    of its block's parametrised nodes to their scopes."""
    if s.op in ("Linear", "LayerNorm"):
        return scope
    if r in GENERIC_ROLES:
        return None if scope is None else _join(scope, r)
    if s.op == "PatchEmbed":
        return _parent(scope) or scope
    if r in ("split", "scores", "softmax", "context") and "qkv" in block:
        return _join(_parent(block["qkv"]), r)
    if r == "act" and "fc1" in block:
        return _join(_parent(block["fc1"]), r)
    if r in ("residual1", "residual2") and block:
        prefix = os.path.commonprefix([v + "." for v in block.values()])
        prefix = prefix[:prefix.rfind(".")] if "." in prefix else ""
        return _join(prefix, r) if prefix else None
    if s.op in SCOPED_OPS and not in_block:
        return scope or r
    return None if in_block else r


def scoped_names(nodes, role, scope, block_of):
    """Names from the exporter's module scopes, or None if any needed scope is missing or the
    result is ambiguous. Parameter-free ops are named beside their module's Linear/LayerNorm. A
    graph with generic ops (patterns/generic.py) is named leniently: any node with a scope is
    named after it and its role, and repeated names are numbered (a graph of ViT patterns alone is
    named exactly as before)."""
    scopes = _block_scopes(nodes, role, scope, block_of)
    if scopes is None:
        return None
    lenient = any(role[s.name] in GENERIC_ROLES for s in nodes)
    names, count = {}, {}
    for s in nodes:
        name = _scoped_name(s, role[s.name], scope[s.name], scopes.get(block_of.get(s.name), {}),
                            s.name in block_of)
        if lenient and scope[s.name] and (name is None or name == role[s.name]):
            name = _join(scope[s.name], role[s.name])
        if name is None:
            return None
        if lenient:
            count[name] = count.get(name, 0) + 1
            name = name if count[name] == 1 else f"{name}_{count[name]}"
        names[s.name] = name
    around = {s.name for s in nodes if s.op in SCOPED_OPS and s.name not in block_of}
    taken = list(names.values())
    for s in nodes:    # a functional op shares its module's scope: add its role
        if s.name in around and taken.count(names[s.name]) > 1 and scope[s.name]:
            names[s.name] = _join(scope[s.name], role[s.name])
    # names repeated by ops around the backbone (two functional relus) are numbered by name_nodes
    clash = [n for n in names if n not in around and list(names.values()).count(names[n]) > 1]
    return None if clash else names


def name_nodes(nodes, role, scope):
    """(names, roles, from_scopes): final node names (made unique and safe), refined roles and
    whether the names come from the exporter's scopes."""
    role = roles(nodes, role)
    block_of = blocks(nodes, role)
    scoped = scoped_names(nodes, role, scope, block_of)
    names = scoped if scoped is not None else canonical_names(nodes, role, block_of)
    out, seen = {}, {}
    for s in nodes:    # uniquify only if a model repeats a top-level role
        nm = re.sub(r"[^A-Za-z0-9_.\-]", "_", names[s.name])
        seen[nm] = seen.get(nm, 0) + 1
        out[s.name] = nm if seen[nm] == 1 else f"{nm}_{seen[nm]}"
    return out, role, scoped is not None
