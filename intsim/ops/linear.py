"""Linear: y = x @ W^T + b over the last axis (spec K1: exact integer product into int32).

Lowering: the input is requantized to `abits` at its calibrated scale (or, after an equalized
LayerNorm, at a per-channel scale whose factors the weight columns absorb, docs/quantization.md
Q5); the weight is quantized per output channel, the bias at the accumulator scale."""
import numpy as np

from ..arith import IntFormat
from ..errors import ProgramError
from ..kernels import MATMUL
from ..quantize import exact_bias_scales, quantize_bias, quantize_weight, weight_format
from .base import OpCost, OpDef, run_kernel, tensor_elements

ACC = IntFormat(32)


def quantize_linear(cfg, x_scale, weight2d, bias, extra_attrs=None):
    """Integer weight (Out, In) and bias, their attrs, and the accumulator scale, for an input
    whose LSB is x_scale (a scalar)."""
    w_q, w_s = quantize_weight(weight2d, cfg.wbits, cfg.weight_calib)
    acc_scale = x_scale * w_s
    consts = {"weight": w_q.reshape(weight2d.shape[0], -1)}
    if bias is not None:
        exact = exact_bias_scales(acc_scale, w_q, bias)
        w_s = np.where(exact != acc_scale, exact / x_scale, w_s)      # zero channels only
        acc_scale = exact
        consts["bias"] = quantize_bias(bias, acc_scale)
    # weight_scale is documentary (golden manifests): the real value of one weight LSB per
    # output channel; with equalization the integers hold W * f (docs/quantization.md Q5)
    attrs = {"weight_fmt": weight_format(cfg.wbits).to_dict(),
             "weight_scale": [float(v) for v in w_s]}
    attrs.update(extra_attrs or {})
    return consts, attrs, acc_scale


class Linear(OpDef):
    semantic = "Linear"
    kind = "linear"
    spec = "K1"
    params = ("weight",)
    optional_params = ("bias",)
    reads_narrow = True

    def infer(self, node, in_shapes):
        x, w = in_shapes[0], node.params["weight"].shape
        p = node.params
        if len(w) != 2 or w[1] != x[-1] or ("bias" in p and p["bias"].shape != w[:1]):
            self.bad(node, in_shapes, f"weight {w} / bias {p['bias'].shape if 'bias' in p else None} "
                                      f"do not fit")
        return [x[:-1] + (w[0],)]

    def evaluate(self, node, inputs, dtype):
        x, = inputs
        w = np.asarray(node.params["weight"], dtype=dtype)
        y = x.reshape(-1, x.shape[-1]) @ w.T      # one 2-D BLAS call: stacked matmul is slower
        if "bias" in node.params:
            y += np.asarray(node.params["bias"], dtype=dtype)
        return [y.reshape(x.shape[:-1] + (y.shape[-1],))]

    def lower(self, node, b):
        src = node.inputs[0]
        w = node.params["weight"]
        cfg = b.cfg
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
        consts, attrs, acc_scale = quantize_linear(cfg, s_eq, w, node.params.get("bias"))
        self.emit_product(b, node, x, consts, attrs, acc_scale, b.shapes[src][:-1] + (w.shape[0],))

    def emit_product(self, b, node, x, consts, attrs, acc_scale, out_shape):
        out = b.add_tensor(f"{node.name}.acc", ACC, acc_scale, out_shape)
        b.emit(self.kind, node.name, [x], [out], consts, attrs, self.spec)
        b.bind(node.outputs[0], out, out_shape)

    # --- run -----------------------------------------------------------------------------------
    def operand(self, x, op):
        """The left operand of the product (patch_embed unfolds the image first)."""
        return x

    def bind(self, op, program):
        """The weight transposed and prepared once for the fast path, and the product's plan."""
        w_fmt = IntFormat(**op.attrs["weight_fmt"])
        plan = MATMUL.plan((1.0, 1.0), (program.tensors[op.inputs[0]].fmt, w_fmt),
                           program.tensors[op.outputs[0]].fmt)
        plan.consts = {k: v for k, v in op.consts.items() if k != "weight"}
        MATMUL.check_consts(plan)
        w = op.consts["weight"]
        out = program.tensors[op.outputs[0]]
        if np.ndim(w) != 2 or w.shape[0] != out.shape[-1] or \
                ("bias" in plan.consts and np.shape(plan.consts["bias"]) != (w.shape[0],)):
            raise ProgramError(f"weight {np.shape(w)} / bias {np.shape(plan.consts.get('bias'))} do not fit "
                               f"an output of {out.shape[-1]} channels")
        return MATMUL.prepare(w.T, w_fmt), plan

    def run(self, op, inputs, bound, path):
        weight, plan = bound
        return [run_kernel(MATMUL, path, [self.operand(inputs[0], op), weight], plan)]

    def cost(self, op, program):
        macs = tensor_elements(program, op.outputs[0]) * op.consts["weight"].shape[1]
        bits = program.tensors[op.inputs[0]].fmt.bits * int(op.attrs["weight_fmt"]["bits"])
        return OpCost({}, macs * bits)

    def const_formats(self, op):
        return {"weight": IntFormat(**op.attrs["weight_fmt"]), "bias": ACC}

    def const_scales(self, op, program):
        """Bias: the accumulator's scale; weight: the real value of one weight LSB per output
        channel (accumulator scale / input scale)."""
        acc = program.tensors[op.outputs[0]].scale
        weight = op.attrs.get("weight_scale")
        if weight is None:
            weight = list(np.asarray(acc, dtype=np.float64) / float(program.tensors[op.inputs[0]].scale))
        return {"weight": weight, "bias": acc}
