"""Resize of the last two axes (H, W): nearest (an exact gather) and bilinear with integer weights
(spec K9).

Offline (plan): for every output row and column, the source coordinate c of ONNX's coordinate
transformation (half_pixel, pytorch_half_pixel, align_corners, asymmetric), computed as ONNX Runtime
computes it: in IEEE float32, operation by operation, from the float32 scale (out / in in float32
when sizes are given); from there on exact. Nearest: the source index by the nearest_mode rounding
of c, clamped to [0, n-1]. Linear: c clamped to [0, n-1], i0 = floor(c), i1 = min(i0 + 1, n - 1),
and the weight of i1 rounded half up to P fraction bits, w1 = floor(lam * 2^P + 1/2), lam = c - i0;
the weight of i0 is 2^P - w1. These index and weight tables are the plan's integer constants.

Run time, bilinear (K9.2): acc = sum over the 2 x 2 neighbours of wy * wx * x (int64, exact), then
y = round_shift(acc, 2P) (A3): one rounding, same format and scale as the input, never saturating
(a convex combination lies between its neighbours).
"""
from fractions import Fraction
import math

import numba
import numpy as np

from .. import arith
from ..arith import ArithSpecError, ConstFormat, IntFormat
from .base import Consts, Kernel, KernelPlan

MODES = ("nearest", "linear")
COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
WEIGHT_BITS = 12            # P: fraction bits of a bilinear weight (K9.2)
IN_BITS_MAX = 16


def source_coordinate(x, n_in, n_out, scale, mode):
    """ONNX Resize's coordinate transformation of output index x along one axis, in float32 as
    ONNX Runtime evaluates it (each operation rounded to float32), as an exact Fraction."""
    f, half, x = np.float32, np.float32(0.5), np.float32(x)
    if mode in ("half_pixel", "pytorch_half_pixel"):
        c = f(0) if mode == "pytorch_half_pixel" and n_out == 1 else (x + half) / scale - half
    elif mode == "align_corners":
        c = f(0) if n_out == 1 else x * f(n_in - 1) / f(n_out - 1)
    elif mode == "asymmetric":
        c = x / scale
    else:
        raise ArithSpecError(f"resize: coordinate_transformation_mode {mode!r} is not supported; "
                         f"supported: {', '.join(COORDINATE_MODES)}")
    return Fraction(float(np.float32(c)))


def _nearest(c, mode):
    if mode == "round_prefer_floor":
        return math.ceil(c - Fraction(1, 2))
    if mode == "round_prefer_ceil":
        return math.floor(c + Fraction(1, 2))
    return math.floor(c) if mode == "floor" else math.ceil(c)


def axis_table(n_in, n_out, scale, mode, coord_mode, nearest_mode, p=WEIGHT_BITS):
    """One axis: (i0, i1, w1, lam) arrays of length n_out. Nearest: i0 = i1 = the source index,
    w1 = 0, lam = 0. Linear: the two neighbours, the integer weight of i1 (P bits) and the exact
    real weight lam (float64, for the float op and the error bound)."""
    i0, i1, w1, lam = (np.zeros(n_out, dtype=t) for t in (np.int64, np.int64, np.int64, np.float64))
    for x in range(n_out):
        c = source_coordinate(x, n_in, n_out, scale, coord_mode)
        if mode == "nearest":
            i0[x] = i1[x] = min(max(_nearest(c, nearest_mode), 0), n_in - 1)
            continue
        c = min(max(c, Fraction(0)), Fraction(n_in - 1))
        i0[x] = math.floor(c)
        i1[x] = min(i0[x] + 1, n_in - 1)
        lam[x] = float(c - i0[x])
        w1[x] = arith.round_half_up((c - i0[x]) * (1 << p))
    return i0, i1, w1, lam


def resize_tables(in_hw, out_hw, scales, mode, coord_mode, nearest_mode, p=WEIGHT_BITS):
    """Both axes' tables; `scales` (sy, sx) as floats (their exact binary values are used) or None
    for out/in."""
    if mode not in MODES:
        raise ArithSpecError(f"resize: mode {mode!r} is not supported; supported: {', '.join(MODES)}")
    if mode == "nearest" and nearest_mode not in NEAREST_MODES:
        raise ArithSpecError(f"resize: nearest_mode {nearest_mode!r} is not supported; supported: "
                             f"{', '.join(NEAREST_MODES)}")
    out = []
    for a in range(2):
        s = np.float32(out_hw[a]) / np.float32(in_hw[a]) if scales is None else np.float32(scales[a])
        if not s > 0:
            raise ArithSpecError(f"resize: scale {float(s)} along axis {a} must be positive")
        out.append(axis_table(in_hw[a], out_hw[a], s, mode, coord_mode, nearest_mode, p))
    return out


def resize_float(x, tables):
    """The float op (ONNX Resize on the last two axes) from the exact real weights, in x's dtype."""
    (y0, y1, _, ly), (x0, x1, _, lx) = tables
    ly = ly.astype(x.dtype)[:, None]
    lx = lx.astype(x.dtype)[None, :]
    top = x[..., y0, :]
    bottom = x[..., y1, :]
    rows_top = top[..., x0] * (1 - lx) + top[..., x1] * lx
    rows_bottom = bottom[..., x0] * (1 - lx) + bottom[..., x1] * lx
    return rows_top * (1 - ly) + rows_bottom * ly


def resize_linear_acc(x, c):
    """K9.2's acc in NumPy: the four int64 products of each output, summed (exact)."""
    one = np.int64(1) << np.int64(c["P"])
    wy1, wx1 = c["wy"][:, None], c["wx"][None, :]
    wy0, wx0 = one - wy1, one - wx1
    x = x.astype(np.int64)
    top, bottom = x[..., c["iy0"], :], x[..., c["iy1"], :]
    return (wy0 * (wx0 * top[..., c["ix0"]] + wx1 * top[..., c["ix1"]])
            + wy1 * (wx0 * bottom[..., c["ix0"]] + wx1 * bottom[..., c["ix1"]]))


def resize_linear_ref(x, c):
    """K9.2 in NumPy: acc rounded half up by 2P bits (A3)."""
    return arith.round_shift(resize_linear_acc(x, c), 2 * c["P"])


@numba.njit(cache=True, nogil=True)
def _resize_linear_planes(x3, iy0, iy1, wy, ix0, ix1, wx, p, out3):
    """resize_linear_ref per (plane, output row, output column) (the jitted twin)."""
    one = np.int64(1) << p
    for c in range(x3.shape[0]):
        for i in range(iy0.size):
            a0, a1, w_1 = iy0[i], iy1[i], wy[i]
            for j in range(ix0.size):
                b0, b1, v1 = ix0[j], ix1[j], wx[j]
                top = (one - v1) * np.int64(x3[c, a0, b0]) + v1 * np.int64(x3[c, a0, b1])
                bottom = (one - v1) * np.int64(x3[c, a1, b0]) + v1 * np.int64(x3[c, a1, b1])
                out3[c, i, j] = arith.round_shift1((one - w_1) * top + w_1 * bottom, 2 * p)


class Resize(Kernel):
    name = "resize"
    family = "resize"
    spec_section = "K9"
    title = "Resize of (H, W): nearest = exact gather; bilinear = P-bit integer weights, one rounding"

    def plan(self, in_scale, in_fmt, in_hw=None, out_hw=None, mode="linear", coord_mode="half_pixel",
             nearest_mode="round_prefer_floor", scales=None, weight_bits=WEIGHT_BITS):
        s = arith.check_scale("resize in_scale", in_scale)
        if not isinstance(in_fmt, IntFormat) or in_fmt.bits > IN_BITS_MAX:
            raise ArithSpecError(f"resize in_fmt must be an IntFormat of at most {IN_BITS_MAX} bits, "
                                 f"got {in_fmt!r}")
        p = arith.check_bits("resize weight_bits", weight_bits, 1, 20)
        if in_hw is None or out_hw is None or min(tuple(in_hw) + tuple(out_hw)) < 1:
            raise ArithSpecError(f"resize: input {in_hw} and output {out_hw} sizes must be >= 1")
        (y0, y1, wy, ly), (x0, x1, wx, lx) = resize_tables(in_hw, out_hw, scales, mode, coord_mode,
                                                           nearest_mode, p)
        consts = {"iy0": y0, "ix0": x0}
        if mode == "linear":
            consts.update(iy1=y1, wy=wy, ix1=x1, wx=wx, P=p)
        return KernelPlan(self.name, consts, in_fmt, in_fmt, s, {"mode": mode}, s,
                          {"lam_y": ly, "lam_x": lx})

    def const_formats(self, plan):
        """K9.0 tables: indices and weights in the narrowest registers holding them."""
        return {k: ConstFormat.holding(int(np.min(v)), int(np.max(v)), np.shape(v)) for k, v in plan.consts.items()}

    def check_consts(self, plan):
        """K9.0 tables: source indices inside the input (plan.info["in_hw"]), i0 <= i1 <= i0 + 1,
        weights in [0, 2^P], P in 1..20; the output format is the input's."""
        c = Consts(self, plan)
        linear = "P" in plan.consts
        c.require(plan.in_fmt == plan.out_fmt, "the output format must be the input's")
        p = int(plan.consts["P"]) if linear else 0
        c.require(not linear or 1 <= p <= 20, f"P = {p} outside [1, 20]")
        for axis, n_in in zip("yx", plan.info.get("in_hw", (1 << 30, 1 << 30))):
            i0 = np.asarray(plan.consts[f"i{axis}0"])
            c.require(i0.ndim == 1 and i0.size and i0.min() >= 0 and i0.max() < n_in, f"i{axis}0 outside the input")
            if linear:
                i1, w = np.asarray(plan.consts[f"i{axis}1"]), np.asarray(plan.consts[f"w{axis}"])
                c.require(i1.shape == w.shape == i0.shape and bool(np.all((i1 >= i0) & (i1 <= i0 + 1)))
                          and i1.max() < n_in and w.min() >= 0 and w.max() <= 1 << p,
                          f"i{axis}1 / w{axis} do not fit i{axis}0 and P")

    @staticmethod
    def _input(x, plan):
        x = arith.integer_input("resize input", x)
        if x.ndim < 2:
            raise ArithSpecError(f"resize input must have (H, W) as its last axes, got shape {x.shape}")
        arith.check_nonempty("resize input", x)
        arith.check_fits("resize input", x, plan.in_fmt)
        return x

    def reference(self, inputs, plan):
        x = self._input(inputs[0], plan)
        c = plan.consts
        if "P" not in c:                               # nearest: a gather (K9.1)
            return x[..., c["iy0"], :][..., c["ix0"]]
        return arith.saturate(resize_linear_ref(x, c), plan.out_fmt)

    def fast(self, inputs, plan):
        x = self._input(inputs[0], plan)
        c = plan.consts
        if "P" not in c:
            return np.ascontiguousarray(x[..., c["iy0"], :][..., c["ix0"]])
        x3 = np.ascontiguousarray(x).reshape((-1,) + x.shape[-2:])
        out = np.empty((x3.shape[0], c["iy0"].size, c["ix0"].size), dtype=plan.out_fmt.storage)
        _resize_linear_planes(x3, c["iy0"], c["iy1"], c["wy"], c["ix0"], c["ix1"], c["wx"],
                              np.int64(c["P"]), out)
        return out.reshape(x.shape[:-2] + out.shape[1:])

    def cost(self, shape, plan=None):
        """Per output: nearest reads one input; bilinear 6 products, 3 sums, the rounding."""
        if plan is not None and "P" not in plan.consts:
            return {"mul": 0.0, "shift": 0.0, "add": 0.0, "div": 0.0, "cmp": 0.0}
        return {"mul": 6.0, "shift": 1.0, "add": 3.0 + 1.0 + 2.0, "div": 0.0, "cmp": 0.0}

    def error_bound(self, plan, inputs):
        """Nearest: exact. Bilinear: half an output LSB of rounding plus the weights' rounding,
        |sum (w_int / 2^2P - w_real) x| S, evaluated on the inputs (float64, margin 1e-9 LSB)."""
        x = np.asarray(inputs[0], dtype=np.float64)
        c = plan.consts
        if "P" not in c:
            return np.zeros(x.shape[:-2] + (c["iy0"].size, c["ix0"].size))
        exact = resize_float(x, ((c["iy0"], c["iy1"], None, plan.float_params["lam_y"]),
                                 (c["ix0"], c["ix1"], None, plan.float_params["lam_x"])))
        scale = 2.0 ** -c["P"]                            # the integer weights as exact reals
        approx = resize_float(x, ((c["iy0"], c["iy1"], None, c["wy"] * scale),
                                  (c["ix0"], c["ix1"], None, c["wx"] * scale)))
        return plan.in_scale * (0.5 + np.abs(approx - exact) + 1e-9)

    def float_reference(self, x, plan=None):
        return resize_float(np.asarray(x, dtype=np.float64),
                            ((plan.consts["iy0"], plan.consts.get("iy1", plan.consts["iy0"]), None,
                              plan.float_params["lam_y"]),
                             (plan.consts["ix0"], plan.consts.get("ix1", plan.consts["ix0"]), None,
                              plan.float_params["lam_x"])))


RESIZE = Resize()
