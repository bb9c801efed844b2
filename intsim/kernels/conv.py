"""2-D convolution and transposed convolution as exact integer products (spec K1.7, K1.8).

conv2d (K1.7):           the input is unfolded (im2col) into one row of C/g * kh * kw values per
                         output pixel, features in (C, kh, kw) order (the weight's flattened order);
                         padding inserts exact zeros (no zero points, A1). Each group is one K1
                         product with its slice of the bias.
conv_transpose2d (K1.8): each input pixel times the weight of its group, (Cin/g) x (Cout/g * kh *
                         kw), one K1 product per group (no bias); every product is then added into
                         the output position it lands on (col2im) in int64, the bias added, and the
                         sum checked against the accumulator (A4).

Reference and fast differ only in the product (MATMUL.reference or MATMUL.fast); im2col, col2im,
grouping and batching are one piece of code, which the float interpreter uses too (`conv2d_float`,
`conv_transpose2d_float`), so the float and integer convolutions cannot drift apart.
"""
from dataclasses import dataclass

import numpy as np

from .. import arith, reproducible
from ..arith import ConstFormat, IntFormat
from .base import Consts, Kernel, KernelPlan
from .gemm import PreparedWeight
from .matmul import MATMUL

ACC32 = IntFormat(32)
CHUNK_ELEMENTS = 1 << 24      # im2col rows of at most this many values per product (memory only)


@dataclass(frozen=True)
class ConvGeometry:
    """ONNX Conv / ConvTranspose attributes with every default filled in (2-D); as op attributes
    under ONNX's names (kernel_shape, strides, pads, dilations, group, output_padding)."""
    kernel: tuple                 # (kh, kw)
    strides: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)    # (top, left, bottom, right), ONNX order
    dilations: tuple = (1, 1)
    group: int = 1
    output_padding: tuple = (0, 0)   # ConvTranspose only

    @classmethod
    def of(cls, attrs):
        """From an op's JSON attrs (lists)."""
        return cls(tuple(attrs["kernel_shape"]), tuple(attrs.get("strides", (1, 1))),
                   tuple(attrs.get("pads", (0, 0, 0, 0))), tuple(attrs.get("dilations", (1, 1))),
                   int(attrs.get("group", 1)), tuple(attrs.get("output_padding", (0, 0))))

    def to_attrs(self, transpose=False):
        d = {"kernel_shape": list(self.kernel), "strides": list(self.strides), "pads": list(self.pads),
             "dilations": list(self.dilations), "group": self.group}
        return d | ({"output_padding": list(self.output_padding)} if transpose else {})

    def check(self):
        """The geometry's own rules (ONNX's): positive kernel, strides, dilations and groups, pads
        >= 0, 0 <= output_padding < stride (ONNX Runtime's rule). Returns an error text or ''."""
        two = all(len(v) == 2 for v in (self.kernel, self.strides, self.dilations, self.output_padding))
        if not two or len(self.pads) != 4:
            return "only 2-D convolutions (kernel, strides, dilations of 2 values, 4 pads) are supported"
        if min(self.kernel + self.strides + self.dilations) < 1 or self.group < 1 or min(self.pads) < 0:
            return f"kernel {self.kernel}, strides {self.strides}, dilations {self.dilations}, group " \
                   f"{self.group} must be >= 1 and pads {self.pads} >= 0"
        if any(not 0 <= p < s for p, s in zip(self.output_padding, self.strides)):
            return f"output_padding {self.output_padding} must be below the strides {self.strides}"
        return ""

    def out_size(self, hw):
        """Conv output (Ho, Wo) for an input (H, W); a size below 1 means the input is too small."""
        return tuple((n + self.pads[a] + self.pads[a + 2] - self.dilations[a] * (self.kernel[a] - 1) - 1)
                     // self.strides[a] + 1 for a, n in enumerate(hw))

    def transpose_out_size(self, hw):
        """ConvTranspose output (Ho, Wo) for an input (H, W) (ONNX's formula)."""
        return tuple(self.strides[a] * (n - 1) + self.output_padding[a]
                     + self.dilations[a] * (self.kernel[a] - 1) + 1 - self.pads[a] - self.pads[a + 2]
                     for a, n in enumerate(hw))


def im2col(x, geo: ConvGeometry):
    """(N, C, H, W) -> (N, Ho*Wo, C*kh*kw), output pixels row-major, features in (C, kh, kw)
    order; zeros where a tap falls into the padding. Any dtype (integers stay exact)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel, geo.strides, geo.dilations
    ho, wo = geo.out_size((h, w))
    xp = np.pad(x, ((0, 0), (0, 0), (geo.pads[0], geo.pads[2]), (geo.pads[1], geo.pads[3])))
    cols = np.empty((n, ho, wo, c, kh, kw), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            tap = xp[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw]
            cols[:, :, :, :, i, j] = tap.transpose(0, 2, 3, 1)
    return cols.reshape(n, ho * wo, c * kh * kw)


def col2im(cols, in_hw, geo: ConvGeometry, dtype):
    """ConvTranspose scatter: cols (N, H*W, Cout, kh, kw), the products of every input pixel,
    added into (N, Cout, Ho, Wo) at stride s and dilation d, then cropped by the pads. Integers
    are summed in int64 (exact)."""
    n, _, cout, kh, kw = cols.shape
    h, w = in_hw
    (sh, sw), (dh, dw), p = geo.strides, geo.dilations, geo.pads
    ho, wo = geo.transpose_out_size(in_hw)
    full = np.zeros((n, cout, max(sh * (h - 1) + dh * (kh - 1) + 1, p[0] + ho),
                     max(sw * (w - 1) + dw * (kw - 1) + 1, p[1] + wo)), dtype=dtype)
    grid = cols.reshape(n, h, w, cout, kh, kw).transpose(0, 3, 4, 5, 1, 2)    # (N, Cout, kh, kw, H, W)
    for i in range(kh):
        for j in range(kw):
            full[:, :, i * dh: i * dh + sh * (h - 1) + 1: sh, j * dw: j * dw + sw * (w - 1) + 1: sw] += grid[:, :, i, j]
    return full[:, :, p[0]: p[0] + ho, p[1]: p[1] + wo]


def conv_weight_groups(w, group):
    """Conv weight (Cout, C/g, kh, kw) -> per group the right operand (C/g*kh*kw, Cout/g)."""
    cout = w.shape[0]
    return [np.ascontiguousarray(w[g * cout // group:(g + 1) * cout // group].reshape(cout // group, -1).T)
            for g in range(group)]


def conv_transpose_weight_groups(w, group):
    """ConvTranspose weight (Cin, Cout/g, kh, kw) -> per group (Cin/g, Cout/g*kh*kw)."""
    cin = w.shape[0]
    return [np.ascontiguousarray(w[g * cin // group:(g + 1) * cin // group].reshape(cin // group, -1))
            for g in range(group)]


def _image_chunks(n, row_elements):
    """Batch slices whose unfolded rows hold at most CHUNK_ELEMENTS values (memory only)."""
    step = max(1, CHUNK_ELEMENTS // max(1, row_elements))
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


def _conv(x, weights, geo, product, biases):
    """The shared convolution driver: product(a, b, bias) is one exact (or float) matmul."""
    n, c, h, w = x.shape
    ho, wo = geo.out_size((h, w))
    g, k = geo.group, c // geo.group * geo.kernel[0] * geo.kernel[1]
    parts = []
    for rows in _image_chunks(n, ho * wo * c * geo.kernel[0] * geo.kernel[1]):
        cols = im2col(x[rows], geo)
        m = cols.shape[0] * cols.shape[1]
        groups = [product(np.ascontiguousarray(cols[:, :, j * k:(j + 1) * k]).reshape(m, k), weights[j],
                          biases[j]) for j in range(g)]
        parts.append(np.concatenate(groups, axis=-1).reshape(cols.shape[0], ho, wo, -1).transpose(0, 3, 1, 2))
    return np.ascontiguousarray(np.concatenate(parts))


def _conv_transpose(x, weights, geo, product, bias, finish):
    """The shared transposed-convolution driver: per group the pixel x weight products, col2im."""
    n, c, h, w = x.shape
    g, cg = geo.group, c // geo.group
    kh, kw = geo.kernel
    parts = []
    for rows in _image_chunks(n, h * w * _shape(weights[0])[-1] * g):
        xs = np.ascontiguousarray(x[rows].transpose(0, 2, 3, 1)).reshape(-1, c)       # (N*H*W, C)
        prods = [product(np.ascontiguousarray(xs[:, j * cg:(j + 1) * cg]), weights[j], None)
                 for j in range(g)]
        cols = np.concatenate([p.reshape(-1, h * w, p.shape[-1] // (kh * kw), kh, kw) for p in prods], axis=2)
        parts.append(finish(col2im(cols, (h, w), geo, np.int64 if cols.dtype.kind in "iu" else cols.dtype), bias))
    return np.concatenate(parts)


def conv2d_float(x, weight, bias, geo):
    """The float convolution (ONNX Conv) by the same im2col and grouping, in x's dtype; each
    group's product by `reproducible.linear` (exact on grids, the bias added before the one
    rounding: the same bits on every machine, docs/quantization.md Q18)."""
    ws = conv_weight_groups(np.asarray(weight, dtype=x.dtype), geo.group)
    bs = _bias_groups(None if bias is None else np.asarray(bias, dtype=x.dtype), geo.group)
    return _conv(x, ws, geo, lambda a, b, c: reproducible.linear(a, b.T, c, x.dtype), bs)


def conv_transpose2d_float(x, weight, bias, geo):
    """The float transposed convolution (ONNX ConvTranspose), in x's dtype; the pixel x weight
    products by `reproducible.product`, col2im's sums in a fixed order."""
    ws = conv_transpose_weight_groups(np.asarray(weight, dtype=x.dtype), geo.group)
    b = None if bias is None else np.asarray(bias, dtype=x.dtype)
    return _conv_transpose(x, ws, geo, lambda a, w, c: reproducible.product(a, w, x.dtype), b,
                           lambda acc, c: acc if c is None else acc + c[:, None, None])


def _finish(acc, bias, acc_fmt):
    """col2im sums (int64) plus the bias per output channel, checked against the accumulator (A4)."""
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)[:, None, None]
    arith.check_fits("conv_transpose accumulator", acc, acc_fmt)
    return acc.astype(acc_fmt.storage)


def _shape(w):
    return (w.b if isinstance(w, PreparedWeight) else np.asarray(w)).shape


def _bias_groups(bias, group):
    if bias is None:
        return [None] * group
    return np.split(np.asarray(bias), group)


class _ConvKernel(Kernel):
    """What both share: the plan (operand formats and scales, the geometry), the K1 product."""
    family = "conv"

    def plan(self, in_scale, in_fmt, geometry=None, acc_fmt: IntFormat = ACC32, bias=None, inner=None):
        """No constants of its own but the bias (the layer's, at the accumulator scale); the
        geometry is structural (plan.info); the accumulator scale is the product of the operand
        scales (per output channel when the weight's is). `inner`: products summed per output,
        for the cost."""
        sa, sb = in_scale
        if not isinstance(geometry, ConvGeometry) or geometry.check():
            raise arith.ArithSpecError(f"{self.name}: bad geometry {geometry!r}: "
                                       f"{geometry.check() if isinstance(geometry, ConvGeometry) else ''}")
        consts = {} if bias is None else {"bias": arith.int_const(f"{self.name} bias", bias)}
        return KernelPlan(self.name, consts, tuple(in_fmt), acc_fmt,
                          np.asarray(sa, dtype=np.float64) * np.asarray(sb, dtype=np.float64),
                          {"geometry": geometry, **({} if inner is None else {"inner": inner})},
                          tuple(in_scale))

    def _product(self, plan, path):
        def product(a, b, bias):
            mm = KernelPlan(MATMUL.name, {} if bias is None else {"bias": bias}, plan.in_fmt, plan.out_fmt)
            return getattr(MATMUL, path)([a, b], mm)
        return product

    def reference(self, inputs, plan):
        return self._run(inputs, plan, "reference")

    def fast(self, inputs, plan):
        return self._run(inputs, plan, "fast")

    def check_consts(self, plan):
        """At most a bias, one int32 per output channel (K1)."""
        Consts(self, plan)

    def const_formats(self, plan):
        """The bias: one int32 register per output channel (K1)."""
        return {k: ConstFormat(32, signed=True, shape=np.shape(v)) for k, v in plan.consts.items()}

    def error_bound(self, plan, inputs):
        """Exact (K1.7, K1.8): no error beyond the operands' own."""
        x, w = inputs
        return np.zeros((np.shape(x)[0], self.out_channels(w, plan)) + self.out_hw(plan, np.shape(x)[2:]))

    @staticmethod
    def _input(x, plan):
        x = arith.integer_input("convolution input", x)
        if x.ndim != 4:
            raise arith.ArithSpecError(f"convolution input must be (N, C, H, W), got shape {x.shape}")
        arith.check_fits("convolution input", x, plan.in_fmt[0])
        return x


class Conv2d(_ConvKernel):
    name = "conv2d"
    spec_section = "K1.7"
    title = "2-D convolution: im2col, one exact K1 product per group (+ bias), int32"

    def prepare(self, weight, w_fmt, group):
        """The weight as per-group right operands, checked and prepared once for the fast path."""
        return [MATMUL.prepare(w, w_fmt) for w in conv_weight_groups(weight, group)]

    def _run(self, inputs, plan, path):
        x, weights = inputs
        geo = plan.info["geometry"]
        x = self._input(x, plan)
        ws = weights if isinstance(weights, list) else self.prepare(weights, plan.in_fmt[1], geo.group)
        return _conv(x, ws, geo, self._product(plan, path), _bias_groups(plan.consts.get("bias"), geo.group))

    @staticmethod
    def out_channels(weight, plan):
        """Cout of the raw weight (Cout, C/g, kh, kw) or of its prepared groups."""
        if isinstance(weight, list):
            return sum(_shape(w)[-1] for w in weight)
        return np.shape(weight)[0]

    @staticmethod
    def out_hw(plan, hw):
        return plan.info["geometry"].out_size(hw)

    def cost(self, shape, plan=None):
        """One multiply-accumulate per tap of a group (C/g * kh * kw per output), plus the bias."""
        k = float(plan.info["inner"])
        return {"mul": k, "shift": 0.0, "add": k, "div": 0.0, "cmp": 0.0}


class ConvTranspose2d(_ConvKernel):
    name = "conv_transpose2d"
    spec_section = "K1.8"
    title = "2-D transposed convolution: one exact K1 product per group, col2im sums in int64, int32"

    def prepare(self, weight, w_fmt, group):
        return [MATMUL.prepare(w, w_fmt) for w in conv_transpose_weight_groups(weight, group)]

    def _run(self, inputs, plan, path):
        x, weights = inputs
        geo = plan.info["geometry"]
        x = self._input(x, plan)
        ws = weights if isinstance(weights, list) else self.prepare(weights, plan.in_fmt[1], geo.group)
        return _conv_transpose(x, ws, geo, self._product(plan, path), plan.consts.get("bias"),
                               lambda acc, bias: _finish(acc, bias, plan.out_fmt))

    @staticmethod
    def out_channels(weight, plan):
        """Cout of the raw weight (Cin, Cout/g, kh, kw) or of its prepared groups."""
        geo = plan.info["geometry"]
        if isinstance(weight, list):
            return sum(_shape(w)[-1] for w in weight) // (geo.kernel[0] * geo.kernel[1])
        return np.shape(weight)[1] * geo.group

    @staticmethod
    def out_hw(plan, hw):
        return plan.info["geometry"].transpose_out_size(hw)

    def cost(self, shape, plan=None):
        """Per output, the products that land on it: Cin/g * kh * kw / (sh * sw) on average, plus the
        adds that sum them."""
        k = float(plan.info["inner"])
        return {"mul": k, "shift": 0.0, "add": k, "div": 0.0, "cmp": 0.0}


CONV2D = Conv2d()
CONV_TRANSPOSE2D = ConvTranspose2d()
__all__ = ["CONV2D", "CONV_TRANSPOSE2D", "ConvGeometry", "col2im", "conv2d_float",
           "conv_transpose2d_float", "im2col"]
