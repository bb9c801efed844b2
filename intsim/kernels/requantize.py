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
def _requant_rows(x2, m, k, lo, hi, out2):
    # x2: (outer, C, inner) int64; m, k: (C,) int64. The per-element body is spec A6 verbatim.
    for o in range(x2.shape[0]):
        for c in range(x2.shape[1]):
            mc = m[c]
            kc = k[c]
            half = (np.int64(1) << (kc - 1)) if kc > 0 else np.int64(0)
            for i in range(x2.shape[2]):
                p = x2[o, c, i] * mc
                y = (p + half) >> kc if kc > 0 else p << (-kc)
                if y < lo:
                    y = lo
                elif y > hi:
                    y = hi
                out2[o, c, i] = y


def requantize(x, m, k, out_fmt: IntFormat, axis=None):
    """Fast path; identical results to requantize_ref for every input that passes the checks."""
    x = np.asarray(x)
    m, k = arith.int_const("multiplier m", m), arith.int_const("shift k", k)
    arith.check_product_bound("requantize", arith.max_abs(x), m, k)
    m_arr = np.atleast_1d(np.asarray(m, dtype=np.int64))
    k_arr = np.atleast_1d(np.asarray(k, dtype=np.int64))
    if np.ndim(m) == 0 and np.ndim(k) == 0:
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
    out = np.empty(x3.shape, dtype=np.int64)
    _requant_rows(np.ascontiguousarray(x3, dtype=np.int64), m_arr, k_arr,
                  np.int64(out_fmt.lo), np.int64(out_fmt.hi), out)
    return out.reshape(x.shape).astype(out_fmt.storage)
