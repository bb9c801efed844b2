"""Import a Vision Transformer from ONNX into the semantic graph (intsim.graph).

    graph = load_onnx("models/fmnist_vit_dynamo18.onnx")

Steps, one module each:
1. model.py: parse and check the model (onnx.load, onnx.checker); exactly one float image input
   (N, C, H, W) whose only free dimension is the batch, and one or more outputs.
2. fold.py: find the image path by traversal (every tensor computed from the image; Shape/Size
   outputs are constants at a concrete batch size B, 2 unless the model fixes it). Run the ONNX
   graph once on a seeded random image with ONNX Runtime (or onnx.reference when it is missing):
   the output the verification compares against. Every constant an image-path node reads,
   whatever standard ops compute it, comes from the sub-graph that computes it, evaluated by
   onnx.reference with constant_ops' float ops (the same bits whatever the engine or machine,
   docs/quantization.md Q18). Shapes of image-path tensors come from
   onnx.shape_inference. Identity, Dropout and same-type Cast nodes are bypassed. An op on the
   image path that no pattern explains is rejected here, naming the node.
3. patterns/: match the image path into semantic ops, one small matcher per pattern, registered
   under the op of the node where the pattern starts (its anchor). Data-movement chains are checked
   by what they do to a tensor of labels, not by their op sequence. Every image-path node must be
   claimed; otherwise the error names the node where an expected pattern broke and why.
4. naming.py: name the nodes from the exporter's module scopes, or timm's canonical names.
5. Here: build and validate the Graph, and check it with float_ref against the ONNX graph's output
   on the same random image: a wrong match cannot go unnoticed.

Adding a pattern (e.g. separate q/k/v Linears, a layer-scale Mul, an attention-bias Add):
  - write a function `def my_pattern(m, n)` in the patterns/ module of its part of the network (or
    a new module imported in patterns/__init__.py), decorated with
    `@matcher("AnchorOp", expects="what the pattern is", claims=(other ops it may claim,))`.
    Matchers for one anchor op are tried in registration order; the first that emits wins.
  - `n` is the anchor ONode (op, inputs, outputs, attrs, scope); `m` is the Matching
    (patterns/common.py): m.c(t) constant value, m.sole(t, ops) the single reader of t, m.trace_back(t),
    m.run_layout / m.match_chain to check data movement on labels, m.sem(t) the semantic tensor of an
    ONNX tensor, m.emit(op, inputs, n_outputs, claimed_nodes, onnx_outputs, params, attrs, role, scope).
  - open with `applies(cond, why)` for the tests that decide whether the pattern starts at n at all;
    then `need(cond, what was found)` for everything after: a failed `need` is reported as "expected
    <pattern> at <node>, but <what was found>". Emit only after every check has passed.
  - the semantic op must exist in intsim.graph (and the rest of intsim); give it a role for naming.py
    if it takes part in the block structure; add a test building a small ONNX model with the pattern.

Adding a generic op (one ONNX op -> one semantic op, where no pattern applies; patterns/generic.py):
  - decorate `def my_op(m, n)` with `@fallback("OnnxOp", expects="...")`; fallbacks run after every
    matcher of the node's op, at once for computing ops and on demand for data movement and scalar
    Mul/Div (`Matching.lazy`). Work in per-sample shapes (`m.sem_shape`, `m.sem_axis`: the batch
    axis, or a batch folded into the first axis, is never an operand axis) and per-sample
    constants (`per_sample_const`); check data movement on labels (`_emit_moved`); give the node
    the op's name as its role and add the role to naming.GENERIC_ROLES.
"""
import numpy as np
from onnx import TensorProto, numpy_helper

from ..float_ref import run_float
from ..graph import Graph, Node
from ..progress import bar
from . import fold, patterns
from .errors import OnnxImportError
from .model import ONode, image_input, load_proto, opset_of, output_names
from .naming import name_nodes

__all__ = ["load_onnx", "OnnxImportError", "SUPPORTED_OPS"]

SUPPORTED_OPS = tuple(sorted(set(patterns.PATTERN_OPS) | set(fold.NOOPS)))   # on the image path
VERIFY_TOLERANCE = 1e-3    # max |float_ref - ONNX| relative to max(1, max |ONNX output|)


def load_onnx(src, verify=True, seed=0, progress=None):
    """Import an ONNX ViT (file path or onnx.ModelProto) into a semantic Graph.

    verify: evaluate the semantic graph (float_ref) and the ONNX graph (ONNX Runtime or the ONNX
    reference evaluator) on one seeded random image batch and raise OnnxImportError if they disagree.
    progress: a bar over the import's steps (read, fold, match, verify; None: on a terminal)."""
    with bar(4 if verify else 3, "import", progress, "step") as b:
        model, source = load_proto(src)
        _check_weights_not_all_zero(model, source)
        in_name, in_shape, fixed_batch, in_dtype = image_input(model, source)
        out_names = output_names(model, source)
        nodes = [ONode(p, i) for i, p in enumerate(model.graph.node)]
        path, live = fold.image_path(nodes, in_name)
        _check_ops(path, source)
        for out_name in out_names:
            if out_name not in live:
                raise OnnxImportError(f"{source}: output {out_name!r} does not depend on the input")
        b.update(1)
        rng = np.random.default_rng(seed)
        image = rng.standard_normal(((fixed_batch or 2),) + in_shape).astype(in_dtype)
        folded = fold.fold(model, source, path, live, in_name, out_names, image)
        b.update(1)
        matching = patterns.match(folded, model.opset_import, source)
        graph = _graph(model, source, folded, matching)
        graph.validate()
        b.update(1)
        if verify:
            _verify(graph, folded, source)
            b.update(1)
    return graph


FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16)
WEIGHTED_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")      # their second input: the weight


def _check_weights_not_all_zero(model, source):
    """A model whose every weight matrix (the constant second input of a MatMul, Gemm, Conv or
    ConvTranspose) is 0 - an export before training, stripped weights - has nothing to quantize,
    and its degenerate graph would fail to match far from the cause."""
    multiplied = {name for n in model.graph.node if n.op_type in WEIGHTED_OPS for name in n.input[1:2]}
    weights = [init for init in model.graph.initializer if init.name in multiplied
               and init.data_type in FLOAT_TYPES and len(init.dims) >= 2 and np.prod(init.dims) > 1]
    if weights and not any(np.any(numpy_helper.to_array(init)) for init in weights):
        raise OnnxImportError(f"{source}: every one of its {len(weights)} weight tensors is all zero "
                              f"(an export of an untrained or stripped model?): nothing to quantize")


def _check_ops(path, source):
    for n in path:
        if n.op not in SUPPORTED_OPS:
            raise OnnxImportError(
                f"{source}: {n!r}: op {n.op} on the image path is not supported by intsim's ViT "
                f"importer. Supported ops on the image path: {', '.join(SUPPORTED_OPS)}")


def _graph(model, source, folded, m):
    """The named semantic Graph of a finished Matching."""
    names, roles, scoped = name_nodes(m.nodes, {k: v["role"] for k, v in m.info.items()},
                                      {k: v["scope"] for k, v in m.info.items()})
    tensor = {"%in": folded.in_name}
    for s in m.nodes:
        outs = [names[s.name]] if len(s.outputs) == 1 else [f"{names[s.name]}.{q}" for q in "qkv"]
        tensor.update(zip(s.outputs, outs))
    nodes = [Node(s.op, names[s.name], [tensor[t] for t in s.inputs], [tensor[t] for t in s.outputs],
                  s.params, s.attrs) for s in m.nodes]
    meta = _meta(model, source, folded, m, names, roles, scoped)
    outs = [tensor[m.sem_of[t]] for t in folded.out_names]
    return Graph(folded.in_name, folded.image.shape[1:], nodes, outs[0] if len(outs) == 1 else outs, meta)


def _meta(model, source, folded, m, names, roles, scoped):
    producer = model.producer_name or "?"
    dynamo = any(p.key.startswith("pkg.torch.onnx") for n in model.graph.node for p in n.metadata_props)
    return dict(source=source, opset=opset_of(model.opset_import),
                form="dynamo" if dynamo else "legacy" if producer == "pytorch" else producer,
                producer=producer, producer_version=model.producer_version,
                layernorm=("fused" if any(n.op == "LayerNormalization" for n in folded.nodes)
                           else "decomposed"),
                onnx_input=folded.in_name,
                onnx_output=folded.out_names[0] if len(folded.out_names) == 1 else list(folded.out_names),
                names="onnx scopes" if scoped else "canonical",
                roles={names[k]: r for k, r in roles.items()},
                onnx_nodes={names[k]: v["onnx"] for k, v in m.info.items()},
                metadata={p.key: p.value for p in model.metadata_props})


def _verify(graph, folded, source):
    result = run_float(graph, folded.image, dtype=folded.onnx_outs[0].dtype.type)
    got_all = list(result) if isinstance(result, tuple) else [result]
    for name, got, want in zip(folded.out_names, got_all, folded.onnx_outs):
        err = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")
        tol = VERIFY_TOLERANCE * max(1.0, float(np.max(np.abs(want))))
        if not err <= tol:
            raise OnnxImportError(
                f"{source}: internal check failed: the imported graph differs from the ONNX graph "
                f"by {err:.3g} (tolerance {tol:.3g}) at output {name!r} on a random input; shapes "
                f"{got.shape} vs {want.shape}. Please report this model.")
