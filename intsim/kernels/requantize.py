"""Requantization y = sat(round_shift(x * m, k)), per tensor or per channel (spec A6).

Reference path: intsim.arith primitives in NumPy. Fast path: numba, one pass, no temporaries, with
the rounding of arith.round_shift1. `REQUANTIZE` is the kernel object (plan: a real ratio -> (m, k)).
"""
import numba
import numpy as np

from .. import arith
from ..arith import ConstFormat, IntFormat
from .base import Consts, Kernel, KernelPlan


def requantize_ref(x, m, k, out_fmt: IntFormat, axis=None):
    return arith.requantize(x, m, k, out_fmt, axis)


@numba.njit(cache=True, nogil=True)
def _requant_rows(x3, m, k, lim, lo, hi, out3):
    """x3: (outer, C, inner), any integer dtype; m, k, lim: (C,) int64. The per-element body is spec
    A6; |x| > lim[c] would take x*m past the A4 bound: the first such value is returned (0: none)."""
    # range violations are OR-ed into a flag rather than exiting early, so that the loops vectorise
    outside = False
    for o in range(x3.shape[0]):
        if x3.shape[2] == 1:        # per channel along the last axis: channels innermost
            for c in range(x3.shape[1]):
                xv = np.int64(x3[o, c, 0])
                outside |= (xv > lim[c]) | (xv < -lim[c])
                out3[o, c, 0] = arith.saturate1(arith.round_shift1(xv * m[c], k[c]), lo, hi)
        else:
            for c in range(x3.shape[1]):
                mc, kc, lc = m[c], k[c], lim[c]
                for i in range(x3.shape[2]):
                    xv = np.int64(x3[o, c, i])
                    outside |= (xv > lc) | (xv < -lc)
                    out3[o, c, i] = arith.saturate1(arith.round_shift1(xv * mc, kc), lo, hi)
    if outside:
        for o in range(x3.shape[0]):
            for c in range(x3.shape[1]):
                for i in range(x3.shape[2]):
                    xv = np.int64(x3[o, c, i])
                    if xv > lim[c] or xv < -lim[c]:
                        return xv
    return np.int64(0)


def _limits(m, k):
    """Largest |x| per channel with |x| * m * 2^max(-k, 0) + 2^62 <= 2^63 - 1 (spec A4).
    m < 2^31 and -k <= 31 keep the shifted multiplier below 2^62."""
    shifted = np.left_shift(m, np.maximum(-k, 0))
    return np.int64(arith.INT64_MAX - (1 << 62)) // np.maximum(shifted, 1)


class Requantizer:
    """One (m, k) - per tensor, or one pair per channel - checked once (A2) and held in the form the
    fast path reads: int64 vectors, the largest |x| per channel whose product stays inside int64
    (A4), the output range. Calling it requantizes an array; the kernels of K1 call it through
    `columns` to requantize their accumulators in the same pass (the accumulator never stored)."""

    def __init__(self, m, k, out_fmt: IntFormat, axis=None):
        """axis: the channel axis of per-channel (m, k) when it is known (a bound program op)."""
        m, k = arith.check_multiplier("requantize", m, k)
        self.axis = axis
        self.per_channel = not (m.ndim == 0 and k.ndim == 0)
        self.m, self.k = np.atleast_1d(m), np.atleast_1d(k)
        # mismatched vectors are refused when called, naming the axis they do not fit
        self.lim = _limits(self.m, self.k) if self.m.shape == self.k.shape else None
        self.out_fmt = out_fmt
        self.lo, self.hi = np.int64(out_fmt.lo), np.int64(out_fmt.hi)
        self._columns = {}

    def __call__(self, x, axis=None):
        """Fast path of requantize; identical results to requantize_ref for every input that
        passes the checks (the A4 bound is checked inside the pass, at no extra cost)."""
        x = arith.integer_input("requantize", x)
        axis = self.axis if axis is None else axis
        if not self.per_channel:
            x3 = x.reshape(1, 1, -1)
        else:
            if axis is None:
                raise arith.ArithSpecError("per-channel requantization needs the channel axis")
            ax = axis % x.ndim
            if self.m.shape != (x.shape[ax],) or self.k.shape != (x.shape[ax],):
                raise arith.ArithSpecError(f"per-channel (m, k) of shape {self.m.shape}/{self.k.shape} "
                                           f"does not match axis {axis} of length {x.shape[ax]}")
            x3 = x.reshape(int(np.prod(x.shape[:ax], dtype=np.int64)), x.shape[ax], -1)
        out = np.empty(x3.shape, dtype=self.out_fmt.storage)
        self.raise_outside(_requant_rows(np.ascontiguousarray(x3), self.m, self.k, self.lim, self.lo,
                                         self.hi, out))
        return out.reshape(x.shape)

    @property
    def along_columns(self):
        """Per tensor, or per channel along the last axis: one (m, k) per column of the input."""
        return not self.per_channel or self.axis == -1

    def columns(self, n):
        """(m, k, lim) as vectors of length n, one entry per column of an (..., n) input whose
        channels (if any) are its columns: what a fused epilogue reads."""
        if n not in self._columns:
            if not self.along_columns or (self.per_channel and (self.m.shape != (n,) or self.k.shape != (n,))):
                raise arith.ArithSpecError(f"per-channel (m, k) of shape {self.m.shape} for {n} columns")
            self._columns[n] = tuple(np.ascontiguousarray(np.broadcast_to(v, (n,)))
                                     for v in (self.m, self.k, self.lim))
        return self._columns[n]

    def raise_outside(self, bad):
        """`bad`: the first input whose product left int64 (A4), 0 for none (the fast paths' flag)."""
        if bad:
            arith.check_product_bound("requantize", abs(int(bad)), self.m, self.k)


def requantize(x, m, k, out_fmt: IntFormat, axis=None):
    """Fast path; identical results to requantize_ref for every input that passes the checks."""
    return Requantizer(m, k, out_fmt)(x, axis)


def multiplier(ratio, bits):
    """The (m, k) of spec A2 for a ratio: scalars for one ratio (or channels that all share one),
    else per-channel int64 arrays."""
    ratio = np.asarray(ratio, dtype=np.float64)
    if ratio.ndim and np.unique(ratio).size == 1:
        ratio = ratio.reshape(-1)[0]
    if ratio.ndim == 0:
        d = arith.dyadic(float(ratio), bits)
        return d.m, d.k
    return arith.dyadic_array(ratio, bits)


def multiplier_formats(multiplier_bits, shape=()):
    """The registers of one (m, k) pair (A2): m unsigned `multiplier_bits` wide holding
    [1, 2^B - 1], k signed 7 bits holding [-31, 62]."""
    bits = arith.check_bits("multiplier width", multiplier_bits, 2, arith.MULTIPLIER_BITS_DEFAULT)
    return (ConstFormat.holding(1, (1 << bits) - 1, shape),
            ConstFormat.holding(arith.SHIFT_MIN, arith.SHIFT_MAX, shape))


class Requantize(Kernel):
    name = "requantize"
    family = "requantize"
    spec_section = "A6"
    title = "y = sat(round_shift(x * m, k)), round half up, per tensor or per channel (last axis)"

    def plan(self, in_scale, in_fmt, out_scale=None, out_fmt=None, multiplier_bits=31, ratio=None):
        """(m, k) for in_scale / out_scale (broadcast: per channel along the last axis when either
        is a vector), or for `ratio` when the caller knows it exactly (equal channel factors)."""
        if out_fmt is None or (out_scale is None and ratio is None):
            raise arith.ArithSpecError("requantize plan needs out_fmt and out_scale (or ratio)")
        if ratio is None:
            src = np.asarray(in_scale, dtype=np.float64)
            dst = np.asarray(out_scale, dtype=np.float64)
            ratio = np.broadcast_to(src / dst, dst.shape if dst.ndim else src.shape)
        m, k = multiplier(ratio, multiplier_bits)
        return KernelPlan(self.name, {"m": m, "k": k}, in_fmt, out_fmt, out_scale,
                          {"multiplier_bits": multiplier_bits}, in_scale,
                          {"ratio": np.asarray(ratio, dtype=np.float64)})

    def check_consts(self, plan):
        """A2: (m, k) in their registers (the shape of m is k's), scalars or one pair per channel."""
        c = Consts(self, plan)
        c.require(np.ndim(c["m"]) <= 1, f"m and k must be scalars or vectors, have shape {np.shape(c['m'])}")

    @staticmethod
    def _axis(plan):
        """The channel axis of per-channel (m, k): plan.info["axis"] (from the end), default -1."""
        return int(plan.info.get("axis", -1)) if np.ndim(plan.consts["m"]) else None

    def reference(self, inputs, plan):
        x, = inputs
        c = plan.consts
        return requantize_ref(x, c["m"], c["k"], plan.out_fmt, self._axis(plan))

    def bind(self, plan):
        """The plan with its Requantizer made once (KernelPlan.runtime)."""
        plan.runtime = Requantizer(plan.consts["m"], plan.consts["k"], plan.out_fmt, self._axis(plan))
        return plan

    def fast(self, inputs, plan):
        x, = inputs
        c = plan.consts
        rq = plan.runtime if plan.runtime is not None else Requantizer(c["m"], c["k"], plan.out_fmt)
        return rq(x, self._axis(plan))

    def cost(self, shape, plan=None):
        return {"mul": 1.0, "shift": 1.0, "add": 1.0, "div": 0.0, "cmp": 2.0}

    def error_bound(self, plan, inputs):
        """Half an output LSB of rounding plus the multiplier's own error |x| * |ratio - m/2^k|
        (real units); inf where the value saturates."""
        x = np.asarray(inputs[0], dtype=np.float64)
        c = plan.consts
        dyadic_ratio = np.asarray(c["m"], dtype=np.float64) * 2.0 ** -np.asarray(c["k"], dtype=np.float64)
        exact = x * dyadic_ratio
        fmt = plan.out_fmt
        ratio = plan.float_params.get("ratio", dyadic_ratio)
        out_scale = np.asarray(plan.out_scale, dtype=np.float64)
        bound = out_scale * (0.5 + np.abs(x) * np.abs(ratio - dyadic_ratio))
        return np.where((exact >= fmt.lo - 0.5) & (exact < fmt.hi + 0.5), bound, np.inf)

    def const_formats(self, plan):
        """A6: (m, k) per tensor (scalars) or per channel (vectors of equal length); m as wide as
        the plan's multiplier width (`info["multiplier_bits"]`, 31 unless given)."""
        shape = np.shape(plan.consts.get("m", 0))
        m, k = multiplier_formats(plan.info.get("multiplier_bits", arith.MULTIPLIER_BITS_DEFAULT), shape)
        return {"m": m, "k": k}

    def float_reference(self, x, plan=None):
        """Requantization keeps the real value: the identity on real inputs."""
        return np.asarray(x, dtype=np.float64)


REQUANTIZE = Requantize()
