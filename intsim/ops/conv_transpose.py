"""ConvTranspose: 2-D transposed convolution of (N, C, H, W) with any kernel, strides, pads,
output padding, dilations and groups (spec K1.8: per-pixel K1 products, col2im sums in int64, int32).

Lowering as Conv's; the weight (Cin, Cout/g, kh, kw) is quantized per output channel (the rows of
all the weights that reach output channel co), kept in the ONNX layout in the program."""
import numpy as np

from ..kernels.conv import CONV_TRANSPOSE2D, ConvGeometry, conv_transpose2d_float
from .conv import GEOMETRY_ATTRS, Conv, check_geometry


class ConvTranspose(Conv):
    semantic = "ConvTranspose"
    kind = "conv_transpose"
    spec = "K1.8"
    attrs = GEOMETRY_ATTRS + ("output_padding",)
    kernel = CONV_TRANSPOSE2D

    def infer(self, node, in_shapes):
        x, w = in_shapes[0], node.params["weight"].shape
        geo = ConvGeometry.of(node.attrs)
        bias = node.params.get("bias")
        ok = (len(w) == 4 and len(x) == 3 and w[0] == x[0] and x[0] % geo.group == 0
              and tuple(w[2:]) == geo.kernel and (bias is None or bias.shape == (w[1] * geo.group,)))
        check_geometry(self, node, in_shapes, geo, ok)
        ho, wo = geo.transpose_out_size(x[1:])
        if ho < 1 or wo < 1:
            self.bad(node, in_shapes, f"the pads leave no output (output {ho}x{wo})")
        return [(w[1] * geo.group, ho, wo)]

    def evaluate(self, node, inputs, dtype):
        return [conv_transpose2d_float(inputs[0], node.params["weight"], node.params.get("bias"),
                                       ConvGeometry.of(node.attrs))]

    def weight_rows(self, w, group):
        """(Cin, Cout/g, kh, kw) -> rows (Cout, Cin/g * kh * kw): output channel g*Cout/g + j reads
        the input channels of group g through w[g*Cin/g:(g+1)*Cin/g, j]."""
        cin, cg, kh, kw = w.shape
        rows = w.reshape(group, cin // group, cg, kh, kw).transpose(0, 2, 1, 3, 4).reshape(group * cg, -1)
        return rows, lambda r: np.ascontiguousarray(
            r.reshape(group, cg, cin // group, kh, kw).transpose(0, 2, 1, 3, 4).reshape(w.shape))

    @staticmethod
    def out_hw(geo, hw):
        return geo.transpose_out_size(hw)

    def taps(self, op, geo):
        """Products summed into one output, on average: Cin/g * kh * kw / (sh * sw)."""
        cin, _, kh, kw = op.consts["weight"].shape
        return cin // geo.group * kh * kw / (geo.strides[0] * geo.strides[1])
