"""Exact integer matrix product (spec K1).

reference: int64 np.matmul, plainly exact and slow (NumPy's integer matmul has no BLAS).
fast:      float BLAS on integer-valued operands. Exact because every partial sum BLAS can form,
           in any order and with or without FMA, is an integer of magnitude at most
           K_block * max|a| * max|b| <= 2^24 (float32) - all such integers are representable, so no
           operation rounds. K is split into blocks of at most K_block; the block results (each
           exact) are summed in float64, exact while K * max|a| * max|b| < 2^53.
Both paths then add the bias and check the result fits the accumulator (no wrap, spec A4).
"""
import numpy as np

from .. import arith
from ..arith import IntFormat

ACC32 = IntFormat(32)
FLOAT32_EXACT = 1 << 24
FLOAT64_EXACT = 1 << 53
MAX_FLOAT32_BLOCKS = 4


def magnitude(fmt: IntFormat):
    return max(abs(fmt.lo), abs(fmt.hi))


def block_size(a_fmt: IntFormat, b_fmt: IntFormat):
    """Largest K_block with K_block * max|a| * max|b| <= 2^24 (spec K1.2)."""
    return max(1, FLOAT32_EXACT // (magnitude(a_fmt) * magnitude(b_fmt)))


def _check_operands(a, b, bias):
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim < 2 or b.ndim < 2:
        raise arith.ArithSpecError(f"matmul needs operands of rank >= 2, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2]:
        raise arith.ArithSpecError(f"matmul: inner dimensions differ: {a.shape} @ {b.shape}")
    arith.check_nonempty("matmul operand a", a)
    arith.check_nonempty("matmul operand b", b)
    if bias is not None and np.shape(bias) != (b.shape[-1],):
        raise arith.ArithSpecError(f"matmul: bias of shape {np.shape(bias)} for {b.shape[-1]} outputs")
    return a, b


def _finish(acc, bias, acc_fmt, what):
    acc = acc.astype(np.int64) if acc.dtype != np.int64 else acc
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64)
    arith.check_fits(what, acc, acc_fmt)
    return acc.astype(acc_fmt.storage)


def matmul_ref(a, b, bias=None, acc_fmt: IntFormat = ACC32):
    """acc = a @ b (+ bias) in exact int64, checked against acc_fmt. Spec K1.1."""
    a, b = _check_operands(a, b, bias)
    return _finish(np.matmul(a.astype(np.int64), b.astype(np.int64)), bias, acc_fmt, "matmul accumulator")


def matmul(a, b, a_fmt: IntFormat, b_fmt: IntFormat, bias=None, acc_fmt: IntFormat = ACC32, b_float=None):
    """Fast exact product for operands within the declared formats a_fmt, b_fmt. Spec K1.2.

    a is checked against a_fmt here (exactness depends on it); b, a weight, is checked once when
    it is loaded. b_float: an optional float32 copy of b (weights are converted once)."""
    a, b = _check_operands(a, b, bias)
    if a.ndim > 2 and b.ndim == 2:
        # one large GEMM instead of a batch of small ones (NumPy loops over leading axes)
        out = matmul(a.reshape(-1, a.shape[-1]), b, a_fmt, b_fmt, bias, acc_fmt, b_float)
        return out.reshape(a.shape[:-1] + (b.shape[-1],))
    arith.check_fits("matmul operand a", a, a_fmt)
    k = a.shape[-1]
    bound = magnitude(a_fmt) * magnitude(b_fmt)
    if k * bound >= FLOAT64_EXACT:
        raise arith.IntOverflowError(f"matmul: K={k} with |a|<={magnitude(a_fmt)}, |b|<={magnitude(b_fmt)} "
                                     f"exceeds the exact float64 range (spec K1.2)")
    kb = block_size(a_fmt, b_fmt)
    if k <= kb * MAX_FLOAT32_BLOCKS:
        af = a.astype(np.float32)
        bf = b_float if b_float is not None else b.astype(np.float32)
        if k <= kb:
            acc = np.matmul(af, bf)
        else:
            acc = np.zeros(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1]))
            for s in range(0, k, kb):
                acc += np.matmul(af[..., s:s + kb], bf[..., s:s + kb, :])
    else:
        # many small blocks (wide operands, e.g. 16-bit probabilities) cost more than one float64
        # product, which is exact below 2^53
        acc = np.matmul(a.astype(np.float64), b.astype(np.float64))
    bias_max = arith.max_abs(bias) if bias is not None else 0
    if k * bound + bias_max <= acc_fmt.hi and acc_fmt.storage == np.int32:
        # the bound proves the sum fits: add in int32 without a range pass (spec K1.3)
        out = acc.astype(np.int32)
        if bias is not None:
            out += np.asarray(bias, dtype=np.int32)
        return out
    return _finish(acc.astype(np.int64), bias, acc_fmt, "matmul accumulator")
