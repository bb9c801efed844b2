"""Import a Vision Transformer from ONNX into the semantic graph (intsim.graph).

    graph = load_onnx("models/fmnist_vit_dynamo18.onnx")

Steps:
1. Parse and check the model (onnx.load, onnx.checker); exactly one float image input
   (N, C, H, W) whose only free dimension is the batch.
2. Run the whole ONNX graph once with a small NumPy evaluator of our own on a seeded random
   image at a concrete batch size B (2 unless the model fixes it). Every tensor that does not
   depend on the image is a constant: this folds Constant/Identity, shape subgraphs (Shape, Gather,
   Unsqueeze, Concat, ConstantOfShape, Equal, Where, Expand, Slice, ...) and weight transposes,
   and gives every tensor its concrete shape. An op the evaluator lacks is unsupported.
3. Pattern-match the image-dependent nodes into semantic ops. Each pattern is anchored at a
   distinctive op (Conv, Concat, LayerNormalization/ReduceMean, MatMul, Gemm, Softmax, Erf, Add,
   Gather/Slice) and claims the ONNX nodes it explains. Pure data-movement chains (Reshape,
   Transpose, Split, Slice, Gather, Squeeze, Flatten, ...) are not matched by their op sequence but
   checked by what they do: they are run on a tensor of distinct labels and compared with the
   semantic op's definition (e.g. timm's qkv reshape/permute), so any exporter's variant of the same
   data movement is accepted and any other is rejected. Every image-dependent node must be claimed.
4. Name the nodes from the module names the exporter recorded (legacy: node names such as
   "/blocks/blocks.0/attn/qkv/MatMul"; dynamo: the pkg.torch.onnx.name_scopes metadata), falling
   back to timm's canonical names ("blocks.3.mlp.fc1") when those are missing or ambiguous.
5. Validate, and check the semantic graph against the ONNX evaluation of step 2 (float_ref on the
   same random image): a wrong match cannot go unnoticed.
"""
import ast
import math
import os
import re
from pathlib import Path

import numpy as np

from .errors import IntsimError
from .float_ref import run_float
from .floatfn import erf, layer_norm, softmax
from .graph import Graph, Node
from .ops.patch_embed import unfold_patches

try:  # onnx is a runtime dependency, but keep the error readable if it is missing
    import onnx
    from onnx import numpy_helper
except ImportError:  # pragma: no cover
    onnx = None


class OnnxImportError(IntsimError):
    """The ONNX model cannot be imported: unreadable, unsupported op or pattern, bad input."""


class _NoMatch(Exception):
    """Internal: a pattern does not apply at this anchor."""


def _need(cond):
    if not cond:
        raise _NoMatch


# ------------------------------------------------------------------------------------------------
# ONNX node records and the NumPy evaluator
# ------------------------------------------------------------------------------------------------
class _ONode:
    """An ONNX node with decoded attributes, its position and its module scope (or None)."""
    __slots__ = ("name", "op", "inputs", "outputs", "attrs", "index", "scope", "noop")

    def __init__(self, proto, index):
        self.name = proto.name or f"{proto.op_type}_{index}"
        self.op = proto.op_type if proto.domain in ("", "ai.onnx") else f"{proto.domain}.{proto.op_type}"
        self.inputs = list(proto.input)
        self.outputs = list(proto.output)
        self.attrs = {}
        for a in proto.attribute:
            v = onnx.helper.get_attribute_value(a)
            if isinstance(v, bytes):
                v = v.decode()
            elif isinstance(v, onnx.TensorProto):
                v = numpy_helper.to_array(v)
            self.attrs[a.name] = v
        self.index = index
        self.scope = _scope_of(proto)
        self.noop = False     # set by the evaluator: Identity, Dropout, Cast to the same type

    def __repr__(self):
        return f"{self.op} node {self.name!r}"


def _scope_of(proto):
    """Module path of a node ('blocks.0.attn.qkv'), '' for the root module, None if unknown."""
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


def _int_div(a, b):
    """ONNX integer Div truncates toward zero."""
    q = a // b
    return np.where((a % b != 0) & ((a < 0) != (b < 0)), q + 1, q)


def _axes(n, ins, pos):
    """Axes given as attribute (older opsets) or as input `pos` (newer)."""
    if "axes" in n.attrs:
        return [int(a) for a in n.attrs["axes"]]
    if len(ins) > pos and ins[pos] is not None:
        return [int(a) for a in np.asarray(ins[pos]).reshape(-1)]
    return None


def _unsqueeze(n, ins, ctx):
    x, axes = ins[0], _axes(n, ins, 1)
    r = x.ndim + len(axes)
    for a in sorted(a % r for a in axes):
        x = np.expand_dims(x, a)
    return [x]


def _squeeze(n, ins, ctx):
    axes = _axes(n, ins, 1)
    return [np.squeeze(ins[0], axis=None if axes is None else tuple(a % ins[0].ndim for a in axes))]


def _slice(n, ins, ctx):
    x = ins[0]
    if "starts" in n.attrs:                       # opset < 10
        starts, ends = n.attrs["starts"], n.attrs["ends"]
        axes, steps = n.attrs.get("axes"), None
    else:
        starts, ends = ins[1].tolist(), ins[2].tolist()
        axes = ins[3].tolist() if len(ins) > 3 and ins[3] is not None else None
        steps = ins[4].tolist() if len(ins) > 4 and ins[4] is not None else None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    idx = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        idx[int(a) % x.ndim] = slice(int(s), int(e), int(st))
    return [x[tuple(idx)]]


def _reshape(n, ins, ctx):
    x, shape = ins[0], [int(s) for s in ins[1]]
    if not n.attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [x.reshape(shape)]


def _split(n, ins, ctx):
    x, axis = ins[0], int(n.attrs.get("axis", 0))
    if len(ins) > 1 and ins[1] is not None:
        sizes = [int(s) for s in ins[1]]
    elif "split" in n.attrs:
        sizes = [int(s) for s in n.attrs["split"]]
    else:
        k = int(n.attrs.get("num_outputs", len(n.outputs)))
        chunk = -(-x.shape[axis] // k)
        sizes = [min(chunk, x.shape[axis] - i * chunk) for i in range(k)]
    return np.split(x, np.cumsum(sizes)[:-1], axis=axis)


def _gemm(n, ins, ctx):
    a, b = ins[0], ins[1]
    a = a.T if n.attrs.get("transA", 0) else a
    b = b.T if n.attrs.get("transB", 0) else b
    y = a @ b * a.dtype.type(n.attrs.get("alpha", 1.0))
    if len(ins) > 2 and ins[2] is not None:
        y = y + ins[2] * a.dtype.type(n.attrs.get("beta", 1.0))
    return [y]


def _conv(n, ins, ctx):
    """Only the patch-embedding convolution: kernel = stride, no padding, dilation 1, group 1."""
    x, w = ins[0], ins[1]
    ks = list(n.attrs.get("kernel_shape", w.shape[2:]))
    p = _patch_of(n, w)
    if p is None:
        raise OnnxImportError(
            f"{n!r}: only the patch-embedding Conv is supported (2-D, square kernel = stride, no "
            f"padding, dilation 1, group 1); got kernel {ks}, strides {n.attrs.get('strides')}, "
            f"pads {n.attrs.get('pads')}, dilations {n.attrs.get('dilations')}, group "
            f"{n.attrs.get('group', 1)}, auto_pad {n.attrs.get('auto_pad', 'NOTSET')}")
    b = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros(w.shape[0], x.dtype)
    y = unfold_patches(x, p) @ w.reshape(w.shape[0], -1).T + b     # (N, P, D)
    return [y.transpose(0, 2, 1).reshape(x.shape[0], w.shape[0], x.shape[2] // p, x.shape[3] // p)]


def _patch_of(n, w):
    a = n.attrs
    ks = list(a.get("kernel_shape", w.shape[2:]))
    ok = (w.ndim == 4 and len(ks) == 2 and ks[0] == ks[1] and list(a.get("strides", [1, 1])) == ks
          and not any(a.get("pads", [0] * 4)) and all(d == 1 for d in a.get("dilations", [1, 1]))
          and a.get("group", 1) == 1 and a.get("auto_pad", "NOTSET") in ("NOTSET", "VALID"))
    return int(ks[0]) if ok else None


def _reduce_mean(n, ins, ctx):
    axes = _axes(n, ins, 1)
    if axes is None and n.attrs.get("noop_with_empty_axes", 0):
        return [ins[0]]
    keep = bool(n.attrs.get("keepdims", 1))
    return [np.mean(ins[0], axis=None if axes is None else tuple(axes), keepdims=keep)]


def _layer_norm_op(n, ins, ctx):
    x, axis = ins[0], int(n.attrs.get("axis", -1))
    if axis % x.ndim != x.ndim - 1:
        raise OnnxImportError(f"{n!r}: LayerNormalization over axis {axis} of a rank-{x.ndim} "
                              "tensor; only the last axis is supported")
    b = ins[2] if len(ins) > 2 and ins[2] is not None else 0
    return [layer_norm(x, ins[1], b, float(n.attrs.get("epsilon", 1e-5)))] + [None] * (len(n.outputs) - 1)


def _softmax_op(n, ins, ctx):
    x = ins[0]
    axis = _softmax_axis(n, x.ndim, ctx["opset"])
    if axis == x.ndim - 1:
        return [softmax(x)]
    if ctx["opset"] < 13:                     # old semantics: softmax over the flattened tail
        return [softmax(x.reshape(x.shape[:axis] + (-1,))).reshape(x.shape)]
    return [np.moveaxis(softmax(np.moveaxis(x, axis, -1)), -1, axis)]


def _softmax_axis(n, rank, opset):
    return int(n.attrs.get("axis", -1 if opset >= 13 else 1)) % rank


def _constant(n, ins, ctx):
    a = n.attrs
    for key, conv in (("value", np.asarray), ("value_float", lambda v: np.array(v, np.float32)),
                      ("value_floats", lambda v: np.array(v, np.float32)),
                      ("value_int", lambda v: np.array(v, np.int64)),
                      ("value_ints", lambda v: np.array(v, np.int64))):
        if key in a:
            return [conv(a[key])]
    raise OnnxImportError(f"{n!r}: Constant without a supported value attribute ({list(a)})")


def _cast(n, ins, ctx):
    return [ins[0].astype(onnx.helper.tensor_dtype_to_np_dtype(n.attrs["to"]))]


def _erf_op(n, ins, ctx):
    x = ins[0]
    return [erf(x) if x.dtype in (np.float32, np.float64) else erf(x.astype(np.float64)).astype(x.dtype)]


def _binary(f):
    return lambda n, ins, ctx: [np.asarray(f(ins[0], ins[1]))]


def _unary(f):
    return lambda n, ins, ctx: [np.asarray(f(ins[0]))]


_EVAL = {
    "Identity": lambda n, ins, ctx: [ins[0]],
    "Dropout": lambda n, ins, ctx: [ins[0]] + [np.ones(ins[0].shape, bool)] * (len(n.outputs) - 1),
    "Constant": _constant,
    "Cast": _cast,
    "Shape": lambda n, ins, ctx: [np.array(ins[0].shape[n.attrs.get("start", 0):n.attrs.get("end", None)],
                                           np.int64)],
    "Size": lambda n, ins, ctx: [np.array(ins[0].size, np.int64)],
    "ConstantOfShape": lambda n, ins, ctx: [np.full(
        [int(s) for s in ins[0]], n.attrs.get("value", np.zeros(1, np.float32)).reshape(-1)[0])],
    "Gather": lambda n, ins, ctx: [np.take(ins[0], ins[1], axis=int(n.attrs.get("axis", 0)))],
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": lambda n, ins, ctx: [np.concatenate(ins, axis=int(n.attrs["axis"]))],
    "Slice": _slice,
    "Reshape": _reshape,
    "Flatten": lambda n, ins, ctx: [ins[0].reshape(
        int(np.prod(ins[0].shape[:int(n.attrs.get("axis", 1)) % (ins[0].ndim + 1)])), -1)],
    "Transpose": lambda n, ins, ctx: [np.transpose(ins[0], n.attrs.get("perm"))],
    "Split": _split,
    "Expand": lambda n, ins, ctx: [np.array(np.broadcast_to(
        ins[0], np.broadcast_shapes(ins[0].shape, tuple(int(s) for s in ins[1]))))],
    "Range": lambda n, ins, ctx: [np.arange(ins[0], ins[1], ins[2]).astype(ins[0].dtype)],
    "Equal": _binary(np.equal), "Less": _binary(np.less), "Greater": _binary(np.greater),
    "And": _binary(np.logical_and), "Or": _binary(np.logical_or), "Not": _unary(np.logical_not),
    "Where": lambda n, ins, ctx: [np.where(ins[0], ins[1], ins[2])],
    "Add": _binary(np.add), "Sub": _binary(np.subtract), "Mul": _binary(np.multiply),
    "Div": _binary(lambda a, b: _int_div(a, b) if a.dtype.kind in "iu" else a / b),
    "Pow": _binary(lambda a, b: np.power(a, b).astype(a.dtype)),
    "Min": lambda n, ins, ctx: [np.minimum.reduce(ins)], "Max": lambda n, ins, ctx: [np.maximum.reduce(ins)],
    "Neg": _unary(np.negative), "Abs": _unary(np.abs), "Sqrt": _unary(np.sqrt),
    "Reciprocal": _unary(lambda x: 1 / x), "Erf": _erf_op,
    "MatMul": _binary(np.matmul), "Gemm": _gemm, "Conv": _conv,
    "ReduceMean": _reduce_mean, "LayerNormalization": _layer_norm_op, "Softmax": _softmax_op,
}
SUPPORTED_OPS = tuple(sorted(_EVAL))

# Data-movement ops: one image-dependent data input (input 0), all other inputs constant.
_LAYOUT = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Split", "Slice", "Gather"}

PATTERNS = ("patch embedding Conv -> Reshape/Flatten -> Transpose; cls token Expand + Concat and "
            "position Add; LayerNormalization or ReduceMean-Sub-Pow-ReduceMean-Add-Sqrt-Div-Mul-Add; "
            "MatMul(+Add) or Gemm with constant weights; attention qkv -> Reshape/Transpose/Split -> "
            "scale Mul -> MatMul(q, k^T) -> Softmax -> MatMul(., v) -> Transpose/Reshape; "
            "Erf-GELU; residual Add; cls token select (Gather/Slice)")


# ------------------------------------------------------------------------------------------------
# Loading and checking
# ------------------------------------------------------------------------------------------------
def _load_proto(src):
    if onnx is None:  # pragma: no cover
        raise OnnxImportError("the 'onnx' package is needed to import ONNX models (pip install onnx)")
    if isinstance(src, onnx.ModelProto):
        return src, "<ModelProto>"
    path = Path(os.fspath(src))
    if not path.is_file():
        raise OnnxImportError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError, missing external data, ...
        raise OnnxImportError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    return model, str(path)


def _check_proto(model, source, path=None):
    if not model.graph.node or not model.opset_import:
        raise OnnxImportError(f"{source}: not an ONNX model (no graph nodes or no opset); is the file "
                              "corrupt or not ONNX?")
    try:    # given a path, the checker reads the file itself instead of re-serialising the model
        onnx.checker.check_model(model if path is None else path)
    except Exception as e:
        raise OnnxImportError(f"{source}: the ONNX checker rejects the model: {e}") from None


def _image_input(model, source):
    """(name, (C, H, W), batch or None, dtype) of the single image input."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise OnnxImportError(f"{source}: expected one image input, found {len(inputs)} "
                              f"({', '.join(i.name for i in inputs)})")
    inp = inputs[0]
    tt = inp.type.tensor_type
    if not inp.type.HasField("tensor_type") or tt.elem_type not in (onnx.TensorProto.FLOAT,
                                                                     onnx.TensorProto.DOUBLE):
        raise OnnxImportError(f"{source}: input {inp.name!r} must be a float or double tensor")
    if not tt.HasField("shape") or len(tt.shape.dim) != 4:
        rank = len(tt.shape.dim) if tt.HasField("shape") else "unknown"
        raise OnnxImportError(f"{source}: input {inp.name!r} has rank {rank}; a ViT takes images of "
                              "rank 4 (N, C, H, W)")
    dims = list(tt.shape.dim)
    chw = []
    for i, d in enumerate(dims[1:], start=1):
        if not d.HasField("dim_value") or d.dim_value <= 0:
            what = f"symbolic '{d.dim_param}'" if d.HasField("dim_param") else "unknown"
            raise OnnxImportError(f"{source}: input {inp.name!r} dimension {i} ({'NCHW'[i]}) is {what}; "
                                  "only the batch dimension (0) may be dynamic")
        chw.append(int(d.dim_value))
    batch = int(dims[0].dim_value) if dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    return inp.name, tuple(chw), batch, onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)


# ------------------------------------------------------------------------------------------------
# The importer
# ------------------------------------------------------------------------------------------------
def load_onnx(src, verify=True, seed=0):
    """Import an ONNX ViT (file path or onnx.ModelProto) into a semantic Graph.

    verify: evaluate the semantic graph (float_ref) and the ONNX graph (this module's evaluator)
    on one seeded random image batch and raise OnnxImportError if they disagree."""
    model, source = _load_proto(src)
    _check_proto(model, source, None if source == "<ModelProto>" else source)
    return _Importer(model, source, seed).run(verify)


class _Importer:
    def __init__(self, model, source, seed):
        self.model, self.source, self.seed = model, source, seed
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.in_name, self.in_shape, fixed_batch, self.in_dtype = _image_input(model, source)
        self.B = fixed_batch or 2
        self.nodes = [_ONode(p, i) for i, p in enumerate(model.graph.node)]
        outs = list(model.graph.output)
        if len(outs) != 1:
            raise OnnxImportError(f"{source}: expected one output (the logits), found {len(outs)} "
                                  f"({', '.join(o.name for o in outs)})")
        self.out_name = outs[0].name

    # --- step 2: evaluate, fold, shapes --------------------------------------------------------
    def _evaluate(self):
        rng = np.random.default_rng(self.seed)
        self.image = rng.standard_normal((self.B,) + self.in_shape).astype(self.in_dtype)
        const = {t.name: numpy_helper.to_array(t) for t in self.model.graph.initializer}
        const[""] = None                                  # omitted optional input
        live_vals = {self.in_name: self.image}
        shapes = {self.in_name: self.image.shape}
        uses = {}
        for n in self.nodes:
            for t in n.inputs:
                uses[t] = uses.get(t, 0) + 1
        ctx = {"opset": self.opset}
        live_nodes = []
        for n in self.nodes:
            if n.op not in _EVAL:
                raise OnnxImportError(
                    f"{self.source}: {n!r}: op {n.op} is not supported by intsim's ViT importer. "
                    f"Supported ops: {', '.join(SUPPORTED_OPS)}")
            is_live = any(t in live_vals for t in n.inputs) and n.op not in ("Shape", "Size")
            try:
                ins = [live_vals[t] if t in live_vals else const[t] for t in n.inputs]
            except KeyError as e:
                raise OnnxImportError(f"{self.source}: {n!r} reads tensor {e}, which nothing "
                                      "produces") from None
            try:
                outs = _EVAL[n.op](n, ins, ctx)
            except OnnxImportError as e:
                raise OnnxImportError(f"{self.source}: {e}") from None
            except Exception as e:
                shp = [None if v is None else tuple(np.shape(v)) for v in ins]
                raise OnnxImportError(f"{self.source}: {n!r} ({n.op}) failed on input shapes {shp} at "
                                      f"batch {self.B}: {type(e).__name__}: {e}") from None
            for t, v in zip(n.outputs, outs):
                if not t:
                    continue
                if v is not None:
                    shapes[t] = tuple(np.shape(v))
                (live_vals if is_live else const)[t] = v
            if is_live:
                live_nodes.append(n)
                n.noop = n.op in ("Identity", "Dropout") or (n.op == "Cast" and outs[0].dtype == ins[0].dtype)
            for t in n.inputs:  # drop image-dependent values after their last use
                uses[t] -= 1
                if uses[t] == 0 and t in live_vals and t != self.out_name:
                    del live_vals[t]
        if self.out_name not in live_vals:
            raise OnnxImportError(f"{self.source}: output {self.out_name!r} does not depend on the input")
        self.onnx_out = live_vals[self.out_name]
        self.const, self.shapes = const, shapes
        alias = {}      # bypass image-dependent no-op nodes
        resolve = lambda t: resolve(alias[t]) if t in alias else t       # noqa: E731
        kept = []
        for n in live_nodes:
            n.inputs = [resolve(t) for t in n.inputs]
            if n.noop:
                alias[n.outputs[0]] = n.inputs[0]
            else:
                kept.append(n)
        live_nodes, self.out_name = kept, resolve(self.out_name)
        self.live = {t for n in live_nodes for t in n.outputs if t} | {self.in_name}
        self.live_nodes = live_nodes
        self.producer = {t: n for n in live_nodes for t in n.outputs}
        self.consumers = {}
        for n in live_nodes:
            for t in set(n.inputs):
                if t in self.live:
                    self.consumers.setdefault(t, []).append(n)

    # --- helpers for the matchers --------------------------------------------------------------
    def c(self, t):
        """Constant value of tensor t, or raise _NoMatch if t depends on the image."""
        _need(t and t not in self.live and self.const.get(t) is not None)
        return self.const[t]

    def scalar(self, t):
        v = self.c(t)
        _need(v.size == 1 and v.dtype.kind == "f")
        return float(v.reshape(-1)[0])

    def cons(self, t):
        return self.consumers.get(t, [])

    def sole(self, t, op=None):
        """The single image-dependent consumer of t (of type op), else _NoMatch."""
        cs = self.cons(t)
        _need(len(cs) == 1 and t != self.out_name and (op is None or cs[0].op in op))
        return cs[0]

    def split_live(self, n):
        """(live input, constant input) of a binary node with exactly one image-dependent input."""
        a, b = n.inputs[0], n.inputs[1]
        _need((a in self.live) != (b in self.live))
        return (a, b) if a in self.live else (b, a)

    def scalar_factor(self, n):
        """Mul/Div of a live tensor by a constant scalar: (live input, factor)."""
        _need(n.op in ("Mul", "Div") and len(n.inputs) == 2)
        x, k = self.split_live(n)
        v = self.scalar(k)
        if n.op == "Div":
            _need(k == n.inputs[1] and v != 0)
            v = 1.0 / v
        return x, v

    def sem(self, t):
        _need(t in self.sem_of)
        return self.sem_of[t]

    def is_layout(self, n):
        return (n.op in _LAYOUT and n.inputs[0] in self.live
                and all(t not in self.live for t in n.inputs[1:]))

    def chain_from(self, first):
        """The layout chain starting at node `first`, continued while each output has exactly one
        consumer that is a single-output layout node."""
        chain = [first]
        while True:
            t = chain[-1].outputs[0]
            cs = self.cons(t)
            if len(cs) != 1 or t == self.out_name or not self.is_layout(cs[0]) or len(cs[0].outputs) != 1:
                return chain
            chain.append(cs[0])

    def trace_back(self, t):
        """Walk from t back through layout nodes and scalar Mul/Div: (source, nodes, factor)."""
        nodes, factor = [], 1.0
        while t in self.producer:
            p = self.producer[t]
            if self.is_layout(p):
                nodes.append(p)
                t = p.inputs[0]
                continue
            try:
                t, f = self.scalar_factor(p)
            except _NoMatch:
                break
            nodes.append(p)
            factor *= f
        return t, nodes, factor

    def run_layout(self, nodes, src):
        """Run layout nodes (scalar Mul/Div as identity) on a tensor of distinct labels in place of
        src; returns (labels, values of all tensors)."""
        label = np.arange(int(np.prod(self.shapes[src])), dtype=np.float64).reshape(self.shapes[src])
        env = {src: label}
        for n in sorted(nodes, key=lambda n: n.index):
            if n.op in ("Mul", "Div"):
                env[n.outputs[0]] = env[self.split_live(n)[0]]
                continue
            ins = []
            for i, t in enumerate(n.inputs):
                if i == 0:
                    _need(t in env)
                    ins.append(env[t])
                else:
                    ins.append(self.const.get(t))
            for t, v in zip(n.outputs, _EVAL[n.op](n, ins, {"opset": self.opset})):
                env[t] = v
        return label, env

    def match_chain(self, chain, src, expected_of):
        """Longest prefix of `chain` whose effect on labels equals expected_of(labels): its end tensor."""
        for k in range(len(chain), 0, -1):
            try:
                label, env = self.run_layout(chain[:k], src)
            except _NoMatch:
                continue
            got, want = env[chain[k - 1].outputs[0]], expected_of(label)
            if got.shape == want.shape and np.array_equal(got, want):
                return chain[:k]
        raise _NoMatch

    def emit(self, op, inputs, n_out, claimed, outs_onnx, params=None, attrs=None, role=None, scope=None):
        """Record a semantic node: inputs are semantic tensor ids, outs_onnx the ONNX tensors its
        outputs stand for (None for outputs without one)."""
        k = len(self.sem_nodes)
        node = Node(op, f"%{k}", list(inputs), [f"%{k}:{i}" for i in range(n_out)], params or {}, attrs or {})
        self.sem_nodes.append(node)
        self.info[node.name] = dict(role=role, scope=scope, onnx=[n.name for n in claimed])
        for n in claimed:
            self.claimed.add(id(n))
        for t, s in zip(outs_onnx, node.outputs):
            if t is not None:
                self.sem_of[t] = s
        return node

    # --- step 3: the patterns ------------------------------------------------------------------
    def m_patch_embed(self, n):
        _need(n.inputs[0] == self.in_name)
        w = self.c(n.inputs[1])
        p = _patch_of(n, w)
        _need(p is not None)
        b = self.c(n.inputs[2]) if len(n.inputs) > 2 and n.inputs[2] else np.zeros(w.shape[0], w.dtype)
        first = self.sole(n.outputs[0])
        _need(self.is_layout(first))
        chain = self.match_chain(self.chain_from(first), n.outputs[0],
                                 lambda x: x.reshape(x.shape[0], x.shape[1], -1).transpose(0, 2, 1))
        self.emit("PatchEmbed", [self.sem_of[self.in_name]], 1, [n] + chain, [chain[-1].outputs[0]],
                  dict(weight=w.copy(), bias=b.copy()), dict(patch=p), role="patch_embed", scope=n.scope)

    def _batch_free(self, v, shape):
        """A constant broadcast over the batch as an array of `shape`, else _NoMatch."""
        v = np.asarray(v)
        while v.ndim > len(shape):
            _need(v.shape[0] in (1, self.B) and (v == v[:1]).all())
            v = v[0]
        _need(v.shape == tuple(shape))
        return v.copy()

    def m_cls_pos(self, n):
        _need(len(n.inputs) == 2 and n.inputs[1] in self.live and n.inputs[0] not in self.live)
        x = n.inputs[1]
        shp = self.shapes[x]
        _need(len(shp) == 3 and int(n.attrs["axis"]) % 3 == 1)
        cls = self._batch_free(self.c(n.inputs[0]), (1, shp[2]))[0]
        out, claimed = n.outputs[0], [n]
        t = shp[1] + 1
        pos = np.zeros((t, shp[2]), cls.dtype)
        try:
            add = self.sole(out, ("Add",))
            pos = self._batch_free(self.c(self.split_live(add)[1]), (t, shp[2]))
            out = add.outputs[0]
            claimed.append(add)
        except _NoMatch:
            pass
        self.emit("ClsPos", [self.sem(x)], 1, claimed, [out], dict(cls=cls, pos=pos), role="cls_pos",
                  scope=n.scope)

    def _last_axis(self, n, x):
        axes = _axes(n, [None] + [self.const.get(t) for t in n.inputs[1:]], 1)
        r = len(self.shapes[x])
        _need(axes is not None and [a % r for a in axes] == [r - 1] and n.attrs.get("keepdims", 1))

    def m_layernorm_fused(self, n):
        x = n.inputs[0]
        _need(int(n.attrs.get("axis", -1)) % len(self.shapes[x]) == len(self.shapes[x]) - 1)
        d = self.shapes[x][-1]
        gamma = self.c(n.inputs[1]).reshape(d)
        beta = (self.c(n.inputs[2]).reshape(d) if len(n.inputs) > 2 and n.inputs[2]
                else np.zeros(d, gamma.dtype))
        self.emit("LayerNorm", [self.sem(x)], 1, [n], [n.outputs[0]],
                  dict(gamma=gamma.copy(), beta=beta.copy()), dict(eps=float(n.attrs.get("epsilon", 1e-5))),
                  role="layernorm", scope=n.scope)

    def m_layernorm_decomposed(self, n):
        x = n.inputs[0]
        self._last_axis(n, x)
        sub = self.sole(n.outputs[0], ("Sub",))
        _need(sub.inputs == [x, n.outputs[0]])
        dev = sub.outputs[0]
        cs = self.cons(dev)
        sq = [c for c in cs if c.op == "Pow" or (c.op == "Mul" and c.inputs == [dev, dev])]
        _need(len(sq) == 1 and len(cs) == 2)
        sq = sq[0]
        if sq.op == "Pow":
            _need(sq.inputs[0] == dev and self.scalar(sq.inputs[1]) == 2.0)
        var = self.sole(sq.outputs[0], ("ReduceMean",))
        self._last_axis(var, sq.outputs[0])
        add = self.sole(var.outputs[0], ("Add",))
        eps = self.scalar(self.split_live(add)[1])
        sqrt = self.sole(add.outputs[0], ("Sqrt",))
        nrm = [c for c in cs if c is not sq][0]
        claimed = [n, sub, sq, var, add, sqrt, nrm]
        if nrm.op == "Div":
            _need(nrm.inputs == [dev, sqrt.outputs[0]] and self.sole(sqrt.outputs[0]) is nrm)
        else:                                      # Reciprocal(sqrt) then Mul(dev, r)
            rec = self.sole(sqrt.outputs[0], ("Reciprocal",))
            _need(nrm.op == "Mul" and set(nrm.inputs) == {dev, rec.outputs[0]})
            claimed.append(rec)
        d = self.shapes[x][-1]
        out, gamma, beta = nrm.outputs[0], np.ones(d, np.float32), np.zeros(d, np.float32)
        for op in ("Mul", "Add"):                  # optional affine part: * gamma, + beta
            try:
                m = self.sole(out, (op,))
                v = self._batch_free(self.c(self.split_live(m)[1]), (d,))
            except _NoMatch:
                continue
            gamma, beta = (v, beta) if op == "Mul" else (gamma, v)
            out = m.outputs[0]
            claimed.append(m)
        gamma, beta = gamma.astype(np.result_type(gamma, beta)), beta.astype(np.result_type(gamma, beta))
        self.emit("LayerNorm", [self.sem(x)], 1, claimed, [out], dict(gamma=gamma, beta=beta),
                  dict(eps=eps), role="layernorm", scope=n.scope)

    def _bias_after(self, t, n_out):
        """An Add of a constant (Out,) bias consuming t: (node, bias) or (None, None)."""
        try:
            add = self.sole(t, ("Add",))
            return add, self._batch_free(self.c(self.split_live(add)[1]), (n_out,))
        except _NoMatch:
            return None, None

    def m_linear(self, n):
        x = n.inputs[0]
        _need(x in self.live and n.inputs[1] not in self.live)
        w = self.c(n.inputs[1])
        _need(w.ndim == 2 and w.dtype.kind == "f")
        add, bias = self._bias_after(n.outputs[0], w.shape[1])
        params = dict(weight=np.ascontiguousarray(w.T))
        claimed, out = [n], n.outputs[0]
        if add is not None:
            params["bias"], out = bias, add.outputs[0]
            claimed.append(add)
        self.emit("Linear", [self.sem(x)], 1, claimed, [out], params, role="linear", scope=n.scope)

    def m_gemm(self, n):
        x = n.inputs[0]
        _need(x in self.live and n.inputs[1] not in self.live and not n.attrs.get("transA", 0))
        w = self.c(n.inputs[1])
        w = w if n.attrs.get("transB", 0) else w.T
        w = (w * w.dtype.type(n.attrs.get("alpha", 1.0))).astype(w.dtype)
        params = dict(weight=np.ascontiguousarray(w))
        if len(n.inputs) > 2 and n.inputs[2]:
            c = self.c(n.inputs[2])
            b = np.full(w.shape[0], c.reshape(-1)[0]) if c.size == 1 else self._batch_free(c, (w.shape[0],))
            params["bias"] = (b * b.dtype.type(n.attrs.get("beta", 1.0))).astype(w.dtype)
        out, claimed = n.outputs[0], [n]
        add, bias = self._bias_after(out, w.shape[0])
        if add is not None:
            params["bias"] = params.get("bias", 0) + bias
            out = add.outputs[0]
            claimed.append(add)
        self.emit("Linear", [self.sem(x)], 1, claimed, [out], params, role="linear", scope=n.scope)

    def m_attn_scores(self, n):
        a, b = n.inputs
        _need(a in self.live and b in self.live and self.producer.get(a, n).op != "Softmax")
        src, na, fa = self.trace_back(a)
        src_b, nb, fb = self.trace_back(b)
        _need(src == src_b and na and nb)
        qshape, sshape = self.shapes[a], self.shapes[src]
        _need(len(qshape) == 4 and len(sshape) == 3)
        heads = qshape[1]
        _need(sshape[2] % (3 * heads) == 0)

        def qkv(lbl):
            n_, t_, d3 = lbl.shape
            return lbl.reshape(n_, t_, 3, heads, d3 // (3 * heads)).transpose(2, 0, 3, 1, 4)
        for nodes, tgt, want in ((na, a, lambda l: qkv(l)[0]), (nb, b, lambda l: qkv(l)[1].swapaxes(-1, -2))):
            label, env = self.run_layout(nodes, src)
            got, exp = env[tgt], want(label)
            _need(got.shape == exp.shape and np.array_equal(got, exp))
        out, fpost, claimed = n.outputs[0], 1.0, [n] + na + nb
        try:
            post = self.sole(out, ("Mul", "Div"))
            _, fpost = self.scalar_factor(post)
            out = post.outputs[0]
            claimed.append(post)
        except _NoMatch:
            pass
        scale = fa * fb * fpost
        _need(math.isfinite(scale) and scale > 0)
        split = self.splits.get(src)
        if split is None:
            split = self.emit("QKVSplit", [self.sem(src)], 3, [], [None] * 3, attrs=dict(heads=heads),
                              role="split", scope=n.scope)
            self.splits[src] = split
        _need(split.attrs["heads"] == heads)
        self.emit("AttnScores", split.outputs[:2], 1, claimed, [out], attrs=dict(scale=scale),
                  role="scores", scope=n.scope)

    def m_attn_context(self, n):
        p, v = n.inputs
        _need(p in self.live and v in self.live and self.producer.get(p, n).op == "Softmax")
        src, nv, fv = self.trace_back(v)
        split = self.splits.get(src)
        _need(split is not None and fv == 1.0)
        heads = split.attrs["heads"]
        label, env = self.run_layout(nv, src)
        t_, d3 = label.shape[1:]
        want = label.reshape(label.shape[0], t_, 3, heads, d3 // (3 * heads)).transpose(2, 0, 3, 1, 4)[2]
        _need(env[v].shape == want.shape and np.array_equal(env[v], want))
        first = self.sole(n.outputs[0])
        _need(self.is_layout(first))
        chain = self.match_chain(self.chain_from(first), n.outputs[0],
                                 lambda x: x.transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1))
        self.emit("AttnContext", [self.sem(p), split.outputs[2]], 1, [n] + nv + chain,
                  [chain[-1].outputs[0]], role="context", scope=n.scope)

    def m_softmax(self, n):
        x = n.inputs[0]
        _need(_softmax_axis(n, len(self.shapes[x]), self.opset) == len(self.shapes[x]) - 1)
        self.emit("Softmax", [self.sem(x)], 1, [n], [n.outputs[0]], role="softmax", scope=n.scope)

    def m_gelu(self, n):
        _need(n.inputs[0] in self.producer)
        pre = self.producer[n.inputs[0]]
        x, f = self.scalar_factor(pre)
        _need(abs(f - 1 / math.sqrt(2)) < 1e-5 and self.sole(pre.outputs[0]) is n)
        add1 = self.sole(n.outputs[0], ("Add",))
        _need(self.scalar(self.split_live(add1)[1]) == 1.0)
        m1 = self.sole(add1.outputs[0], ("Mul",))
        claimed = [pre, n, add1, m1]
        other = m1.inputs[1] if m1.inputs[0] == add1.outputs[0] else m1.inputs[0]

        def is_half(node):
            try:
                y, h = self.scalar_factor(node)
            except _NoMatch:
                return None
            return y if abs(h - 0.5) < 1e-7 else None
        if other == x:                             # x * (1 + erf) then * 0.5
            m2 = self.sole(m1.outputs[0], ("Mul", "Div"))
            _need(is_half(m2) == m1.outputs[0])
            claimed.append(m2)
        elif other not in self.live:               # (1 + erf) * 0.5 then * x
            _need(is_half(m1) == add1.outputs[0])
            m2 = self.sole(m1.outputs[0], ("Mul",))
            _need(sorted(m2.inputs) == sorted([x, m1.outputs[0]]))
            claimed.append(m2)
        else:                                      # (x * 0.5) * (1 + erf)
            h = self.producer.get(other)
            _need(h is not None and is_half(h) == x and self.sole(other) is m1)
            m2 = m1
            claimed.append(h)
        self.emit("GELU", [self.sem(x)], 1, claimed, [m2.outputs[0]], role="act", scope=n.scope)

    def m_residual(self, n):
        a, b = n.inputs
        _need(a in self.live and b in self.live and self.shapes[a] == self.shapes[b])
        self.emit("Add", [self.sem(a), self.sem(b)], 1, [n], [n.outputs[0]], role="add", scope=n.scope)

    def m_cls_select(self, n):
        x = n.inputs[0]
        _need(self.is_layout(n) and len(self.shapes[x]) == 3 and len(n.outputs) == 1)
        chain = self.match_chain(self.chain_from(n), x, lambda l: l[:, 0])
        self.emit("ClsSelect", [self.sem(x)], 1, chain, [chain[-1].outputs[0]], role="cls_select",
                  scope=n.scope)

    MATCHERS = {
        "Conv": ("m_patch_embed",), "Concat": ("m_cls_pos",),
        "LayerNormalization": ("m_layernorm_fused",), "ReduceMean": ("m_layernorm_decomposed",),
        "MatMul": ("m_linear", "m_attn_scores", "m_attn_context"), "Gemm": ("m_gemm",),
        "Softmax": ("m_softmax",), "Erf": ("m_gelu",), "Add": ("m_residual",),
        **{op: ("m_cls_select",) for op in ("Gather", "Slice", "Reshape", "Flatten", "Squeeze")},
    }

    def _match(self):
        self.sem_nodes, self.info, self.claimed, self.splits = [], {}, set(), {}
        self.sem_of = {self.in_name: "%in"}
        for n in self.live_nodes:
            if id(n) in self.claimed:
                continue
            for m in self.MATCHERS.get(n.op, ()):
                try:
                    getattr(self, m)(n)
                    break
                except _NoMatch:
                    continue
        left = [n for n in self.live_nodes if id(n) not in self.claimed]
        if left:
            # Name the likely cause first: a compute node whose inputs all come from recognised
            # patterns (left-over layout nodes are usually a symptom: their consumer failed).
            fed = [n for n in left if not self.is_layout(n) and all(
                t not in self.live or t == self.in_name or id(self.producer[t]) in self.claimed
                for t in n.inputs)]
            left = fed[:1] + [n for n in left if n not in fed[:1]]
            more = "; also unmatched: " + ", ".join(repr(n) for n in left[1:4]) if len(left) > 1 else ""
            raise OnnxImportError(
                f"{self.source}: {left[0]!r} ({left[0].op}, inputs {left[0].inputs}) is not part of a "
                f"recognised ViT pattern{more}. Supported patterns: {PATTERNS}")
        if self.out_name not in self.sem_of:
            raise OnnxImportError(f"{self.source}: output {self.out_name!r} is not produced by a "
                                  "recognised pattern")

    # --- step 4: names -------------------------------------------------------------------------
    def _roles(self):
        """Refine roles from the structure: norm1/norm2/norm, qkv/proj/fc1/fc2/head, residual1/2."""
        prod = {t: s for s in self.sem_nodes for t in s.outputs}
        cons = {}
        for s in self.sem_nodes:
            for t in s.inputs:
                cons.setdefault(t, []).append(s)
        role = {s.name: self.info[s.name]["role"] for s in self.sem_nodes}

        def feeds(s, op):
            return any(c.op == op for c in cons.get(s.outputs[0], []))

        def fed_by(s, op):
            return any(prod.get(t) is not None and prod[t].op == op for t in s.inputs)
        for s in self.sem_nodes:
            if s.op == "Linear":
                role[s.name] = ("qkv" if feeds(s, "QKVSplit") else "proj" if fed_by(s, "AttnContext")
                                else "fc1" if feeds(s, "GELU") else "fc2" if fed_by(s, "GELU")
                                else "head" if fed_by(s, "ClsSelect") else "linear")
        for s in self.sem_nodes:
            if s.op == "LayerNorm":
                nxt = {role[c.name] for c in cons.get(s.outputs[0], [])}
                role[s.name] = "norm1" if "qkv" in nxt else "norm2" if "fc1" in nxt else "norm"
            elif s.op == "Add":
                src = {role[prod[t].name] for t in s.inputs if t in prod}
                role[s.name] = "residual1" if "proj" in src else "residual2" if "fc2" in src else "add"
        return role

    def _names(self):
        role = self._roles()
        attn = {"qkv", "split", "scores", "softmax", "context", "proj"}
        mlp = {"fc1", "act", "fc2"}
        canon, block_of, blk, open_ = {}, {}, -1, False
        for s in self.sem_nodes:
            r = role[s.name]
            if r == "norm1" or (r in ("qkv", "split") and not open_):
                blk, open_ = blk + 1, True
            if open_:
                block_of[s.name] = blk
                canon[s.name] = f"blocks.{blk}." + ("attn." if r in attn else "mlp." if r in mlp else "") + r
            else:
                canon[s.name] = r
            if r == "residual2":
                open_ = False
        scoped = self._scoped_names(role, block_of)
        names = scoped if scoped is not None else canon
        out, seen = {}, {}
        for s in self.sem_nodes:    # uniquify only if a model repeats a top-level role
            nm = re.sub(r"[^A-Za-z0-9_.\-]", "_", names[s.name])
            seen[nm] = seen.get(nm, 0) + 1
            out[s.name] = nm if seen[nm] == 1 else f"{nm}_{seen[nm]}"
        return out, role, scoped is not None

    def _scoped_names(self, role, block_of):
        """Names from the exporter's module scopes, or None if any needed scope is missing or the
        result is ambiguous. Parameter-free ops are named beside their module's Linear/LayerNorm."""
        sc = {s.name: self.info[s.name]["scope"] for s in self.sem_nodes}
        parent = lambda p: p.rsplit(".", 1)[0] if "." in p else ""       # noqa: E731
        join = lambda p, r: f"{p}.{r}" if p else r                         # noqa: E731
        blocks = {}
        for s in self.sem_nodes:
            if s.op in ("Linear", "LayerNorm", "PatchEmbed"):
                if not sc[s.name]:
                    return None
                if s.name in block_of:
                    blocks.setdefault(block_of[s.name], {})[role[s.name]] = sc[s.name]
        names = {}
        for s in self.sem_nodes:
            r, b = role[s.name], blocks.get(block_of.get(s.name), {})
            if s.op in ("Linear", "LayerNorm"):
                names[s.name] = sc[s.name]
            elif s.op == "PatchEmbed":
                names[s.name] = parent(sc[s.name]) or sc[s.name]
            elif r in ("split", "scores", "softmax", "context") and "qkv" in b:
                names[s.name] = join(parent(b["qkv"]), r)
            elif r == "act" and "fc1" in b:
                names[s.name] = join(parent(b["fc1"]), r)
            elif r in ("residual1", "residual2") and b:
                prefix = os.path.commonprefix([v + "." for v in b.values()])
                prefix = prefix[:prefix.rfind(".")] if "." in prefix else ""
                if not prefix:
                    return None
                names[s.name] = join(prefix, r)
            elif s.name in block_of:
                return None
            else:
                names[s.name] = r
        return names if len(set(names.values())) == len(names) else None

    # --- all steps -------------------------------------------------------------------------------
    def run(self, verify):
        self._evaluate()
        self._match()
        names, roles, scoped = self._names()
        tensor = {"%in": self.in_name}
        for s in self.sem_nodes:
            outs = [names[s.name]] if len(s.outputs) == 1 else [f"{names[s.name]}.{q}" for q in "qkv"]
            tensor.update(zip(s.outputs, outs))
        nodes = [Node(s.op, names[s.name], [tensor[t] for t in s.inputs], [tensor[t] for t in s.outputs],
                      s.params, s.attrs) for s in self.sem_nodes]
        producer = self.model.producer_name or "?"
        has_dynamo_md = any(p.key.startswith("pkg.torch.onnx") for n in self.model.graph.node
                            for p in n.metadata_props)
        form = ("dynamo" if has_dynamo_md else "legacy" if producer == "pytorch" else producer)
        meta = dict(source=self.source, opset=self.opset, form=form, producer=producer,
                    producer_version=self.model.producer_version,
                    layernorm="fused" if any(n.op == "LayerNormalization" for n in self.live_nodes)
                    else "decomposed",
                    onnx_input=self.in_name, onnx_output=self.out_name,
                    names="onnx scopes" if scoped else "canonical",
                    roles={names[k]: r for k, r in roles.items()},
                    onnx_nodes={names[k]: v["onnx"] for k, v in self.info.items()},
                    metadata={p.key: p.value for p in self.model.metadata_props})
        graph = Graph(self.in_name, self.in_shape, nodes, tensor[self.sem_of[self.out_name]], meta)
        graph.validate()
        if verify:
            self._verify(graph)
        return graph

    def _verify(self, graph):
        got = run_float(graph, self.image, dtype=self.onnx_out.dtype.type)
        want = self.onnx_out
        err = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")
        tol = 1e-3 * max(1.0, float(np.max(np.abs(want))))
        if not err <= tol:
            raise OnnxImportError(
                f"{self.source}: internal check failed: the imported graph differs from the ONNX graph "
                f"by {err:.3g} (tolerance {tol:.3g}) on a random input; shapes {got.shape} vs "
                f"{want.shape}. Please report this model.")
