"""Compile: semantic graph + calibration statistics + QuantConfig -> integer program.

Every float tensor of the graph is realised by one integer tensor (name, format, scale). A consumer
that needs another format or scale gets it through `_Builder.realise`, which inserts the requantize
op (spec A6) - the single place where scale ratios become (m, k) pairs.
"""
import inspect

import numpy as np

from . import arith
from .arith import IntFormat, ArithSpecError, dyadic, dyadic_array
from .kernels import get_kernel
from .program import Op, Program, TensorInfo, new_meta
from .quantize import QuantConfig, quantize_weight, quantize_bias, weight_format

ACC = IntFormat(32)
FAMILY_OF = {"GELU": "gelu", "Softmax": "softmax", "LayerNorm": "layernorm"}


class CompileError(ValueError):
    """The graph cannot be compiled as configured; the message names the node."""


class _Builder:
    def __init__(self, graph, observers, config: QuantConfig):
        self.graph = graph
        self.obs = observers
        self.cfg = config
        self.ops = []
        self.tensors = {}
        self.realised = {}      # float tensor name -> integer tensor name
        self.equalized = {}     # LayerNorm output -> (channel factors f, observer of y / f)

    # -- tensors -----------------------------------------------------------------------------------
    def add_tensor(self, name, fmt, scale, shape, source=""):
        if name in self.tensors:
            raise CompileError(f"tensor {name!r} defined twice")
        if isinstance(scale, np.ndarray):
            scale = [float(s) for s in scale]
        self.tensors[name] = TensorInfo(name, fmt, scale if isinstance(scale, list) else float(scale),
                                        tuple(int(s) for s in shape), source)
        return name

    def emit(self, kind, name, inputs, outputs, consts=None, attrs=None, spec=""):
        from .execute import OPS
        self.ops.append(Op(kind, name, list(inputs), list(outputs), consts or {}, attrs or {},
                           spec or OPS[kind][1]))

    def observer(self, float_name):
        if float_name not in self.obs:
            raise CompileError(f"no calibration statistics for tensor {float_name!r}")
        return self.obs[float_name]

    def act_format(self, float_name, bits):
        return IntFormat(bits, signed=not self.observer(float_name).nonnegative)

    def act_scale(self, float_name, fmt):
        return self.observer(float_name).scale(fmt, self.cfg.act_calib, self.cfg.percentile)

    def scale_of(self, int_name):
        s = self.tensors[int_name].scale
        return np.asarray(s, dtype=np.float64)

    def realise(self, float_name, fmt, scale, label, ratio=None):
        """The integer tensor holding float_name in format fmt at scale (scalar or per channel along
        the last axis), adding a requantize op if the current realisation differs. `ratio` gives
        the integer-domain ratio when both scales carry the same channel factors."""
        cur = self.realised[float_name]
        info = self.tensors[cur]
        target = np.asarray(scale, dtype=np.float64)
        if info.fmt == fmt and np.array_equal(np.asarray(info.scale, dtype=np.float64), target):
            return cur
        if ratio is None:
            ratio = np.broadcast_to(self.scale_of(cur) / target, np.shape(target) if target.ndim
                                    else np.shape(self.scale_of(cur)))
        ratio = np.asarray(ratio, dtype=np.float64)
        if ratio.ndim == 0:
            d = dyadic(float(ratio), self.cfg.multiplier_bits)
            m, k = d.m, d.k
        else:
            uniq = np.unique(ratio)
            if uniq.size == 1:
                d = dyadic(float(uniq[0]), self.cfg.multiplier_bits)
                m, k = d.m, d.k
            else:
                m, k = dyadic_array(ratio, self.cfg.multiplier_bits)
        out = self.add_tensor(label, fmt, scale, info.shape, float_name)
        self.emit("requant", label, [cur], [out], {"m": m, "k": k})
        return out

    # -- nodes -------------------------------------------------------------------------------------
    def kernel_for(self, node):
        family = FAMILY_OF[node.op]
        name = self.cfg.overrides.get(node.name, getattr(self.cfg, family))
        try:
            return family, get_kernel(family, name)
        except ArithSpecError as e:
            raise CompileError(f"node {node.name!r} ({node.op}): {e}") from None

    def linear(self, node, x_scale, kind, weight2d, bias, extra_attrs=None):
        """x_scale: the real value of one LSB of the integer input (scalar)."""
        w_q, w_s = quantize_weight(weight2d, self.cfg.wbits, self.cfg.weight_calib)
        acc_scale = x_scale * w_s
        consts = {"weight": w_q.reshape(weight2d.shape[0], -1)}
        if bias is not None:
            consts["bias"] = quantize_bias(bias, acc_scale)
        # weight_scale is documentary (golden manifests): the real value of one weight LSB per
        # output channel; with equalization the integers hold W * f (docs/quantization.md Q5)
        attrs = {"weight_fmt": weight_format(self.cfg.wbits).to_dict(),
                 "weight_scale": [float(v) for v in w_s]}
        attrs.update(extra_attrs or {})
        return consts, attrs, acc_scale


def compile_program(graph, observers, config=None, model_path=None, model_sha256=None):
    """Turn the float graph into an integer program (docs/quantization.md)."""
    cfg = config or QuantConfig()
    layers = {n.name for n in graph.nodes if n.op in FAMILY_OF}
    unknown = sorted(set(cfg.overrides) - layers)
    if unknown:
        raise CompileError(f"override for {', '.join(map(repr, unknown))}: not a Softmax, GELU or "
                           f"LayerNorm layer of this model (e.g. {', '.join(sorted(layers)[:3])}, ...)")
    b = _Builder(graph, observers, cfg)
    res_fmt = IntFormat(cfg.residual_bits)

    # boundary: the input quantizer (min/max calibrated, so [0, 1] images at 1/255 are exact pixels)
    in_obs = b.observer(graph.input_name)
    in_fmt = IntFormat(8, signed=not in_obs.nonnegative)
    in_scale = in_obs.scale(in_fmt, "minmax")
    b.add_tensor(graph.input_name, in_fmt, in_scale, graph.input_shape, graph.input_name)
    b.realised[graph.input_name] = graph.input_name
    shapes = {graph.input_name: tuple(graph.input_shape)}

    for node in graph.nodes:
        try:
            _compile_node(b, node, shapes, res_fmt)
        except (ArithSpecError, ValueError) as e:
            if isinstance(e, CompileError) and node.name in str(e):
                raise
            raise CompileError(f"node {node.name!r} ({node.op}): {e}") from e

    # boundary: the classifier output, requantized to head_bits at its calibrated scale
    out_fmt = IntFormat(cfg.head_bits)
    out = b.realise(graph.output_name, out_fmt, b.act_scale(graph.output_name, out_fmt), "logits")
    meta = new_meta(cfg.to_dict(), model_path, model_sha256)
    meta["graph"] = dict(graph.meta) if getattr(graph, "meta", None) else {}
    return Program(b.ops, b.tensors, graph.input_name, out, meta)


def _compile_node(b, node, shapes, res_fmt):
    cfg = b.cfg
    op = node.op
    src = node.inputs[0]
    if op == "PatchEmbed":
        w = node.params["weight"]
        c, h, wd = shapes[src]
        p = int(node.attrs["patch"])
        x = b.realised[src]
        consts, attrs, acc_scale = b.linear(node, float(b.scale_of(x)), "patch_embed", w.reshape(w.shape[0], -1),
                                            node.params.get("bias"), {"patch": p})
        out_shape = ((h // p) * (wd // p), w.shape[0])
        out = b.add_tensor(f"{node.name}.acc", IntFormat(32), acc_scale, out_shape)
        b.emit("patch_embed", node.name, [x], [out], consts, attrs)
        _bind(b, shapes, node.outputs[0], out, out_shape)
    elif op == "ClsPos":
        y = node.outputs[0]
        s = b.act_scale(y, res_fmt)
        x = b.realise(src, res_fmt, s, f"{node.name}.in")
        cls = _const_at_scale(node.params["cls"], s, res_fmt, f"{node.name}.cls")
        pos = _const_at_scale(node.params["pos"], s, res_fmt, f"{node.name}.pos")
        t, d = pos.shape
        out = b.add_tensor(node.name, res_fmt, s, (t, d))
        b.emit("cls_pos", node.name, [x], [out], {"cls": cls, "pos": pos})
        _bind(b, shapes, y, out, (t, d))
    elif op == "LayerNorm":
        family, kernel = b.kernel_for(node)
        x = b.realised[src]
        info = b.tensors[x]
        if info.fmt.bits > 24 or isinstance(info.scale, list):
            x = b.realise(src, res_fmt, b.act_scale(src, res_fmt), f"{node.name}.in")
            info = b.tensors[x]
        f = _equalization_factors(b, node)
        gamma, beta = node.params["gamma"], node.params["beta"]
        if f is not None:
            gamma, beta = gamma / f, beta / f
        plan = kernel.plan(info.scale, info.fmt, gamma=gamma, beta=beta, eps=float(node.attrs.get("eps", 1e-6)))
        _emit_kernel(b, node, family, kernel, plan, x, shapes[src], shapes)
        if f is not None:
            # the integer output holds y / f: its documentary scale is per channel
            out = b.realised[node.outputs[0]]
            b.tensors[out].scale = [float(v) for v in plan.out_scale * f]
            b.equalized[node.outputs[0]] = (f, b.observer(node.outputs[0]).divided(f), plan.out_scale)
    elif op == "Linear":
        w = node.params["weight"]
        if src in b.equalized:
            # LayerNorm output equalized (docs/quantization.md Q5): the integer tensor holds y / f,
            # so the weight columns take the factor f
            f, obs, ln_scale = b.equalized[src]
            fmt = IntFormat(cfg.abits, signed=not obs.nonnegative)
            s_eq = obs.scale(fmt, cfg.act_calib, cfg.percentile)
            x = b.realise(src, fmt, s_eq * f, f"{node.name}.in", ratio=ln_scale / s_eq)
            w = w * f[None, :]
        else:
            fmt = b.act_format(src, cfg.abits)
            s_eq = b.act_scale(src, fmt)
            x = b.realise(src, fmt, s_eq, f"{node.name}.in")
        consts, attrs, acc_scale = b.linear(node, s_eq, "linear", w, node.params.get("bias"))
        out_shape = shapes[src][:-1] + (w.shape[0],)
        out = b.add_tensor(f"{node.name}.acc", IntFormat(32), acc_scale, out_shape)
        b.emit("linear", node.name, [x], [out], consts, attrs)
        _bind(b, shapes, node.outputs[0], out, out_shape)
    elif op == "QKVSplit":
        heads = int(node.attrs["heads"])
        t, d3 = shapes[src]
        d = d3 // 3
        fmts = [b.act_format(o, cfg.abits) for o in node.outputs]
        if len(set(fmts)) != 1:
            fmts = [IntFormat(cfg.abits)] * 3
        scales = [b.act_scale(o, f) for o, f in zip(node.outputs, fmts)]
        x = b.realise(src, fmts[0], np.repeat(scales, d), f"{node.name}.in")
        outs = []
        for o, s in zip(node.outputs, scales):
            outs.append(b.add_tensor(o if o not in b.tensors else f"{node.name}.{o}", fmts[0], s,
                                     (heads, t, d // heads)))
            _bind(b, shapes, o, outs[-1], (heads, t, d // heads))
        b.emit("qkv_split", node.name, [x], outs, attrs={"heads": heads})
    elif op == "AttnScores":
        q, k = (b.realised[i] for i in node.inputs)
        s = float(b.scale_of(q)) * float(b.scale_of(k)) * float(node.attrs["scale"])
        h, t, _ = shapes[node.inputs[0]]
        out = b.add_tensor(f"{node.name}.acc", IntFormat(32), s, (h, t, t))
        b.emit("attn_scores", node.name, [q, k], [out], attrs={"scale": float(node.attrs["scale"])})
        _bind(b, shapes, node.outputs[0], out, (h, t, t))
    elif op == "Softmax":
        family, kernel = b.kernel_for(node)
        fmt = IntFormat(cfg.logit_bits)
        x = b.realise(src, fmt, b.act_scale(src, fmt), f"{node.name}.in")
        plan = kernel.plan(float(b.scale_of(x)), fmt, out_bits=cfg.softmax_bits)
        _emit_kernel(b, node, family, kernel, plan, x, shapes[src], shapes)
    elif op == "AttnContext":
        p, v = (b.realised[i] for i in node.inputs)
        s = float(b.scale_of(p)) * float(b.scale_of(v))
        h, t, dh = shapes[node.inputs[1]]
        out = b.add_tensor(f"{node.name}.acc", IntFormat(32), s, (t, h * dh))
        b.emit("attn_context", node.name, [p, v], [out])
        _bind(b, shapes, node.outputs[0], out, (t, h * dh))
    elif op == "GELU":
        family, kernel = b.kernel_for(node)
        fmt = IntFormat(cfg.abits)
        x = b.realise(src, fmt, b.act_scale(src, fmt), f"{node.name}.in")
        opts = {}
        if "fit_data" in inspect.signature(kernel.plan).parameters:
            opts["fit_data"] = b.observer(src).sample
        plan = kernel.plan(float(b.scale_of(x)), fmt, **opts)
        _emit_kernel(b, node, family, kernel, plan, x, shapes[src], shapes)
    elif op == "Add":
        y = node.outputs[0]
        s = b.act_scale(y, res_fmt)
        ins = []
        for i, name in enumerate(node.inputs):
            cur = b.realised[name]
            info = b.tensors[cur]
            if isinstance(info.scale, list) or info.fmt.bits > res_fmt.bits:
                cur = b.realise(name, res_fmt, b.act_scale(name, res_fmt), f"{node.name}.in{i}")
            ins.append(cur)
        ra = float(b.scale_of(ins[0])) / s
        rb = float(b.scale_of(ins[1])) / s
        da, db = dyadic(ra, cfg.multiplier_bits), dyadic(rb, cfg.multiplier_bits)
        out = b.add_tensor(node.name, res_fmt, s, shapes[node.inputs[0]])
        b.emit("add", node.name, ins, [out], {"ma": da.m, "ka": da.k, "mb": db.m, "kb": db.k})
        _bind(b, shapes, y, out, shapes[node.inputs[0]])
    elif op == "ClsSelect":
        x = b.realised[src]
        info = b.tensors[x]
        out = b.add_tensor(node.name, info.fmt, info.scale, shapes[src][1:])
        b.emit("cls_select", node.name, [x], [out])
        _bind(b, shapes, node.outputs[0], out, shapes[src][1:])
    else:
        raise CompileError(f"node {node.name!r}: op {op!r} has no integer lowering")


def _equalization_factors(b, node):
    """SmoothQuant-style factors f (per channel) for a LayerNorm whose output feeds only Linear
    layers: f_c = a_c^alpha / w_c^(1 - alpha), a_c the calibrated max |y_c|, w_c the largest
    |weight| of input channel c over the consumers; normalised to geometric mean 1. The float
    function is unchanged (gamma/f, beta/f, W*f); the 8-bit activation no longer has to cover
    outlier channels. None when disabled or not applicable."""
    alpha = float(b.cfg.equalize)
    consumers = b.graph.consumers(node.outputs[0])
    if alpha <= 0 or not consumers or any(c.op != "Linear" for c in consumers):
        return None
    a = np.asarray(b.observer(node.outputs[0]).chan_absmax, dtype=np.float64)
    w = np.max([np.abs(c.params["weight"]).max(axis=0) for c in consumers], axis=0)
    if a.shape != w.shape or not (a > 0).all() or not (w > 0).all():
        return None
    f = a ** alpha / w ** (1 - alpha)
    f = np.clip(f / np.exp(np.mean(np.log(f))), 1e-4, 1e4)
    return f


def _bind(b, shapes, float_name, int_name, shape):
    b.realised[float_name] = int_name
    b.tensors[int_name].source = float_name
    shapes[float_name] = tuple(shape)


def _emit_kernel(b, node, family, kernel, plan, x, shape, shapes):
    out = b.add_tensor(node.name, plan.out_fmt, plan.out_scale, shape)
    attrs = {"family": family, "kernel": kernel.name}
    if plan.info:
        attrs["info"] = {k: (float(v) if isinstance(v, (float, np.floating)) else v)
                         for k, v in plan.info.items()}
    b.emit(family, node.name, [x], [out], plan.consts, attrs, kernel.spec_section)
    _bind(b, shapes, node.outputs[0], out, shape)


def _const_at_scale(values, scale, fmt, what):
    """A float constant joining the residual stream: quantized at the stream's scale, ties to even,
    saturated like any other value of the stream (the stream's clipping may be below its max)."""
    return arith.quantize(values, scale, fmt).astype(np.int64)
