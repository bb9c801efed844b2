"""Conv: 2-D convolution of (N, C, H, W) with any kernel, strides, pads, dilations and groups
(spec K1.7: im2col and the exact K1 product into int32, one product per group).

Lowering: the input is requantized to `abits` at its calibrated scale (unsigned when never
negative); the weight (Cout, C/g, kh, kw) is quantized per output channel as a Linear's, the bias at
the accumulator scale. The accumulator (N, Cout, Ho, Wo) is scaled per output channel along axis
-3, which the next requantization reads. A BatchNormalization after the convolution was folded into
its weight and bias by the importer; one that could not be is a depthwise 1x1 Conv."""
import numpy as np

from ..arith import ConstFormat, IntFormat
from ..kernels.conv import CONV2D, ConvGeometry, conv2d_float
from .base import OpCost, run_kernel, tensor_elements
from .linear import ACC, Linear, quantize_linear
from .patch_embed import fold_normalisation_into_conv

GEOMETRY_ATTRS = ("kernel_shape", "strides", "pads", "dilations", "group")


def check_geometry(op, node, in_shapes, geo, weight_ok):
    """Shared shape checks of Conv and ConvTranspose: (C, H, W) input, geometry, weight."""
    x = in_shapes[0]
    problem = geo.check()
    if not problem and len(x) != 3:
        problem = "expects a (C, H, W) input"
    if not problem and not weight_ok:
        problem = f"weight {node.params['weight'].shape} / group {geo.group} / kernel {geo.kernel} " \
                  f"do not fit the input's {x[0]} channels"
    if problem:
        op.bad(node, in_shapes, problem)


def conv_input(b, node):
    """The input realised at `abits` (or its `QuantConfig.wide` width; unsigned when never negative)
    at its calibrated scale."""
    src = node.inputs[0]
    fmt = b.act_format(src, b.operand_bits(f"{node.name}.in"))
    s = b.act_scale(src, fmt)
    return b.realise(src, fmt, s, f"{node.name}.in"), s


class Conv(Linear):
    semantic = "Conv"
    kind = "conv"
    gram_input = False      # nearest rounding only (GPTQ is for Linear layers)
    spec = "K1.7"
    params = ("weight",)
    optional_params = ("bias",)
    attrs = GEOMETRY_ATTRS
    kernel = CONV2D

    def infer(self, node, in_shapes):
        x, w = in_shapes[0], node.params["weight"].shape
        geo = ConvGeometry.of(node.attrs)
        bias = node.params.get("bias")
        ok = (len(w) == 4 and len(x) == 3 and w[1] * geo.group == x[0] and w[0] % geo.group == 0
              and tuple(w[2:]) == geo.kernel and (bias is None or bias.shape == w[:1]))
        check_geometry(self, node, in_shapes, geo, ok)
        ho, wo = geo.out_size(x[1:])
        if ho < 1 or wo < 1:
            self.bad(node, in_shapes, f"the input is smaller than the dilated kernel (output {ho}x{wo})")
        return [(w[0], ho, wo)]

    def evaluate(self, node, inputs, dtype):
        return [conv2d_float(inputs[0], node.params["weight"], node.params.get("bias"),
                             ConvGeometry.of(node.attrs))]

    def weight_rows(self, w, group):
        """The weight as (Cout, inputs per output channel) rows, and back (the program's layout)."""
        return w.reshape(w.shape[0], -1), lambda rows: rows.reshape(w.shape)

    def lower(self, node, b):
        x, s = conv_input(b, node)
        w = node.params["weight"]
        geo = ConvGeometry.of(node.attrs)
        rows, back = self.weight_rows(w, geo.group)
        consts, attrs, acc_scale = quantize_linear(b.layer_config(node.name), s, rows, node.params.get("bias"),
                                                   geo.to_attrs(self.kind == "conv_transpose"),
                                                   grouped=False)      # per output channel (Q13)
        consts["weight"] = back(consts["weight"])
        shape = b.shapes[node.inputs[0]]
        out_shape = (len(acc_scale),) + self.out_hw(geo, shape[1:])
        out = b.add_tensor(f"{node.name}.acc", ACC, acc_scale, out_shape, axis=-3)
        b.emit(self.kind, node.name, [x], [out], consts, attrs, self.spec)
        b.bind(node.outputs[0], out, out_shape)

    @staticmethod
    def out_hw(geo, hw):
        return geo.out_size(hw)

    def fold_input_normalisation(self, node, mean, std):
        if self.kind != "conv" or any(node.attrs["pads"]) or node.attrs["group"] != 1:
            super().fold_input_normalisation(node, mean, std)
        fold_normalisation_into_conv(node, mean, std)

    # --- run -----------------------------------------------------------------------------------
    def bind(self, op, program):
        """The weight prepared once per group, and the plan (formats, geometry, bias)."""
        w_fmt = IntFormat(**op.attrs["weight_fmt"])
        geo = ConvGeometry.of(op.attrs)
        plan = self.kernel.plan((1.0, 1.0), (program.tensors[op.inputs[0]].fmt, w_fmt), geo,
                                program.tensors[op.outputs[0]].fmt, op.consts.get("bias"),
                                self.taps(op, geo))
        self.kernel.check_consts(plan)
        return self.kernel.prepare(op.consts["weight"], w_fmt, geo.group), plan

    def run(self, op, inputs, bound, path):
        weights, plan = bound
        return [run_kernel(self.kernel, path, [inputs[0], weights], plan)]

    def const_formats(self, op, program):
        """The weight in its narrow format and layout (K1.7/K1.8), the bias one int32 per output channel."""
        w = op.consts["weight"]
        cout = program.tensors[op.outputs[0]].shape[0]
        formats = {"weight": ConstFormat.of(IntFormat(**op.attrs["weight_fmt"]), tuple(np.shape(w)))}
        if "bias" in op.consts:
            formats["bias"] = ConstFormat(32, signed=True, shape=(cout,))
        return formats

    def inner(self, op, program):
        """Products summed into one output (Linear's name for it: the cost and the registers)."""
        return self.taps(op, ConvGeometry.of(op.attrs))

    def taps(self, op, geo):
        """Products summed into one output: C/g * kh * kw."""
        return int(np.prod(op.consts["weight"].shape[1:]))

    def cost(self, op, program):
        macs = tensor_elements(program, op.outputs[0]) * self.taps(op, ConvGeometry.of(op.attrs))
        bits = program.tensors[op.inputs[0]].fmt.bits * int(op.attrs["weight_fmt"]["bits"])
        return OpCost({}, int(macs) * bits)
