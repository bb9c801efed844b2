"""Compile: semantic graph + calibration statistics + QuantConfig -> integer program.

Every float tensor of the graph is realised by one integer tensor (name, format, scale). Each node
is lowered by its op (`intsim/ops/<kind>.py`, `OpDef.lower`) through the Builder below. A consumer
that needs another format or scale gets it through `Builder.realise`, which inserts the requantize
op (spec A6) - the single place where scale ratios become (m, k) pairs.
"""
import re

import numpy as np

from .arith import ArithSpecError, IntFormat
from .errors import CompileError
from .head_rotation import query_key_linears
from .kernels import REQUANTIZE, candidates, get_kernel
from .ops import REQUANT, SEMANTIC, semantic_op
from .program import Op, Program, TensorInfo, new_meta
from .progress import bar
from .quantize import QuantConfig, first_match
from .reproducible import one_blas_thread, products_over_threads


class Builder:
    """What an op's `lower` uses: the configuration, calibration statistics, the integer tensors
    realised so far, and `emit` to append an integer op."""

    def __init__(self, graph, observers, config: QuantConfig):
        self.graph = graph
        self.obs = observers
        self.cfg = config
        self.ops = []
        self.tensors = {}
        self.realised = {}      # float tensor name -> integer tensor name
        self.shapes = {}        # float tensor name -> shape without the batch
        self.equalized = {}     # LayerNorm output -> (channel factors f, observer of y / f, scale)
        self.readers = {}       # float tensor -> the nodes reading it
        self.moved_from = {}    # output of data movement -> the tensor whose values it moves
        self.choices = {}       # (what, node name) -> a lowering decision asked for more than once
        self.operand_labels = []    # every label operand_bits was asked for (the `wide` patterns' domain)
        self.query_key = qk_wbits_layers(graph, config.qk_wbits)
        for n in graph.nodes:
            for t in n.inputs:
                self.readers.setdefault(t, []).append(n)
            if SEMANTIC[n.op].movement and len(n.inputs) == 1:
                self.moved_from[n.outputs[0]] = self.moved_from.get(n.inputs[0], n.inputs[0])

    def layer_config(self, name):
        """The configuration as the weights of layer `name` see it (QuantConfig.for_layer: its
        width by layer_wbits, qk_wbits or wbits)."""
        return self.cfg.for_layer(name, name in self.query_key)

    # -- tensors -----------------------------------------------------------------------------------
    def add_tensor(self, name, fmt, scale, shape, source="", axis=-1):
        """A new integer tensor; a per-channel scale lies along `axis` (from the end: -1 the last
        axis, -3 the C of (N, C, H, W))."""
        if name in self.tensors:
            raise CompileError(f"tensor {name!r} defined twice")
        if isinstance(scale, np.ndarray):
            scale = [float(s) for s in scale]
        per_channel = isinstance(scale, list)
        self.tensors[name] = TensorInfo(name, fmt, scale if per_channel else float(scale),
                                        tuple(int(s) for s in shape), source, axis if per_channel else -1)
        return name

    def bind(self, float_name, int_name, shape):
        """float_name is now realised by the integer tensor int_name."""
        self.realised[float_name] = int_name
        self.tensors[int_name].source = float_name
        self.shapes[float_name] = tuple(shape)

    def emit(self, kind, name, inputs, outputs, consts, attrs, spec):
        self.ops.append(Op(kind, name, list(inputs), list(outputs), consts, attrs, spec))

    def producer(self, int_name):
        """Which op made an integer tensor, followed back through ops that keep their input's
        scale, up to one whose weights set it (for error messages)."""
        chain, name = [], int_name
        while True:
            op = next((o for o in reversed(self.ops) if name in o.outputs), None)
            if op is None:
                return "from " + " <- ".join(chain + ["the model input"])
            w = op.attrs.get("weight_scale")
            bits = op.attrs.get("weight_fmt", {}).get("bits", 2)
            chain.append(f"{op.kind} {op.name!r}" +
                         (f" with weights up to {max(w) * ((1 << (bits - 1)) - 1):.3g}" if w else ""))
            src = op.inputs[0] if op.inputs else None
            if w or src is None or self.tensors[src].scale != self.tensors[name].scale:
                return "from " + " <- ".join(chain)
            name = src

    def producer_op(self, int_name):
        """The integer op that wrote int_name (None for the model input)."""
        return next((o for o in reversed(self.ops) if int_name in o.outputs), None)

    def sole_reader(self, float_name, node):
        """Whether `node` is the only reader of float_name, which is no graph output: its integer
        tensor may then be re-interpreted in place (a scale folded into it)."""
        return (self.readers.get(float_name) == [node] and float_name not in self.graph.outputs
                and float_name != self.graph.input_name)

    def infer(self, node):
        """Output shapes of a node from the shapes realised so far."""
        return semantic_op(node.op, node.name).infer(node, [self.shapes[t] for t in node.inputs])

    def carry_bits(self, float_name):
        """The width at which data movement carries float_name when it must be requantized first:
        `abits` when every reader, through further data movement, realises it at abits anyway (a
        product or GELU), else residual_bits (residual adds, LayerNorm, constant adds, outputs, a
        Linear that rotates its input: OpDef.reads_wide)."""
        seen, todo = set(), [float_name]
        while todo:
            t = todo.pop()
            if t in self.graph.outputs:
                return self.cfg.residual_bits
            for n in self.readers.get(t, []):
                d = SEMANTIC[n.op]
                if d.movement:
                    todo.extend(o for o in n.outputs if o not in seen)
                    seen.update(n.outputs)
                elif not d.reads_narrow or d.reads_wide(self, n):
                    return self.cfg.residual_bits
        return self.cfg.abits

    def per_tensor(self, float_name, label):
        """The integer tensor of float_name at one real scale and at most residual_bits wide, as
        data movement needs it: an accumulator or a per-channel scale is requantized first, at the
        width `carry_bits` and the calibrated scale of float_name."""
        cur = self.realised[float_name]
        info = self.tensors[cur]
        if not isinstance(info.scale, list) and info.fmt.bits <= self.cfg.residual_bits:
            return cur
        bits = self.carry_bits(float_name)
        fmt = self.act_format(float_name, self.operand_bits(label) if bits == self.cfg.abits else bits)
        return self.realise(float_name, fmt, self.act_scale(float_name, fmt), label)

    def scale_of(self, int_name):
        return np.asarray(self.tensors[int_name].scale, dtype=np.float64)

    # -- calibration -------------------------------------------------------------------------------
    def observer(self, float_name):
        """The calibration statistics of a tensor; for the output of data movement, those of the
        tensor whose values it moves, so that a moved tensor keeps the scale it was carried at (a
        reader wanting the same format reads it as it is: no second rounding)."""
        float_name = self.moved_from.get(float_name, float_name)
        if float_name not in self.obs:
            raise CompileError(f"no calibration statistics for tensor {float_name!r}")
        return self.obs[float_name]

    def operand_bits(self, label, default=None):
        """The width of an activation operand of a product (a Linear input, a matmul operand, or
        data movement carrying one) or of GELU: `abits` (or `default`), or the bits of the first
        `QuantConfig.wide` pattern that the operand's label (e.g. blocks.3.mlp.fc2.in) matches."""
        self.operand_labels.append(label)
        return first_match(self.cfg.wide, label, self.cfg.abits if default is None else default)

    def act_format(self, float_name, bits):
        return IntFormat(bits, signed=not self.observer(float_name).nonnegative)

    def act_scale(self, float_name, fmt):
        return self.observer(float_name).scale(fmt, self.cfg.act_calib, self.cfg.percentile)

    def kernel_for(self, node, family):
        """The candidate of `family` configured for this node (a per-layer override first)."""
        name = self.cfg.overrides.get(node.name, getattr(self.cfg, family))
        try:
            return get_kernel(family, name)
        except ArithSpecError as e:
            raise CompileError(f"node {node.name!r} ({node.op}): {e}") from None

    def realise(self, float_name, fmt, scale, label, ratio=None):
        """The integer tensor holding float_name in format fmt at scale (scalar, or per channel along
        the last axis), adding a requantize op if the current realisation differs. A current
        realisation per channel along another axis (a convolution's output channels) is requantized
        along that axis. `ratio` gives the integer-domain ratio when both scales carry the same
        channel factors."""
        cur = self.realised[float_name]
        info = self.tensors[cur]
        if info.fmt == fmt and np.array_equal(self.scale_of(cur), np.asarray(scale, dtype=np.float64)):
            return cur
        if info.axis != -1 and np.ndim(scale):
            raise CompileError(f"tensor {cur!r} is scaled per channel along axis {info.axis}; it cannot "
                               f"be requantized to per-channel scales along the last axis")
        try:
            plan = REQUANTIZE.plan(self.scale_of(cur), info.fmt, scale, fmt, self.cfg.multiplier_bits, ratio)
        except ArithSpecError as e:
            raise CompileError(f"tensor {cur!r} ({self.producer(cur)}, real scale up to "
                               f"{float(np.max(self.scale_of(cur))):.3g}) cannot be requantized to "
                               f"{label!r} (scale {float(np.max(np.asarray(scale))):.3g}): {e}") from None
        out = self.add_tensor(label, fmt, scale, info.shape, float_name)
        attrs = {"axis": info.axis} if info.axis != -1 else {}
        self.emit(REQUANT.kind, label, [cur], [out], plan.consts, attrs, REQUANT.spec)
        return out


def check_settings(graph, cfg):
    """The settings that name parts of the model (overrides, layer_wbits, qk_wbits, wide) against
    the graph: one clear error for a name or pattern that matches nothing, before any calibration
    (commands call it first; compile_program again)."""
    check_layer_overrides(graph, cfg.overrides)
    check_layer_wbits(graph, cfg.layer_wbits)
    qk_wbits_layers(graph, cfg.qk_wbits)
    # every label an operand can have (a superset; _compile checks the ones the lowering read)
    check_wide(graph, cfg.wide, [f"{n.name}.{port}" for n in graph.nodes for port in ("in", "in0", "in1")])


def check_wide(graph, wide, labels):
    """Every `wide` pattern must match an operand label (a mistyped one would change nothing)."""
    for pattern in wide:
        if not any(re.search(pattern, label) for label in labels):
            examples = [f"{n.name}.in" for n in graph.nodes if "weight" in n.params][:4]
            raise CompileError(f"wide pattern '{pattern}' matches no operand of this model (labels are "
                               f"<layer>.in, or .in0 / .in1 of a product of two activations: e.g. "
                               f"{', '.join(examples)}, ...)")


def compile_program(graph, observers, config=None, model_path=None, model_sha256=None, progress=False):
    """Turn the float graph into an integer program (docs/quantization.md); progress: a bar per
    node (None: on a terminal only)."""
    cfg = config or QuantConfig()
    check_settings(graph, cfg)
    with one_blas_thread(), products_over_threads(), bar(len(graph.nodes), "compile", progress, "node") as b:
        return _compile(graph, observers, cfg, model_path, model_sha256, b)


def _compile(graph, observers, cfg, model_path, model_sha256, progress_bar):
    b = Builder(graph, observers, cfg)
    # boundary: the input quantizer (min/max calibrated, so [0, 1] images at 1/255 are exact pixels)
    in_obs = b.observer(graph.input_name)
    in_fmt = IntFormat(8, signed=not in_obs.nonnegative)
    b.add_tensor(graph.input_name, in_fmt, in_obs.scale(in_fmt, "minmax"), graph.input_shape,
                 graph.input_name)
    b.bind(graph.input_name, graph.input_name, graph.input_shape)
    for node in graph.nodes:
        try:
            semantic_op(node.op, node.name).lower(node, b)
        except (ArithSpecError, ValueError) as e:
            if isinstance(e, CompileError) and node.name in str(e):
                raise
            raise CompileError(f"node {node.name!r} ({node.op}): {e}") from e
        progress_bar.update(1)
    # boundary: each output requantized to head_bits at its calibrated scale
    out_fmt = IntFormat(cfg.head_bits)
    outs = [b.realise(t, out_fmt, b.act_scale(t, out_fmt), label)
            for t, label in zip(graph.outputs, output_labels(graph, b.shapes))]
    check_wide(graph, cfg.wide, b.operand_labels)    # the operands the lowering actually read
    meta = new_meta(cfg.to_dict(), model_path, model_sha256)
    meta["graph"] = dict(graph.meta) if getattr(graph, "meta", None) else {}
    return Program(b.ops, b.tensors, graph.input_name, outs[0] if len(outs) == 1 else outs, meta)


def output_labels(graph, shapes):
    """Names of the program's output tensors: "logits" for a single class vector (a rank-1 output:
    the name every golden set uses), "output" for a single other tensor, "output.<ONNX output
    name>" (or "output.<i>") for each of several outputs."""
    outs = graph.outputs
    if len(outs) == 1:
        return ["logits" if len(shapes[outs[0]]) == 1 else "output"]
    onnx = graph.meta.get("onnx_output") if getattr(graph, "meta", None) else None
    names = onnx if isinstance(onnx, list) and len(onnx) == len(outs) else [str(i) for i in range(len(outs))]
    names = [re.sub(r"[^A-Za-z0-9_.\-]", "_", str(n)) for n in names]     # golden file names
    if len(set(names)) != len(names):
        names = [str(i) for i in range(len(outs))]
    return [f"output.{name}" for name in names]


def nonlinear_layers(graph):
    """[(node name, family)] of every node computed by a kernel family (Softmax, GELU, LayerNorm)."""
    return [(n.name, SEMANTIC[n.op].family) for n in graph.nodes
            if n.op in SEMANTIC and SEMANTIC[n.op].family]


def qk_wbits_layers(graph, qk_wbits):
    """The layers qk_wbits widens (none when it is 0); a model without any is an error (the setting
    would change nothing)."""
    if not qk_wbits:
        return set()
    layers = query_key_linears(graph)
    if not layers:
        raise CompileError(f"qk_wbits {qk_wbits}: this model has no Linear layer that makes both operands "
                           f"of a product of two activations (attention q @ k^T)")
    return layers


def check_layer_wbits(graph, layer_wbits):
    """Every layer_wbits pattern must match a layer with weights (a mistyped pattern would
    otherwise leave every layer at wbits without a word)."""
    layers = [n.name for n in graph.nodes if "weight" in n.params]
    for pattern in layer_wbits:
        if not any(re.search(pattern, name) for name in layers):
            raise CompileError(f"layer_wbits pattern {pattern!r} matches no layer with weights of this "
                               f"model (e.g. {', '.join(layers[:4])}, ...)")


def check_layer_overrides(graph, overrides):
    """Every overridden layer must be a non-linear node of the graph and its candidate one of that
    node's family (an unknown layer name would otherwise be silently ignored)."""
    layers = dict(nonlinear_layers(graph))
    for layer, cand in overrides.items():
        if layer not in layers:
            near = [n for n in layers if n.split(".")[-1] == layer.split(".")[-1]][:4]
            raise CompileError(f"override for {layer!r}: not a Softmax, GELU or LayerNorm layer of "
                               f"this model (e.g. {', '.join(near or sorted(layers)[:3])}, ...)")
        if cand not in candidates(layers[layer]):
            raise CompileError(f"layer {layer!r} ({layers[layer]}): unknown candidate {cand!r}; "
                               f"candidates: {', '.join(candidates(layers[layer]))}")
