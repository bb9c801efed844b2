"""Residual add of two integer tensors at different scales (spec K5).

y = sat(round_shift(a * ma, ka) + round_shift(b * mb, kb)): each branch is requantized to the output
scale with the A6 rounding, then the sum saturates once. Two roundings (one per branch), documented
in K5, so the hardware is two requantizers and one saturating adder.
"""
import numba
import numpy as np

from .. import arith
from ..arith import IntFormat


def _check(a, b, ma, ka, mb, kb):
    if np.shape(a) != np.shape(b):
        raise arith.ArithSpecError(f"residual add: shapes differ: {np.shape(a)} and {np.shape(b)}")
    for what, v in (("m_a", ma), ("k_a", ka), ("m_b", mb), ("k_b", kb)):
        if arith.int_const(what, v).ndim:
            raise arith.ArithSpecError(f"residual add: {what} must be a scalar")
    arith.check_product_bound("residual add (a)", arith.max_abs(a), ma, ka)
    arith.check_product_bound("residual add (b)", arith.max_abs(b), mb, kb)


def residual_add_ref(a, b, ma, ka, mb, kb, out_fmt: IntFormat):
    _check(a, b, ma, ka, mb, kb)
    ya = arith.round_shift(np.asarray(a, dtype=np.int64) * ma, ka)
    yb = arith.round_shift(np.asarray(b, dtype=np.int64) * mb, kb)
    return arith.saturate(ya + yb, out_fmt)


@numba.njit(cache=True, nogil=True)
def _round_shift1(p, k):
    if k > 0:
        return (p + (np.int64(1) << (k - 1))) >> k
    return p << (-k)


@numba.njit(cache=True, nogil=True)
def _residual_add(a, b, ma, ka, mb, kb, lo, hi, out):
    # a, b: any integer dtype (widened per element, no int64 copies); out: the output storage
    for i in range(a.shape[0]):
        y = _round_shift1(np.int64(a[i]) * ma, ka) + _round_shift1(np.int64(b[i]) * mb, kb)
        out[i] = lo if y < lo else (hi if y > hi else y)


def residual_add(a, b, ma, ka, mb, kb, out_fmt: IntFormat):
    _check(a, b, ma, ka, mb, kb)
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind not in "iu" or b.dtype.kind not in "iu":
        raise arith.ArithSpecError(f"residual add: integer inputs required, got {a.dtype} and {b.dtype}")
    out = np.empty(a.size, dtype=out_fmt.storage)
    _residual_add(np.ascontiguousarray(a).ravel(), np.ascontiguousarray(b).ravel(),
                  np.int64(ma), np.int64(ka), np.int64(mb), np.int64(kb),
                  np.int64(out_fmt.lo), np.int64(out_fmt.hi), out)
    return out.reshape(a.shape)
