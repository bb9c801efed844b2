"""Float ops of a constant path whose bits do not depend on the engine or the machine.

The constants an image-path node reads (a resized position embedding, a product of two weights,
shape arithmetic) become parameters of the semantic graph, so they decide integers. fold.py
evaluates them with onnx.reference.ReferenceEvaluator and the classes below (`OPS`) in place of
its ops that compute in float. The rule: each is computed in float64 with operations whose result
IEEE-754 defines (+ - * / sqrt, comparisons) in an order fixed here, with intsim.reproducible's
products and sums and intsim.elementary's exp / log / erf, and rounded once to the output type:

- Resize (opset >= 11; mode nearest, linear or cubic; coordinate_transformation_mode half_pixel,
  half_pixel_symmetric, pytorch_half_pixel, align_corners, asymmetric or tf_half_pixel_for_nn;
  cubic_coeff_a, exclude_outside, nearest_mode, keep_aspect_ratio_policy, antialias for linear
  and cubic): one 1-D pass per resized axis in ascending axis order, each output the sum of its
  taps (weight * input) added in tap order, coordinates and weights as the ONNX operator spec
  defines them (`taps`). Nearest only gathers. Integer data is rounded half to even and
  saturated. tf_crop_and_resize is refused with an error naming the node.
- MatMul, Gemm: reproducible.matmul with two grid slices (42 bits of each operand; three, 63 bits,
  for float64), Gemm's alpha * product + beta * C in float64.
- ReduceSum, ReduceMean: reproducible.row_sums (sequential, index order); the mean divides once.
- Exp, Log, Erf: intsim.elementary. Softmax: exp(x - max) / sum, the sum by row_sums (before
  opset 13 over the axes from `axis` on, as one row).
- Pow: an integer-valued exponent by repeated squaring and multiplication (a fixed order), 1 / x^n
  for a negative one; exponent +-0.5 by sqrt; any other exp(y * log(x)).
With integer inputs these ops keep onnx.reference's code (integer arithmetic is exact).

Ops in EXACT are exact in any engine (data movement, comparisons, integer arithmetic, and
element-wise float ops that are one IEEE operation per element) and keep onnx.reference's code.
Any other op that reads or writes a float on a constant path (Sin, Tanh, Conv, Einsum, a float
Range, ...) is evaluated by onnx.reference's NumPy code as well, and fold.py warns that its value
may differ in the last bit between machines (`concern`).
"""
import math

import numpy as np
from onnx import helper
from onnx.reference.op_run import OpRun
from onnx.reference.ops import load_op

from .. import elementary, reproducible

EXACT = frozenset("""
    Identity Dropout Constant ConstantOfShape Shape Size Reshape Flatten Transpose Squeeze Unsqueeze
    Slice Gather GatherElements GatherND ScatterElements ScatterND Concat Split Tile Expand Pad Trilu
    DepthToSpace SpaceToDepth EyeLike OneHot NonZero Range Cast CastLike Where Equal Less LessOrEqual
    Greater GreaterOrEqual Not And Or Xor BitShift BitwiseAnd BitwiseOr BitwiseXor BitwiseNot IsNaN
    IsInf Sign Mod ArgMax ArgMin ReduceMax ReduceMin Max Min Clip Relu Abs Neg Floor Ceil Round
    Add Sub Mul Div Sqrt Reciprocal
""".split())
EXACT_ON_INTEGERS = frozenset({"Range"})          # a float Range accumulates roundings
RESIZE_MODES = ("nearest", "linear", "cubic")
COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                    "asymmetric", "tf_half_pixel_for_nn")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
ASPECT_POLICIES = ("stretch", "not_larger", "not_smaller")


def _is_float(a):
    dtype = getattr(a, "dtype", None)
    return dtype is not None and np.issubdtype(dtype, np.floating)


def _rounded(y, dtype):
    """float64 y rounded once to `dtype` (integers: half to even, saturated)."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(y), info.min, info.max).astype(dtype)
    return np.asarray(y).astype(dtype)


def _slices(dtype):
    return 3 if np.dtype(dtype) == np.float64 else 2


class _Deterministic(OpRun):
    """A float op computed here; `_reference` runs onnx.reference's own code for the node (on
    integers, where it is exact)."""
    op_domain = ""

    def _opset(self):
        return self.run_params["opsets"].get("", 1)

    def _reference(self, *inputs):
        cls = load_op("", self.onnx_node.op_type, self._opset())
        return cls(self.onnx_node, self.run_params).run(*inputs)


# --- products and sums --------------------------------------------------------------------------

def product(a, b):
    """a @ b (np.matmul's broadcasting, 1-D operands promoted) in float64 by reproducible.matmul."""
    dtype = np.result_type(a, b)
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    y = reproducible.matmul(a2, b2, slices=_slices(dtype))
    if a.ndim == 1:
        y = y[..., 0, :]
    if b.ndim == 1:
        y = y[..., 0]
    return y


class MatMul(_Deterministic):
    def _run(self, a, b):
        if not (_is_float(a) or _is_float(b)):
            return self._reference(a, b)
        return (_rounded(product(a, b), np.result_type(a, b)),)


class Gemm(_Deterministic):
    def _run(self, a, b, c=None, alpha=1.0, beta=1.0, transA=0, transB=0, broadcast=None):
        if not (_is_float(a) or _is_float(b)):
            return self._reference(*[v for v in (a, b, c) if v is not None])
        y = product(a.T if transA else a, b.T if transB else b)
        if alpha != 1.0:
            y *= float(alpha)
        if c is not None and beta != 0.0:
            y = y + float(beta) * np.asarray(c, np.float64)
        return (_rounded(y, a.dtype),)


def _reduce_axes(data, axes, noop_with_empty_axes):
    """The reduced axes as a tuple, or None for 'no reduction' (empty axes with the noop flag)."""
    axes = [] if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
    if not axes:
        return None if noop_with_empty_axes else tuple(range(data.ndim))
    return tuple(sorted(a % data.ndim for a in axes))


def _reduce(op, data, axes, keepdims, noop_with_empty_axes, mean):
    if not _is_float(data):
        return op._reference(*([data] if axes is None or op._attr_axes() else [data, axes]))
    axes = _reduce_axes(data, axes, noop_with_empty_axes)
    if axes is None:
        return (data,)
    y = reproducible.row_sums(data, axes)
    if mean:
        y = y / float(np.prod([data.shape[a] for a in axes]))
    if not keepdims:
        y = np.squeeze(y, axis=axes)
    return (_rounded(y, data.dtype),)


class ReduceSum(_Deterministic):
    def _attr_axes(self):
        return any(a.name == "axes" for a in self.onnx_node.attribute)

    def _run(self, data, axes=None, keepdims=1, noop_with_empty_axes=0):
        return _reduce(self, data, axes, keepdims, noop_with_empty_axes, mean=False)


class ReduceMean(ReduceSum):
    def _run(self, data, axes=None, keepdims=1, noop_with_empty_axes=0):
        return _reduce(self, data, axes, keepdims, noop_with_empty_axes, mean=True)


# --- elementary functions -----------------------------------------------------------------------

class Exp(_Deterministic):
    def _run(self, x):
        return (_rounded(elementary.exp(x), x.dtype),)


class Log(_Deterministic):
    def _run(self, x):
        return (_rounded(elementary.log(x), x.dtype),)


class Erf(_Deterministic):
    def _run(self, x):
        return (_rounded(elementary.erf(x), x.dtype),)


class Softmax(_Deterministic):
    def _run(self, x, axis=-1):
        if self._opset() < 13:   # before opset 13: the axes from `axis` on (default 1) as one row
            if not any(a.name == "axis" for a in self.onnx_node.attribute):
                axis = 1
            rows = x.reshape(int(np.prod(x.shape[:axis % max(x.ndim, 1)])), -1)
            return (self._run_axis(rows, -1).reshape(x.shape),)
        return (self._run_axis(x, axis),)

    @staticmethod
    def _run_axis(x, axis):
        x64 = np.asarray(x, np.float64)
        e = elementary.exp(x64 - np.max(x64, axis=axis, keepdims=True))
        return _rounded(e / reproducible.row_sums(e, axis), x.dtype)


class Pow(_Deterministic):
    def _run(self, x, y):
        if not _is_float(x):
            return self._reference(x, y)
        return (_rounded(power(x, y), x.dtype),)


def power(x, y):
    """x ** y in float64, element by element (broadcast)."""
    x, y = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64))
    whole = (y == np.floor(y)) & (np.abs(y) < 2.0 ** 62)     # integer-valued and finite
    out = _integer_power(x, np.where(whole, y, 0).astype(np.int64))
    if not whole.all():
        with np.errstate(invalid="ignore", divide="ignore"):
            root = np.sqrt(x)
            general = np.where(y == 0.5, root, np.where(y == -0.5, 1.0 / root,
                                                        elementary.exp(y * elementary.log(x))))
        out = np.where(whole, out, general)
    return out


def _integer_power(x, n):
    """x ** n for integers n: square and multiply from the lowest bit of |n| up, 1 / x^|n| for
    n < 0."""
    m = np.abs(n)
    out, square = np.ones_like(x), x.copy()
    while m.any():
        out = np.where(m & 1, out * square, out)
        m = m >> 1
        if m.any():
            square = square * square
    with np.errstate(divide="ignore"):
        return np.where(n < 0, 1.0 / out, out)


# --- Resize -------------------------------------------------------------------------------------

def attributes(node):
    """{name: value} of a NodeProto's attributes, strings decoded."""
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def unsupported(node, opset):
    """Why a constant-path node cannot be computed here (a Resize outside the rule above), else None."""
    if node.op_type != "Resize" or node.domain not in ("", "ai.onnx"):
        return None
    if opset < 11:
        return f"Resize of opset {opset} (before 11) is not supported on a constant path"
    a = attributes(node)
    mode = a.get("mode", "nearest")
    checks = [("mode", mode, RESIZE_MODES),
              ("antialias", a.get("antialias", 0), (0,) if mode == "nearest" else (0, 1)),
              ("coordinate_transformation_mode", a.get("coordinate_transformation_mode", "half_pixel"),
               COORDINATE_MODES),
              ("nearest_mode", a.get("nearest_mode", "round_prefer_floor"), NEAREST_MODES),
              ("keep_aspect_ratio_policy", a.get("keep_aspect_ratio_policy", "stretch"), ASPECT_POLICIES)]
    for name, value, allowed in checks:
        if value not in allowed:
            return (f"Resize with {name}={value!r} is not supported on a constant path (supported: "
                    f"{', '.join(map(repr, allowed))})")
    return None


def concern(node, values):
    """Whether onnx.reference's code for this node may give other bits on another machine: an op
    neither exact nor computed here that reads or writes a float. values: name -> value."""
    standard = node.domain in ("", "ai.onnx")
    if standard and (node.op_type in OP_NAMES or node.op_type in EXACT - EXACT_ON_INTEGERS):
        return False
    return any(_is_float(values.get(t)) for t in list(node.input) + list(node.output) if t)


def resize_targets(shape, scales, sizes, axes, policy):
    """(output length, scale) of every axis: from `sizes` (scale = output / input, or the common
    scale of keep_aspect_ratio_policy) or from `scales` (output = floor(input * scale))."""
    r = len(shape)
    axes = list(range(r)) if axes is None else [int(a) % r for a in axes]
    out, scale = list(shape), [1.0] * r
    if sizes is not None and np.size(sizes):
        sizes = [int(s) for s in np.asarray(sizes).reshape(-1)]
        ratios = [s / shape[d] for s, d in zip(sizes, axes)]
        common = min(ratios) if policy == "not_larger" else max(ratios)
        for s, d, ratio in zip(sizes, axes, ratios):
            if policy == "stretch":
                out[d], scale[d] = s, ratio
            else:    # round_int: the nearest integer, halfway cases up
                out[d], scale[d] = int(math.floor(common * shape[d] + 0.5)), common
    else:
        for s, d in zip(np.asarray(scales, np.float64).reshape(-1), axes):
            out[d], scale[d] = int(math.floor(float(s) * shape[d])), float(s)
    return out, scale


def source_coordinates(mode, n_out, n_in, scale):
    """x_original of every output position along one axis (the spec's formulas, in float64)."""
    x = np.arange(n_out, dtype=np.float64)
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        adjustment = n_out / (scale * n_in)
        offset = n_in / 2 * (1 - adjustment)
        return offset + (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if n_out > 1 else np.zeros(n_out)
    if mode == "align_corners":
        return x * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(n_out)
    if mode == "asymmetric":
        return x / scale
    return (x + 0.5) / scale            # tf_half_pixel_for_nn


def nearest_index(x, nearest_mode, n_in):
    """The input index of each source coordinate (x - floor(x) is exact), clamped to the axis."""
    base = np.floor(x)
    frac = x - base
    up = {"round_prefer_floor": frac > 0.5, "round_prefer_ceil": frac >= 0.5,
          "floor": np.zeros_like(frac, bool), "ceil": frac > 0}[nearest_mode]
    return np.clip(base.astype(np.int64) + up, 0, n_in - 1)


def cubic_kernel(d, a):
    """Keys' cubic convolution kernel with coefficient a at distances d >= 0 (0 from 2 on)."""
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def taps(x, n_in, mode, a, exclude_outside, scale=1.0, antialias=0):
    """(input indices, weights), each (n_out, taps), of linear or cubic interpolation at source
    coordinates x. The taps are floor(x) + k for k from 1 + floor(-r / s) to -floor(-r / s), r
    the kernel's reach (1 linear, 2 cubic) and s = min(scale, 1) with antialias (the kernel
    stretched by 1 / s when downscaling), else 1: the four (two) neighbours of x. Each weighs the
    kernel at s * |tap - x|: 1 - t and t for linear without antialias (t = x - floor(x), exact),
    else the linear kernel max(0, 1 - d) or the cubic kernel. Taps outside the axis read its
    edge, or with exclude_outside weigh 0; with antialias or exclude_outside the weights are then
    divided by their sum (added in tap order)."""
    base = np.floor(x)
    t = x - base
    s = min(scale, 1.0) if antialias else 1.0
    first = math.floor(-(1 if mode == "linear" else 2) / s) + 1
    offsets = np.arange(first, 2 - first)
    index = base.astype(np.int64)[:, None] + offsets
    d = np.abs(offsets[None, :] - t[:, None]) * s
    if mode == "linear":
        w = np.stack([1 - t, t], axis=1) if not antialias else np.maximum(1 - d, 0.0)
    else:
        w = cubic_kernel(d, a)
    if exclude_outside:
        w = np.where((index < 0) | (index >= n_in), 0.0, w)
    if exclude_outside or antialias:
        total = w[:, 0].copy()
        for k in range(1, w.shape[1]):
            total += w[:, k]
        w = w / total[:, None]
    return np.clip(index, 0, n_in - 1), w


def interpolate(y, axis, index, w):
    """One 1-D pass along `axis` in float64: out[i] = sum over taps k, in order, of
    w[i, k] * y[index[i, k]], each product and each sum rounded once."""
    y = np.moveaxis(np.asarray(y, np.float64), axis, 0)
    shape = (-1,) + (1,) * (y.ndim - 1)
    out = y[index[:, 0]] * w[:, 0].reshape(shape)
    for k in range(1, index.shape[1]):
        out += y[index[:, k]] * w[:, k].reshape(shape)
    return np.moveaxis(out, 0, axis)


class Resize(_Deterministic):
    def _run(self, x, roi=None, scales=None, sizes=None, antialias=0, axes=None,
             coordinate_transformation_mode="half_pixel", cubic_coeff_a=-0.75, exclude_outside=0,
             extrapolation_value=0.0, keep_aspect_ratio_policy="stretch", mode="nearest",
             nearest_mode="round_prefer_floor"):
        problem = unsupported(self.onnx_node, self._opset())
        if problem:
            raise ValueError(problem)
        out, scale = resize_targets(x.shape, scales, sizes, axes, keep_aspect_ratio_policy)
        y = x
        for d in range(x.ndim):
            if out[d] == x.shape[d] and scale[d] == 1.0:
                continue            # the identity, whatever the mode
            coords = source_coordinates(coordinate_transformation_mode, out[d], x.shape[d], scale[d])
            if mode == "nearest":
                y = np.take(y, nearest_index(coords, nearest_mode, x.shape[d]), axis=d)
            else:
                y = interpolate(y, d, *taps(coords, x.shape[d], mode, float(cubic_coeff_a),
                                            exclude_outside, scale[d], antialias))
        return (y if y.dtype == x.dtype else _rounded(y, x.dtype),)


OPS = [Resize, MatMul, Gemm, ReduceSum, ReduceMean, Exp, Log, Erf, Softmax, Pow]
OP_NAMES = frozenset(cls.__name__ for cls in OPS)
