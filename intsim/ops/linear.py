"""Linear: y = x @ W^T + b over the last axis (spec K1: exact integer product into int32).

Lowering: the input is requantized to `abits` at its calibrated scale (or, after an equalized
LayerNorm, at a per-channel scale whose factors the weight columns absorb, docs/quantization.md
Q5; or rotated first, Q8: input_transforms); the weight is quantized per output channel, the bias
at the accumulator scale."""
from dataclasses import replace
import warnings

import numpy as np

from .. import reproducible
from ..arith import ConstFormat, IntFormat
from ..errors import CompileError, IntsimWarning, ProgramError
from ..kernels import MATMUL, check_registers, hadamard
from ..kernels.matmul import grouped_weight, grouped_weight_format
from ..quantize import exact_bias_scales, quantize_bias, quantize_weight, quantize_weight_grouped, weight_format
from .base import OpCost, OpDef, run_kernel, tensor_elements
from .hadamard import lower_rotation
from .input_transforms import (
    quantized_weight,
    rotated_operand,
    rotation_block,
    rotation_wanted,
    smoothing_factors,
)

ACC = IntFormat(32)


def quantize_linear(cfg, x_scale, weight2d, bias, extra_attrs=None, input_is_zero=False, hessian=None,
                    quantized=None, grouped=True, input_mean=None):
    """Integer weight (Out, In) and bias, their attrs, and the accumulator scale, for an input
    whose LSB is x_scale (a scalar); input_is_zero: the input was 0 on every calibration value;
    hessian: the input's X^T X, for GPTQ rounding (QuantConfig.weight_round, damped by
    QuantConfig.damping); quantized: the
    nearest-rounded (weights, scales) if already made (GPTQ then rounds at those scales);
    grouped: the weight takes QuantConfig.weight_group's group scales (K1.9) when it asks;
    input_mean: E[x] per input channel, to correct the bias for the weights' rounding error
    (QuantConfig.bias_correction, docs/quantization.md Q15): b - E[x] (W_q - W)^T."""
    group = cfg.weight_group if grouped else 0
    attrs = {"weight_fmt": weight_format(cfg.wbits).to_dict()}
    if group:
        w_q, w_s, mult = quantize_weight_grouped(weight2d, cfg.wbits, group, cfg.group_scale_bits,
                                                 cfg.weight_calib, hessian, cfg.damping)
        attrs.update(weight_group=int(group), group_scale_fmt=group_scale_format(cfg.group_scale_bits).to_dict())
    elif quantized is not None and hessian is None:
        w_q, w_s = quantized
    else:
        w_q, w_s = quantize_weight(weight2d, cfg.wbits, cfg.weight_calib, hessian,
                                   scales=None if quantized is None else quantized[1], damp=cfg.damping)
    if input_mean is not None:
        w_real = (grouped_weight(w_q, mult, group) if group else w_q) * np.asarray(w_s, np.float64)[:, None]
        shift = reproducible.matmul(np.asarray(input_mean, np.float64)[None, :],
                                    (w_real - np.asarray(weight2d, np.float64)).T)[0]
        bias = (0.0 if bias is None else np.asarray(bias, np.float64)) - shift
    acc_scale = x_scale * w_s
    consts = {"weight": w_q.reshape(weight2d.shape[0], -1)}
    if group:
        consts["group_scale"] = mult
    if bias is not None:
        exact = exact_bias_scales(acc_scale, w_q, bias, input_is_zero)
        w_s = np.where(exact != acc_scale, exact / x_scale, w_s)      # zero channels only
        acc_scale = exact
        consts["bias"] = quantize_bias(bias, acc_scale)
    # weight_scale is documentary (golden manifests): the real value of one weight LSB per
    # output channel (of one unit of q x group_scale when grouped); with equalization the
    # integers hold W * f (docs/quantization.md Q5)
    attrs["weight_scale"] = [float(v) for v in w_s]
    attrs.update(extra_attrs or {})
    return consts, attrs, acc_scale


def group_scale_format(bits):
    """K1.9: a group's scale multiplier, unsigned (0 allowed: a group of zeros)."""
    return IntFormat(bits, signed=False)


def product_weight_format(op):
    """The format of the weight register the product reads: the weight's own, or a grouped
    weight's expanded register (K1.9)."""
    w_fmt = IntFormat(**op.attrs["weight_fmt"])
    if "weight_group" not in op.attrs:
        return w_fmt
    return grouped_weight_format(w_fmt, IntFormat(**op.attrs["group_scale_fmt"]))


def product_weight(op):
    """The weight register the product reads: the weight, or q x group_scale (K1.9)."""
    q = op.consts["weight"]
    if "weight_group" not in op.attrs:
        return q
    return grouped_weight(q, op.consts["group_scale"], int(op.attrs["weight_group"])).astype(
        product_weight_format(op).storage)


def gptq_hessian(b, node, f, block, cfg):
    """X^T X of the integer input as the weight sees it (the float input rotated by the Hadamard
    blocks of size `block`, if any, then divided by the channel factors f, if any), when
    the layer's configuration `cfg` (QuantConfig.for_layer) rounds with GPTQ (QuantConfig.gptq);
    None for nearest rounding. Without the statistics, weight_round gptq is an error and auto
    falls back to nearest, with a warning."""
    if not cfg.gptq:
        return None
    obs = b.obs.get(node.inputs[0])         # the Linear's own input, not a moved-from tensor
    if obs is None or obs.gram is None:
        if cfg.weight_round == "auto":
            warnings.warn(f"weight_round auto at {cfg.wbits}-bit weights: the calibration holds no "
                          f"X^T X, so Linear weights round to nearest (calibrate with gram=True for "
                          f"GPTQ)", IntsimWarning, stacklevel=2)
            return None
        raise CompileError(f"Linear {node.name!r}: weight_round gptq needs the input's X^T X: "
                           f"calibrate with gram=True")
    gram = obs.gram
    if block:               # (X H)^T (X H) = H^T (X^T X) H, H block diagonal and symmetric
        gram = hadamard.rotate_float(np.ascontiguousarray(hadamard.rotate_float(gram, block).T), block)
    return gram if f is None else gram / np.outer(f, f)


def correction_mean(b, node, obs, w):
    """E[z] per input channel of the operand z the weight w sees (obs: its observer, or None), for
    the bias correction (QuantConfig.bias_correction, docs/quantization.md Q15); None where it is
    not known channel by channel (no statistics of the Linear's own input) or the input is 0."""
    mean = None if obs is None else obs.chan_mean
    if mean is None or mean.shape != (w.shape[1],) or b.observer(node.inputs[0]).is_zero:
        return None
    return mean


class Linear(OpDef):
    semantic = "Linear"
    kind = "linear"
    spec = "K1"
    params = ("weight",)
    optional_params = ("bias",)
    reads_narrow = True
    gram_input = True       # GPTQ rounds the weight with the input's X^T X (gptq_hessian)

    def reads_wide(self, b, node):
        return self.gram_input and rotation_wanted(b, node) > 0

    def infer(self, node, in_shapes):
        x, w = in_shapes[0], node.params["weight"].shape
        p = node.params
        if len(w) != 2 or w[1] != x[-1] or ("bias" in p and p["bias"].shape != w[:1]):
            self.bad(node, in_shapes, f"weight {w} / bias {p['bias'].shape if 'bias' in p else None} "
                                      f"do not fit")
        return [x[:-1] + (w[0],)]

    def evaluate(self, node, inputs, dtype):
        return [reproducible.linear(inputs[0], node.params["weight"], node.params.get("bias"), dtype)]

    def lower(self, node, b):
        src = node.inputs[0]
        w = node.params["weight"]
        cfg = b.layer_config(node.name)        # the layer's weight width (layer_wbits, Q14)
        f, block = None, rotation_block(b, node)
        if block:
            # rotated (docs/quantization.md Q8): the integer operand holds x H / sqrt(B) requantized,
            # so the weight columns take the same rotation (W H / sqrt(B): y = (x H)(W H)^T)
            rotated = lower_rotation(b, src, block, f"{src}.hadamard{block}")
            obs, w = rotated_operand(b, node, block)
            fmt = IntFormat(b.operand_bits(f"{node.name}.in"), signed=not obs.nonnegative)
            s_eq = obs.scale(fmt, cfg.act_calib, cfg.percentile)
            x = b.realise(rotated, fmt, s_eq, f"{node.name}.in")
        elif src in b.equalized:
            # LayerNorm output equalized (docs/quantization.md Q5): the integer tensor holds y / f,
            # so the weight columns take the factor f
            f, obs, ln_scale = b.equalized[src]
            fmt = IntFormat(b.operand_bits(f"{node.name}.in"), signed=not obs.nonnegative)
            s_eq = obs.scale(fmt, cfg.act_calib, cfg.percentile)
            x = b.realise(src, fmt, s_eq * f, f"{node.name}.in", ratio=ln_scale / s_eq)
            w = w * f[None, :]
        elif (f := smoothing_factors(b, node)) is not None:
            # the requantization divides channel c by f_c; the weight column takes f_c
            obs = b.observer(src).divided(f)
            fmt = IntFormat(b.operand_bits(f"{node.name}.in"), signed=not obs.nonnegative)
            s_eq = obs.scale(fmt, cfg.act_calib, cfg.percentile)
            x = b.realise(src, fmt, s_eq * f, f"{node.name}.in")
            w = w * f[None, :]
        else:
            obs = b.obs.get(src)                # the Linear's own input (bias correction's mean)
            fmt = b.act_format(src, b.operand_bits(f"{node.name}.in"))
            s_eq = b.act_scale(src, fmt)
            x = b.realise(src, fmt, s_eq, f"{node.name}.in")
        hessian = gptq_hessian(b, node, f, block, cfg)
        mean = correction_mean(b, node, obs, w) if cfg.bias_correction else None
        consts, attrs, acc_scale = quantize_linear(cfg, s_eq, w, node.params.get("bias"),
                                                   input_is_zero=b.observer(src).is_zero, hessian=hessian,
                                                   quantized=quantized_weight(b, w, cfg), input_mean=mean)
        self.emit_product(b, node, x, consts, attrs, acc_scale, b.shapes[src][:-1] + (w.shape[0],))

    def emit_product(self, b, node, x, consts, attrs, acc_scale, out_shape):
        out = b.add_tensor(f"{node.name}.acc", ACC, acc_scale, out_shape)
        b.emit(self.kind, node.name, [x], [out], consts, attrs, self.spec)
        b.bind(node.outputs[0], out, out_shape)

    # --- run -----------------------------------------------------------------------------------
    def operand(self, x, op):
        """The left operand of the product (patch_embed unfolds the image first)."""
        return x

    def product_plan(self, op, program):
        """The matmul plan of the layer: its operand formats, the accumulator, the bias if any."""
        plan = MATMUL.plan((1.0, 1.0), (program.tensors[op.inputs[0]].fmt, product_weight_format(op)),
                           program.tensors[op.outputs[0]].fmt)
        plan.consts = {k: v for k, v in op.consts.items() if k not in ("weight", "group_scale")}
        return plan

    def bind(self, op, program):
        """The weight and bias checked against their registers (format and shape, const_formats),
        the weight transposed and prepared once for the fast path, and the product's plan."""
        check_registers(f"{op.kind} {op.name!r}", self.const_formats(op, program), op.consts)
        plan = MATMUL.bind(self.product_plan(op, program))
        return MATMUL.prepare(product_weight(op).T, plan.in_fmt[1]), plan

    def run(self, op, inputs, bound, path):
        weight, plan = bound
        return [run_kernel(MATMUL, path, [self.operand(inputs[0], op), weight], plan)]

    def fuse_requant(self, op, bound, requantizer):
        """The accumulator requantized in the product's epilogue (per tensor or per output channel)."""
        weight, plan = bound
        if type(self).run is not Linear.run or not requantizer.along_columns:
            return None             # a subclass that runs another product (Conv) is not fused
        return lambda inputs: MATMUL.fast([self.operand(inputs[0], op), weight], plan, requantizer)

    def cost(self, op, program):
        macs = tensor_elements(program, op.outputs[0]) * op.consts["weight"].shape[1]
        bits = program.tensors[op.inputs[0]].fmt.bits * int(op.attrs["weight_fmt"]["bits"])
        return OpCost({}, macs * bits)

    def const_formats(self, op, program):
        """K1: the weight (Out, In) in its narrow weight format, the bias (Out,) in the
        accumulator's (the matmul kernel's declaration)."""
        n_out, n_in = program.tensors[op.outputs[0]].shape[-1], self.inner(op, program)
        formats = {"weight": ConstFormat.of(IntFormat(**op.attrs["weight_fmt"]), (n_out, n_in))}
        if "weight_group" in op.attrs:
            group = op.attrs["weight_group"]
            if isinstance(group, bool) or not isinstance(group, int) or group < 1:
                raise ProgramError(f"{op.kind} {op.name!r}: weight_group = {group!r} is not a group size >= 1")
            formats["group_scale"] = ConstFormat.of(IntFormat(**op.attrs["group_scale_fmt"]),
                                                    (n_out, -(-n_in // group)))
        for name, f in MATMUL.const_formats(self.product_plan(op, program)).items():
            formats[name] = replace(f, shape=(n_out,))
        return formats

    def inner(self, op, program):
        """The product's inner dimension K: the input's last axis (patch_embed: C p p)."""
        return program.tensors[op.inputs[0]].shape[-1]

    def const_scales(self, op, program):
        """Bias: the accumulator's scale; weight: the real value of one weight LSB per output
        channel (accumulator scale / input scale)."""
        acc = program.tensors[op.outputs[0]].scale
        weight = op.attrs.get("weight_scale")
        if weight is None and acc is not None:
            weight = list(np.asarray(acc, dtype=np.float64) / float(program.tensors[op.inputs[0]].scale))
        return {"weight": weight, "bias": acc}
