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
    A6 verbatim; |x| > lim[c] would take x*m past the A4 bound, so it stops and reports the index."""
    for o in range(x3.shape[0]):
        for c in range(x3.shape[1]):
            mc = m[c]
            kc = k[c]
            lc = lim[c]
            half = (np.int64(1) << (kc - 1)) if kc > 0 else np.int64(0)
            for i in range(x3.shape[2]):
                xv = np.int64(x3[o, c, i])
                if xv > lc or xv < -lc:
                    return xv
                p = xv * mc
                y = (p + half) >> kc if kc > 0 else p << (-kc)
                if y < lo:
                    y = lo
                elif y > hi:
                    y = hi
                out3[o, c, i] = y
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
