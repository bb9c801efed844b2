"""LayerNorm over the last axis (spec K4), and the optional LayerNorm -> Linear channel
equalization (docs/quantization.md Q5).

Lowering: a LayerNorm reads the residual stream (re-requantized to residual_bits if its input is
wider than 24 bits or per channel); the candidate is planned with gamma and beta (divided by the
equalization factors when they apply: the integer output then holds y / f, and the consuming
Linear layers take f into their weight columns)."""
import numpy as np

from ..arith import IntFormat
from ..floatfn import layer_norm
from .base import KernelOp


def equalization_factors(b, node):
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
    return np.clip(f / np.exp(np.mean(np.log(f))), 1e-4, 1e4)


class LayerNorm(KernelOp):
    semantic = "LayerNorm"
    kind = family = "layernorm"
    spec = "K4"
    params = ("gamma", "beta")
    attrs = ("eps",)

    def infer(self, node, in_shapes):
        x = in_shapes[0]
        p = node.params
        if p["gamma"].shape != x[-1:] or p["beta"].shape != x[-1:] or not node.attrs["eps"] >= 0:
            self.bad(node, in_shapes, f"gamma {p['gamma'].shape} / beta {p['beta'].shape} / eps "
                                      f"{node.attrs['eps']} do not fit")
        return [x]

    def evaluate(self, node, inputs, dtype):
        p = node.params
        return [layer_norm(inputs[0], np.asarray(p["gamma"], dtype=dtype),
                           np.asarray(p["beta"], dtype=dtype), node.attrs["eps"])]

    def const_formats(self, op, program):
        """The candidate's declaration, with C the input's channel count (K4.0.2)."""
        formats = super().const_formats(op, program)
        formats["C"] = formats["C"].exactly(program.tensors[op.inputs[0]].shape[-1])
        return formats

    def lower(self, node, b):
        src = node.inputs[0]
        kernel = b.kernel_for(node, self.family)
        res_fmt = IntFormat(b.cfg.residual_bits)
        x = b.realised[src]
        info = b.tensors[x]
        if info.fmt.bits > 24 or isinstance(info.scale, list):
            x = b.realise(src, res_fmt, b.act_scale(src, res_fmt), f"{node.name}.in")
            info = b.tensors[x]
        f = equalization_factors(b, node)
        gamma, beta = node.params["gamma"], node.params["beta"]
        if f is not None:
            gamma, beta = gamma / f, beta / f
        plan = kernel.plan(info.scale, info.fmt, gamma=gamma, beta=beta,
                           eps=float(node.attrs.get("eps", 1e-6)))
        self.emit(b, node, kernel, plan, x, b.shapes[src])
        if f is not None:
            # the integer output holds y / f: its documentary scale is per channel
            out = b.realised[node.outputs[0]]
            b.tensors[out].scale = [float(v) for v in plan.out_scale * f]
            b.equalized[node.outputs[0]] = (f, b.observer(node.outputs[0]).divided(f), plan.out_scale)
