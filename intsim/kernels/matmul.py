"""Exact integer matrix product (spec K1).

reference: int64 np.matmul, plainly exact and slow (NumPy's integer matmul has no BLAS).
fast:      float BLAS on integer-valued operands. Exact because every partial sum BLAS can form,
           in any order and with or without FMA, is an integer of magnitude at most
           K_block * max|a| * max|b| <= 2^24 (float32) - all such integers are representable, so no
           operation rounds. K is split into blocks of at most K_block; the block results (each
           exact) are converted to int64 and summed as integers with the bias in one pass. Wide
           operands that would need many blocks use one float64 product instead (exact below 2^53).
Both paths check the result fits the accumulator (no wrap, spec A4); the fast path skips the check
when the static bound K * max|a| * max|b| + max|bias| already proves it (K1.3).
"""
from dataclasses import dataclass

import numba
import numpy as np

from .. import arith
from ..arith import IntFormat
from .base import Consts, Kernel, KernelPlan

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
    a = arith.integer_input("matmul operand a", a)
    b = arith.integer_input("matmul operand b", b)
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
    if not _dtype_within(a.dtype, a_fmt):
        arith.check_fits("matmul operand a", a, a_fmt)
    k = a.shape[-1]
    bound = magnitude(a_fmt) * magnitude(b_fmt)
    if k * bound >= FLOAT64_EXACT:
        raise arith.IntOverflowError(f"matmul: K={k} with |a|<={magnitude(a_fmt)}, |b|<={magnitude(b_fmt)} "
                                     f"exceeds the exact float64 range (spec K1.2)")
    kb = block_size(a_fmt, b_fmt)
    out_shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    if k <= kb * MAX_FLOAT32_BLOCKS:
        af = a.astype(np.float32)
        bf = b_float if b_float is not None else b.astype(np.float32)
        starts = range(0, k, kb)
        blocks = np.empty((len(starts),) + out_shape, dtype=np.float32)
        for i, s in enumerate(starts):
            np.matmul(af[..., s:s + kb], bf[..., s:s + kb, :], out=blocks[i])
    else:
        # many small blocks (wide operands, e.g. 16-bit probabilities) cost more than one float64
        # product, which is exact below 2^53
        blocks = np.matmul(a.astype(np.float64), b.astype(np.float64))[None]
    out = np.empty(out_shape, dtype=acc_fmt.storage)
    n_out = out_shape[-1]
    bias_row = np.zeros(n_out, dtype=np.int64) if bias is None else np.asarray(bias, dtype=np.int64)
    if _sum_blocks(blocks.reshape(blocks.shape[0], -1, n_out), bias_row, np.int64(acc_fmt.lo),
                   np.int64(acc_fmt.hi), out.reshape(-1, n_out)):
        # the int64 sums are exact: redo them to name the offending value (K1.3, A4)
        return _finish(blocks.astype(np.int64).sum(axis=0), bias, acc_fmt,
                       "matmul accumulator")
    return out


def _dtype_within(dtype, fmt: IntFormat):
    """True when no value of this storage dtype can lie outside fmt (no range pass needed)."""
    if dtype.kind not in "iu":
        return False
    info = np.iinfo(dtype)
    return fmt.lo <= info.min and info.max <= fmt.hi


@numba.njit(cache=True, nogil=True)
def _sum_blocks(blocks, bias, lo, hi, out):
    """out[r, j] = sum_b blocks[b, r, j] + bias[j] in int64, stored in out's dtype. Every block is
    an exact integer-valued float (K1.2), so each conversion is exact and the blocks are summed as
    integers. Returns whether any sum lies outside [lo, hi] (then out is not valid)."""
    outside = False
    for r in range(blocks.shape[1]):
        for j in range(blocks.shape[2]):
            acc = bias[j] + np.int64(blocks[0, r, j])
            for b in range(1, blocks.shape[0]):
                acc += np.int64(blocks[b, r, j])
            outside |= (acc < lo) | (acc > hi)
            out[r, j] = acc
    return outside


@dataclass(frozen=True)
class PreparedOperand:
    """A constant right operand (a weight) prepared once for the fast path: the integers and the
    float32 copy the BLAS blocks multiply. Held by whoever runs the program (an explicit cache)."""
    values: np.ndarray
    as_float32: np.ndarray


class Matmul(Kernel):
    name = "matmul"
    family = "matmul"
    spec_section = "K1"
    title = "exact integer product a @ b (+ bias) into the accumulator format, never a wrap"

    def plan(self, in_scale, in_fmt, acc_fmt: IntFormat = ACC32, inner=None):
        """No constants of its own (the operands and a bias are the layer's): the accumulator scale
        is the product of the operand scales. `inner` (K) is recorded for the cost."""
        sa, sb = in_scale
        return KernelPlan(self.name, {}, tuple(in_fmt), acc_fmt, float(sa) * float(sb),
                          {} if inner is None else {"inner": int(inner)}, tuple(in_scale))

    def check_consts(self, plan):
        """K1: at most a bias, one int32 per output."""
        c = Consts(self, plan.consts, tuple(plan.consts) if set(plan.consts) <= {"bias"} else ("bias",))
        if "bias" in plan.consts:
            bias = np.asarray(plan.consts["bias"])
            c.vector("bias", bias.shape[0] if bias.ndim == 1 else -1, ACC32.lo, ACC32.hi)

    @staticmethod
    def prepare(b, b_fmt: IntFormat):
        """Check a constant operand against its declared format once, and keep its float32 copy."""
        b = arith.integer_input("matmul constant operand", b)
        arith.check_fits("matmul constant operand", b, b_fmt)
        return PreparedOperand(b, np.ascontiguousarray(b, dtype=np.float32))

    def reference(self, inputs, plan):
        a, b = inputs
        b = b.values if isinstance(b, PreparedOperand) else b
        return matmul_ref(a, b, plan.consts.get("bias"), plan.out_fmt)

    def fast(self, inputs, plan):
        a, b = inputs
        a_fmt, b_fmt = plan.in_fmt
        if isinstance(b, PreparedOperand):
            return matmul(a, b.values, a_fmt, b_fmt, plan.consts.get("bias"), plan.out_fmt, b.as_float32)
        b = np.asarray(b)
        if not _dtype_within(b.dtype, b_fmt):
            arith.check_fits("matmul operand b", b, b_fmt)
        return matmul(a, b, a_fmt, b_fmt, plan.consts.get("bias"), plan.out_fmt)

    def cost(self, shape, plan=None):
        """One multiply-accumulate per inner element (K per output), plus the bias add."""
        if plan is None or "inner" not in plan.info:
            raise arith.ArithSpecError("matmul cost needs a plan with the inner dimension")
        k = float(plan.info["inner"])
        return {"mul": k, "shift": 0.0, "add": k, "div": 0.0, "cmp": 0.0}

    def error_bound(self, plan, inputs):
        """Exact (spec K1): no error beyond the operands' own."""
        a, b = inputs
        b = b.values if isinstance(b, PreparedOperand) else b
        return np.zeros(np.broadcast_shapes(np.shape(a)[:-2], np.shape(b)[:-2])
                        + (np.shape(a)[-2], np.shape(b)[-1]))

    def float_reference(self, x, plan=None):
        a, b = x
        return np.matmul(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


MATMUL = Matmul()
