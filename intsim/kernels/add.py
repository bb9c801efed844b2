"""Residual add of two integer tensors at different scales (spec K5).

y = sat(round_shift(a * ma, ka) + round_shift(b * mb, kb)): each branch is requantized to the output
scale with the A6 rounding, then the sum saturates once. Two roundings (one per branch), documented
in K5, so the hardware is two requantizers and one saturating adder. Operand a is the first input of
the residual Add (the branch the exporter lists first), b the second.
"""
import numba
import numpy as np

from .. import arith
from ..arith import IntFormat
from .base import Kernel, KernelPlan
from .requantize import multiplier, multiplier_formats


def _check(a, b, ma, ka, mb, kb):
    """Both operands integer (within int64) and of one shape; each (m, k) a scalar pair inside A2's
    ranges whose products stay inside int64 (A4)."""
    a, b = arith.integer_input("residual add (a)", a), arith.integer_input("residual add (b)", b)
    if a.shape != b.shape:
        raise arith.ArithSpecError(f"residual add: shapes differ: {a.shape} and {b.shape}")
    for branch, x, m, k in (("a", a, ma, ka), ("b", b, mb, kb)):
        m, k = arith.check_multiplier(f"residual add ({branch})", m, k)
        if m.ndim or k.ndim:
            raise arith.ArithSpecError(f"residual add: m_{branch}, k_{branch} must be scalars")
        arith.check_product_bound_of(f"residual add ({branch})", x, m, k)
    return a, b


def residual_add_ref(a, b, ma, ka, mb, kb, out_fmt: IntFormat):
    a, b = _check(a, b, ma, ka, mb, kb)
    ya = arith.round_shift(a.astype(np.int64) * ma, ka)
    yb = arith.round_shift(b.astype(np.int64) * mb, kb)
    return arith.saturate(ya + yb, out_fmt)


@numba.njit(cache=True, nogil=True)
def _residual_add(a, b, ma, ka, mb, kb, lo, hi, out):
    # a, b: any integer dtype (widened per element, no int64 copies); out: the output storage
    for i in range(a.shape[0]):
        y = arith.round_shift1(np.int64(a[i]) * ma, ka) + arith.round_shift1(np.int64(b[i]) * mb, kb)
        out[i] = arith.saturate1(y, lo, hi)


def residual_add(a, b, ma, ka, mb, kb, out_fmt: IntFormat):
    a, b = _check(a, b, ma, ka, mb, kb)
    out = np.empty(a.size, dtype=out_fmt.storage)
    _residual_add(np.ascontiguousarray(a).ravel(), np.ascontiguousarray(b).ravel(),
                  np.int64(ma), np.int64(ka), np.int64(mb), np.int64(kb),
                  np.int64(out_fmt.lo), np.int64(out_fmt.hi), out)
    return out.reshape(a.shape)


class ResidualAdd(Kernel):
    name = "residual-add"
    family = "add"
    spec_section = "K5"
    title = "y = sat(round_shift(a*ma, ka) + round_shift(b*mb, kb)): two requantizers, one adder"

    def plan(self, in_scale, in_fmt, out_scale=None, out_fmt=None, multiplier_bits=31):
        """(ma, ka), (mb, kb) for the ratios scale_a / out_scale and scale_b / out_scale."""
        if out_fmt is None or out_scale is None:
            raise arith.ArithSpecError("residual add plan needs out_scale and out_fmt")
        (sa, sb), ratios = in_scale, []
        consts = {}
        for branch, s in (("a", sa), ("b", sb)):
            ratios.append(float(s) / float(out_scale))
            consts[f"m{branch}"], consts[f"k{branch}"] = multiplier(ratios[-1], multiplier_bits)
        return KernelPlan(self.name, consts, tuple(in_fmt), out_fmt, out_scale,
                          {"multiplier_bits": multiplier_bits}, tuple(in_scale), {"ratios": tuple(ratios)})

    def reference(self, inputs, plan):
        c = plan.consts
        return residual_add_ref(*inputs, c["ma"], c["ka"], c["mb"], c["kb"], plan.out_fmt)

    def fast(self, inputs, plan):
        c = plan.consts
        return residual_add(*inputs, c["ma"], c["ka"], c["mb"], c["kb"], plan.out_fmt)

    def cost(self, shape, plan=None):
        return {"mul": 2.0, "shift": 2.0, "add": 3.0, "div": 0.0, "cmp": 2.0}

    def error_bound(self, plan, inputs):
        """Two roundings (one per branch, half an LSB each) plus the multipliers' own errors, in
        real units; inf where the sum saturates."""
        c, fmt = plan.consts, plan.out_fmt
        total = np.zeros(np.shape(inputs[0]))
        exact = np.zeros(np.shape(inputs[0]))
        for x, branch, ratio in zip(inputs, "ab", plan.float_params["ratios"]):
            dy = c[f"m{branch}"] * 2.0 ** -c[f"k{branch}"]
            x = np.asarray(x, dtype=np.float64)
            exact += x * dy
            total += 0.5 + np.abs(x) * abs(ratio - dy)
        bound = float(plan.out_scale) * total
        return np.where((exact - 1 >= fmt.lo) & (exact + 1 <= fmt.hi), bound, np.inf)

    def const_formats(self, plan):
        """K5: one scalar (m, k) pair per operand, registers as in A6."""
        m, k = multiplier_formats(plan.info.get("multiplier_bits", arith.MULTIPLIER_BITS_DEFAULT))
        return {"ma": m, "ka": k, "mb": m, "kb": k}

    def float_reference(self, x, plan=None):
        """The real sum of the two real operands."""
        a, b = x
        return np.asarray(a, dtype=np.float64) + np.asarray(b, dtype=np.float64)


RESIDUAL_ADD = ResidualAdd()
