"""Step 2: split the ONNX graph into the image path and constants, fold the constants, find shapes.

- Image dependence by traversal: a tensor depends on the image if a node reading an
  image-dependent tensor produces it; Shape and Size read only the shape, so their outputs (and
  everything computed from them alone) are constants at the concrete batch size B.
- The graph output by a fast engine: the whole graph runs once on the seeded random image with
  ONNX Runtime (if installed) or onnx.reference.ReferenceEvaluator. Its output is what the import
  verifies against (it decides nothing); the run also gives the outputs of the Shape/Size nodes
  that read image-path tensors.
- Constants by a deterministic evaluation: every constant that an image-path node reads becomes a
  parameter of the semantic graph and so decides integers, and engines differ in the last bit of
  float ops (ONNX Runtime and onnx.reference in a bicubic Resize; FMA in ARM builds). So the
  constants come from a sub-model of just the nodes that compute them (walked back from them over
  nodes off the image path; those Shape/Size outputs and the initializers it reads are its
  inputs), evaluated by onnx.reference with constant_ops' float ops (Resize, MatMul, Gemm,
  ReduceSum/Mean, Exp, Log, Erf, Softmax, Pow: float64 in a fixed order, rounded once), whatever
  the engine: with and without ONNX Runtime the constants are bit-identical. Any standard op may
  sit on a constant path (shape arithmetic, weight transposes, a resized position embedding, ...);
  one that computes in float without a deterministic implementation here (Sin, Conv, ...) is
  evaluated by onnx.reference's NumPy code with an IntsimWarning naming the node; a sub-model
  onnx.reference cannot run (a custom domain) takes the engine's values, with the same warning.
- Shapes and element types of image-path tensors by onnx.shape_inference on the image-path nodes
  with the folded constants; a tensor it leaves without a concrete shape is evaluated instead.
- No-op nodes on the image path (Identity, Dropout, Cast to the same type) are bypassed.
"""
from dataclasses import dataclass
import warnings

import numpy as np
from onnx import helper, numpy_helper, shape_inference
from onnx.reference import ReferenceEvaluator

from ..errors import IntsimWarning
from . import constant_ops
from .errors import OnnxImportError
from .model import ONode, opset_of

try:  # optional: faster and lighter on memory than the reference evaluator
    import onnxruntime
except ImportError:  # pragma: no cover
    onnxruntime = None

NOOPS = ("Identity", "Dropout", "Cast")   # bypassed on the image path (Cast only to the same type)
SHAPE_ONLY = ("Shape", "Size")          # read the shape of an image-dependent tensor, not its data
SMALL = 4096                            # constants up to this size go to shape inference with values
ENGINE = "auto"     # "auto" (ONNX Runtime when installed, else the reference evaluator) or "reference"


@dataclass
class Folded:
    """The image path of an ONNX graph after folding: what the matchers work on."""
    nodes: list          # image-path ONodes in graph order, no-ops bypassed
    live: set            # image-dependent tensor names
    const: dict          # name -> value of every constant an image-path node reads
    shapes: dict         # name -> shape at batch B, for image-path tensors and those constants
    producer: dict       # image-dependent tensor -> its ONode
    consumers: dict      # image-dependent tensor -> image-path ONodes reading it
    in_name: str
    out_names: list      # the outputs, after bypassing no-ops
    batch: int           # the concrete batch size B
    image: np.ndarray    # the seeded random image (B, C, H, W)
    onnx_outs: list      # the ONNX graph's outputs on that image


def image_path(nodes, in_name):
    """(nodes that depend on the image, in graph order; names of image-dependent tensors)."""
    live, path = {in_name}, []
    for n in nodes:
        if n.op not in SHAPE_ONLY and any(t in live for t in n.inputs):
            live.update(t for t in n.outputs if t)
            path.append(n)
    return path, live


def constant_inputs(path, live):
    """Names of the constants that image-path nodes read, in first-use order."""
    return list(dict.fromkeys(t for n in path for t in n.inputs if t and t not in live))


def constant_path(graph, names, live):
    """(nodes computing the constants `names`, in graph order, as (index, NodeProto); the tensors
    they read from outside: initializers and the outputs of Shape/Size nodes of image-path
    tensors). Walks back from `names` over nodes off the image path."""
    producer = {t: (i, p) for i, p in enumerate(graph.node) for t in p.output if t}
    taken, outside, seen, stack = {}, [], set(), list(names)
    while stack:
        t = stack.pop()
        if not t or t in seen:
            continue
        seen.add(t)
        i, p = producer.get(t, (None, None))
        if p is None or (p.op_type in SHAPE_ONLY and p.domain in ("", "ai.onnx")
                         and any(x in live for x in p.input)):
            outside.append(t)
        elif i not in taken:
            taken[i] = p
            stack.extend(_reads(p))
    return sorted(taken.items()), outside


def _reads(node):
    """The tensors a node reads: its inputs and the outer ones its subgraphs (If, Loop) use."""
    names = list(node.input)
    for a in node.attribute:
        for g in ([a.g] if a.HasField("g") else list(a.graphs)):
            made = ({v.name for v in g.input} | {v.name for v in g.initializer}
                    | {t for n in g.node for t in n.output})
            names += [t for n in g.node for t in _reads(n) if t not in made]
    return names


def fold_constants(model, source, nodes, names, feeds, fallback):
    """{name: value} of the constants `names`, computed by `nodes` ((index, NodeProto)) from
    `feeds`, by onnx.reference with constant_ops' deterministic float ops. Warns of each node whose
    value may differ between machines; takes `fallback` (the engine's values) with a warning if
    onnx.reference cannot evaluate the nodes."""
    opset = opset_of(model.opset_import)
    for i, p in nodes:
        why = constant_ops.unsupported(p, opset)
        if why:
            raise OnnxImportError(f"{source}: {ONode(p, i)!r} on a constant path: {why}")
    inner = [t for t in names if t not in feeds]
    if not inner:
        return {t: feeds[t] for t in names}
    graph = helper.make_graph([p for _, p in nodes], "constants",
                              [helper.make_empty_tensor_value_info(t) for t in feeds],
                              [helper.make_empty_tensor_value_info(t) for t in inner])
    sub = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                            functions=list(model.functions))
    try:
        values = ReferenceEvaluator(sub, new_ops=constant_ops.OPS).run(None, feeds, intermediate=True)
    except Exception as e:
        _warn(source, _suspects(nodes), f"onnx.reference cannot evaluate the constant path "
              f"({_one_line(e, 200)}), so the engine's values are taken")
        return {t: fallback[t] if t in fallback else feeds[t] for t in names}
    values = {**feeds, **values}
    _warn(source, [(i, p) for i, p in nodes if constant_ops.concern(p, values)],
          "computed in float by onnx.reference's NumPy code")
    return {t: values[t] for t in names}


def _suspects(nodes):
    """The nodes most likely to stop onnx.reference: of a custom domain, else of an op it may lack."""
    known = constant_ops.EXACT | constant_ops.OP_NAMES
    return ([(i, p) for i, p in nodes if p.domain not in ("", "ai.onnx")]
            or [(i, p) for i, p in nodes if p.op_type not in known] or nodes)


def _warn(source, nodes, what, limit=5):
    """One IntsimWarning per op kind among `nodes`, naming the nodes."""
    by_op = {}
    for n in (ONode(p, i) for i, p in nodes):
        by_op.setdefault(n.op, []).append(n.name)
    for op, names in by_op.items():
        listed = ", ".join(repr(n) for n in names[:limit]) + (f" and {len(names) - limit} more"
                                                              if len(names) > limit else "")
        several = len(names) > 1
        warnings.warn(IntsimWarning(f"{source}: {op} node{'s' if several else ''} {listed} on a constant "
                                    f"path: {what}; {'their values' if several else 'its value'} may "
                                    "differ in the last bit between machines"), stacklevel=3)


def evaluate(model, feeds, names):
    """{name: value} of tensors `names` (any in the graph) on `feeds`: by ONNX Runtime if it is
    installed (and ENGINE is "auto") and can run the model, else by the ONNX reference evaluator."""
    failed = ""
    if onnxruntime is not None and ENGINE == "auto":
        try:
            return _run_onnxruntime(model, feeds, names)
        except Exception as e:   # e.g. an opset newer than this ONNX Runtime: try the reference
            failed = f"ONNX Runtime: {_one_line(e)}; "
    try:
        return dict(zip(names, ReferenceEvaluator(model).run(list(names), feeds)))
    except Exception as e:
        raise RuntimeError(f"{failed}onnx.reference: {_one_line(e)}") from None


def _one_line(e, limit=400):
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[:limit] + " ..."


def _run_onnxruntime(model, feeds, names):
    outputs = list(model.graph.output)
    del model.graph.output[:]                # serialise with the wanted tensors as outputs
    model.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in names)
    try:
        data = model.SerializeToString()
    finally:
        del model.graph.output[:]
        model.graph.output.extend(outputs)
    opts = onnxruntime.SessionOptions()
    opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL   # as written
    opts.log_severity_level = 4         # failures are raised, not logged
    session = onnxruntime.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(list(names), feeds)))


def _value_info(name, value):
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)


def infer_types(model, path, image_name, image, const, out_names):
    """{tensor: (shape, dtype)} of the image-path tensors that shape inference resolves to a
    concrete shape; runs on the image-path nodes alone, with the constants they read given by
    value (small ones, which may be shapes or axes) or by type and shape (weights)."""
    small = [t for t, v in const.items() if v.size <= SMALL]
    graph = helper.make_graph(
        [n.proto for n in path], "image_path",
        [_value_info(image_name, image)] + [_value_info(t, v) for t, v in const.items() if v.size > SMALL],
        [helper.make_empty_tensor_value_info(t) for t in out_names],
        [numpy_helper.from_array(np.asarray(const[t]), t) for t in small])
    sub = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    try:
        inferred = shape_inference.infer_shapes(sub, strict_mode=True).graph
    except Exception:   # an op without an inference function, an inconsistent graph: evaluate
        return {}
    out = {}
    for vi in list(inferred.value_info) + list(inferred.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape") and tt.elem_type and all(d.HasField("dim_value") for d in tt.shape.dim):
            out[vi.name] = (tuple(d.dim_value for d in tt.shape.dim),
                            helper.tensor_dtype_to_np_dtype(tt.elem_type))
    return out


def bypass_noops(path, types, out_names):
    """Image-path nodes without Identity, Dropout and same-type Cast nodes, inputs rewired past
    them; and the outputs' names after the rewiring."""
    alias = {}

    def resolve(t):
        while t in alias:
            t = alias[t]
        return t
    kept = []
    for n in path:
        n.inputs = [resolve(t) for t in n.inputs]
        if n.op in NOOPS and (n.op != "Cast" or types[n.outputs[0]] == types[n.inputs[0]]):
            alias[n.outputs[0]] = n.inputs[0]
        else:
            kept.append(n)
    return kept, [resolve(t) for t in out_names]


def _engine_run(model, source, feeds, names, batch):
    try:
        return evaluate(model, feeds, names)
    except RuntimeError as e:
        raise OnnxImportError(f"{source}: evaluating the ONNX graph at batch {batch} failed: {e}") from None


def _wiring(nodes, live):
    producer = {t: n for n in nodes for t in n.outputs}
    consumers = {}
    for n in nodes:
        for t in dict.fromkeys(n.inputs):
            if t in live:
                consumers.setdefault(t, []).append(n)
    return producer, consumers


def fold(model, source, path, live, in_name, out_names, image):
    """Evaluate the constants and the output, find shapes, bypass no-ops: a Folded image path."""
    batch = image.shape[0]
    inits = {t.name: t for t in model.graph.initializer}
    wanted = constant_inputs(path, live)
    computed = [t for t in wanted if t not in inits]
    nodes, outside = constant_path(model.graph, computed, live)
    shapes_read = [t for t in outside if t not in inits and t != in_name]
    values = _engine_run(model, source, {in_name: image},
                         list(dict.fromkeys(computed + shapes_read + list(out_names))), batch)
    feeds = {t: numpy_helper.to_array(inits[t]) if t in inits else image if t == in_name else values[t]
             for t in outside}
    folded = fold_constants(model, source, nodes, computed, feeds, values)
    const = {t: numpy_helper.to_array(inits[t]) if t in inits else folded[t] for t in wanted}
    types = infer_types(model, path, in_name, image, const, out_names)
    types[in_name] = (image.shape, image.dtype)
    missing = [t for n in path for t in n.outputs if t and t not in types]
    if missing:
        more = _engine_run(model, source, {in_name: image}, missing, batch)
        types.update({t: (np.shape(v), np.asarray(v).dtype) for t, v in more.items()})
    shapes = {t: tuple(int(d) for d in s) for t, (s, _) in types.items()}
    shapes.update({t: tuple(np.shape(v)) for t, v in const.items()})
    nodes, outs = bypass_noops(path, {t: d for t, (_, d) in types.items()}, out_names)
    live = {t for n in nodes for t in n.outputs if t} | {in_name}
    producer, consumers = _wiring(nodes, live)
    return Folded(nodes, live, const, shapes, producer, consumers, in_name, outs, batch, image,
                  [values[t] for t in out_names])
