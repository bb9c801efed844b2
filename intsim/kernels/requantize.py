"""Requantization y = sat(round_shift(x * m, k)), per tensor or per channel (spec A6).

Reference path: intsim.arith primitives in NumPy. Fast path: numba, one pass, no temporaries.
"""
import numba
import numpy as np

from .. import arith
from ..arith import IntFormat


def requantize_ref(x, m, k, out_fmt: IntFormat, axis=None):
    return arith.requantize(x, m, k, out_fmt, axis)


@numba.njit(cache=True, nogil=True)
def _requant_rows(x3, m, k, lim, lo, hi, out3):
    """x3: (outer, C, inner), any integer dtype; m, k, lim: (C,) int64. The per-element body is spec
    A6; |x| > lim[c] would take x*m past the A4 bound: the first such value is returned (0: none)."""
    # A6 per channel as ((x*m) << left + half) >> right: k > 0 rounds (half = 2^(k-1)), k <= 0 is an
    # exact left shift by -k
    right = np.maximum(k, 0)
    left = np.maximum(-k, 0)
    half = np.zeros_like(k)
    for c in range(k.shape[0]):
        if right[c] > 0:
            half[c] = np.int64(1) << (right[c] - 1)
    # range violations are OR-ed into a flag rather than exiting early, so that the loops vectorise
    outside = False
    for o in range(x3.shape[0]):
        if x3.shape[2] == 1:        # per channel along the last axis: channels innermost
            for c in range(x3.shape[1]):
                xv = np.int64(x3[o, c, 0])
                outside |= (xv > lim[c]) | (xv < -lim[c])
                out3[o, c, 0] = min(max(((xv * m[c] << left[c]) + half[c]) >> right[c], lo), hi)
        else:
            for c in range(x3.shape[1]):
                mc, sl, hc, sr, lc = m[c], left[c], half[c], right[c], lim[c]
                for i in range(x3.shape[2]):
                    xv = np.int64(x3[o, c, i])
                    outside |= (xv > lc) | (xv < -lc)
                    out3[o, c, i] = min(max(((xv * mc << sl) + hc) >> sr, lo), hi)
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


def requantize(x, m, k, out_fmt: IntFormat, axis=None):
    """Fast path; identical results to requantize_ref for every input that passes the checks."""
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise arith.ArithSpecError(f"requantize: integer input required, got {x.dtype}")
    m, k = arith.int_const("multiplier m", m), arith.int_const("shift k", k)
    m_arr = np.atleast_1d(m)
    k_arr = np.atleast_1d(k)
    if m.ndim == 0 and k.ndim == 0:
        x3 = x.reshape(1, 1, -1)
    else:
        if axis is None:
            raise arith.ArithSpecError("per-channel requantization needs the channel axis")
        ax = axis % x.ndim
        if m_arr.shape != (x.shape[ax],) or k_arr.shape != (x.shape[ax],):
            raise arith.ArithSpecError(f"per-channel (m, k) of shape {m_arr.shape}/{k_arr.shape} "
                                       f"does not match axis {axis} of length {x.shape[ax]}")
        outer = int(np.prod(x.shape[:ax], dtype=np.int64))
        x3 = x.reshape(outer, x.shape[ax], -1)
    out = np.empty(x3.shape, dtype=out_fmt.storage)
    bad = _requant_rows(np.ascontiguousarray(x3), m_arr, k_arr, _limits(m_arr, k_arr),
                        np.int64(out_fmt.lo), np.int64(out_fmt.hi), out)
    if bad:
        arith.check_product_bound("requantize", abs(int(bad)), m_arr, k_arr)
    return out.reshape(x.shape)
