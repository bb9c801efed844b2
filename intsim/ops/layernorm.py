"""LayerNorm over the last axis (spec K4), with the optional LayerNorm -> Linear channel
equalization (docs/quantization.md Q5).

Lowering: a LayerNorm reads the residual stream (re-requantized to residual_bits if its input is
wider than 24 bits or per channel); the candidate is planned with gamma and beta (divided by the
equalization factors when they apply: the integer output then holds y / f, and the consuming
Linear layers take f into their weight columns; input_transforms.equalization_factors)."""
import numpy as np

from ..arith import IntFormat
from ..floatfn import layer_norm
from .base import KernelOp
from .input_transforms import equalization_factors


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
