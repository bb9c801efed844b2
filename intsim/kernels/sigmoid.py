"""Integer Sigmoid and QuickGELU (spec K8), built on the shift-add exponential of K2.1.

  bitshift-sigmoid    K8.1  sigma(a*x) with e = e(|q|) ~= 2^30 exp(-a*S*|q|) (K2.1's exponential at
                            the scale a*S): the lower half p = round(2^O * e / (2^30 + e)) by one
                            integer division, the upper half its complement 2^O - p
  bitshift-quickgelu  K8.2  x * sigma(a*x) (CLIP's QuickGELU, a = 1.702; SiLU, a = 1): the input
                            times K8.1's output, an exact product

K8.0 common I/O: an integer input of 1..16 bits (signed or unsigned) at real scale S; the gain a > 0
is folded into the exponential's constant (no multiply by a at run time). The sigmoid's output is
unsigned O-bit (2..16) at scale 2^-O, saturating at 2^O - 1; the error depends on |q| alone, so
every bound is computed exactly from the table e(0..Dmax) (`error_bound`, K8.1.4).
"""
from fractions import Fraction

import numba
import numpy as np

from .. import arith, floatfn
from ..arith import ArithSpecError, ConstFormat, IntFormat, IntOverflowError
from .base import Consts, Kernel, KernelPlan
from .softmax import (BitshiftSoftmax, BS_CSD_MAX_K, BS_CSD_MAX_SLOPE, BS_F, BS_Q, BS_SEG_BITS, BS_Z_MAX, bitshift_exp1,
                      bitshift_exp_plan, bitshift_exp_ref, bitshift_tables)

IN_BITS_MAX = 16
OUT_BITS_RANGE = (2, 16)
BOUND_MARGIN = 1e-12     # float64 evaluation of exp() and of the ratios in the table bound


# --- K8.0 common I/O ------------------------------------------------------------------------------

def _check_plan(what, in_scale, in_fmt, out_bits, gain):
    s = arith.check_scale(f"{what} in_scale", in_scale)
    a = arith.check_scale(f"{what} gain", gain)
    if not isinstance(in_fmt, IntFormat):
        raise ArithSpecError(f"{what} in_fmt must be an IntFormat, got {in_fmt!r}")
    arith.check_bits(f"{what} in_fmt width", in_fmt.bits, 1, IN_BITS_MAX)
    out_bits = arith.check_bits(f"{what} out_bits", out_bits, *OUT_BITS_RANGE)
    return s, a, out_bits


def _consts(what, s, a, in_fmt, out_bits):
    """The K2.1 exponential at the exact scale a*S for D = |q| <= max(|lo|, hi), plus the I/O."""
    d_max = max(-in_fmt.lo, in_fmt.hi)
    exp_consts, info = bitshift_exp_plan(what, Fraction(s) * Fraction(a), d_max, "K8.1.3")
    consts = {"in_lo": in_fmt.lo, "in_hi": in_fmt.hi, "out_bits": out_bits, **exp_consts}
    return consts, {"in_scale": s, "gain": a, "exp_scale": float(Fraction(s) * Fraction(a)), **info}


def _input(what, q, consts):
    """Integer dtype, non-empty, every value inside in_fmt (K8.0); int64."""
    q = arith.integer_input(what, q)
    arith.check_nonempty(what, q)
    lo, hi = consts["in_lo"], consts["in_hi"]
    bad = int(np.sum((q < lo) | (q > hi)))
    if bad:
        raise IntOverflowError(f"{what}: {bad} value(s) outside [{lo}, {hi}] (spec K8.0: the "
                               f"declared input domain)")
    return q.astype(np.int64)


def sigmoid_ref(q, c):
    """K8.1.2 on int64 q: p = round_half_up(2^O e / (2^Q + e)) by one floor division (A5); the
    output is p for q < 0 and min(2^O - p, 2^O - 1) for q >= 0."""
    o = c["out_bits"]
    e = bitshift_exp_ref(np.abs(q), c)
    den = (np.int64(1) << np.int64(c["Q"])) + e
    p = arith.floor_div((e << np.int64(o + 1)) + den, 2 * den)
    return np.where(q < 0, p, np.minimum((1 << o) - p, (1 << o) - 1))


@numba.njit(cache=True, nogil=True, inline="always")
def _sigmoid1(v, K, G, F, SB, C, DS, ZMAX, Q, O):
    """sigmoid_ref for one int64 value (the jitted twin)."""
    e = bitshift_exp1(v if v >= 0 else -v, K, G, F, SB, C, DS, ZMAX)
    den = (np.int64(1) << Q) + e
    p = arith.floor_div1((e << (O + 1)) + den, 2 * den)
    if v < 0:
        return p
    top = np.int64(1) << O
    return top - p if p > 0 else top - 1


@numba.njit(cache=True, nogil=True)
def _sigmoid_elems(q, lo, hi, K, G, F, SB, C, DS, ZMAX, Q, O, times_input, out):
    """out[i] = sigmoid(q[i]) (times q[i] for QuickGELU); returns the count of q outside [lo, hi]."""
    bad = 0
    for i in range(q.size):
        v = np.int64(q[i])
        if v < lo or v > hi:
            bad += 1
            continue
        s = _sigmoid1(v, K, G, F, SB, C, DS, ZMAX, Q, O)
        out[i] = v * s if times_input else s
    return bad


class _SigmoidBase(Kernel):
    """What K8.1 and K8.2 share: plan options (out_bits, gain), the exponential, the table bound."""
    times_input = False

    def _fast(self, what, q, plan):
        c = plan.consts
        q = arith.integer_input(what, q)
        arith.check_nonempty(what, q)
        flat = np.ascontiguousarray(q).reshape(-1)
        out = np.empty(flat.size, dtype=plan.out_fmt.storage)
        bad = _sigmoid_elems(flat, c["in_lo"], c["in_hi"], c["K"], c["G"], c["F"], c["SEG_BITS"],
                             c["C"], c["DS"], c["Z_MAX"], c["Q"], c["out_bits"], self.times_input, out)
        if bad:
            _input(what, q, c)          # names the count and the domain
        return out.reshape(q.shape)

    def out_fmt_for(self, in_fmt, out_bits):
        return IntFormat(out_bits, signed=False)

    def const_formats(self, plan):
        """K8.0 Registers: the input range and output width restated, K2.1.1's exponential constants."""
        return {"in_lo": ConstFormat.holding(-(1 << 15), 0).exactly(plan.in_fmt.lo),
                "in_hi": ConstFormat.holding(1, (1 << 16) - 1).exactly(plan.in_fmt.hi),
                "out_bits": ConstFormat.holding(*OUT_BITS_RANGE),
                **{k: v for k, v in BitshiftSoftmax.const_registers.items() if k != "N"}}

    def check_consts(self, plan):
        """K8.0 formats and K8.1.1 constants: the K2.1 tables and fixed widths, G <= 62, D*K <= 2^62."""
        c = Consts(self, plan)
        need = ("in_lo", "in_hi", "out_bits", "K", "G", "F", "Q", "SEG_BITS", "C", "DS", "Z_MAX")
        c.require(sorted(plan.consts) == sorted(need), f"constants {sorted(plan.consts)}, expected {sorted(need)}")
        lo, hi, o = (int(plan.consts[k]) for k in ("in_lo", "in_hi", "out_bits"))
        c.require(OUT_BITS_RANGE[0] <= o <= OUT_BITS_RANGE[1] and (plan.in_fmt.lo, plan.in_fmt.hi) == (lo, hi)
                  and plan.out_fmt == self.out_fmt_for(plan.in_fmt, o),
                  f"constants say [{lo}, {hi}] and {o} output bits, the program's tensors are "
                  f"{plan.in_fmt.describe()} -> {plan.out_fmt.describe()}")
        for name, value in (("F", BS_F), ("Q", BS_Q), ("SEG_BITS", BS_SEG_BITS), ("Z_MAX", BS_Z_MAX)):
            c.fixed(name, value)
        table, slopes = bitshift_tables()
        c.fixed("C", table)
        c.fixed("DS", slopes)
        g, k = int(plan.consts["G"]), int(plan.consts["K"])
        c.require(0 <= g <= arith.SHIFT_MAX and 1 <= k and max(-lo, hi) * k <= 1 << 62,
                  f"G = {g}, K = {k}: outside G <= 62, D*K <= 2^62")

    def sigmoid_error(self, plan, q):
        """K8.1.4 per element: |sigmoid out * 2^-O - sigma(a S q)| bounded by the table error
        delta(|q|) plus half an output LSB, or 2^-O where the output saturates."""
        c = plan.consts
        o = c["out_bits"]
        q = np.asarray(q, dtype=np.int64)
        d = np.abs(q)
        d_all = np.arange(int(d.max()) + 1, dtype=np.int64)
        e = bitshift_exp_ref(d_all, c)
        lower_hat = e / (2.0 ** c["Q"] + e)                       # e / (2^Q + e), before rounding
        lower = floatfn.sigmoid(-d_all * plan.info["exp_scale"])  # sigma(-a S D)
        bound = np.abs(lower_hat - lower)[d] + 2.0 ** -(o + 1)
        saturated = (q >= 0) & (sigmoid_ref(-d_all, c)[d] == 0)   # p = 0: the output is 2^O - 1
        return np.where(saturated, np.maximum(2.0 ** -o, bound), bound) + BOUND_MARGIN

    def cost(self, shape, plan=None):
        """Per element: |q|, the K2.1 exponential, 2^Q + e, the rounded division, the complement."""
        kd = plan.info["K_csd_digits"] if plan is not None else BS_CSD_MAX_K
        sd = plan.info["slope_csd_digits"] if plan is not None else BS_CSD_MAX_SLOPE
        return {"mul": 1.0 if self.times_input else 0.0,          # q * sigma (K8.2)
                "shift": kd + 1 + 1 + sd + 1 + 1 + 2,   # D*K, >>G, >>F, rho*DS, >>(F-4), >>z, <<(O+1), 2*den
                "add": 1 + (kd - 1) + (sd - 1) + 1 + 2 + 1,   # |q|, D*K, rho*DS, C-.., den, +den, 2^O - p
                "div": 1.0,                                  # the one division per element
                "cmp": 1 + 1 + 1}                            # sign, min(z, 31), saturation


class BitshiftSigmoid(_SigmoidBase):
    name = "bitshift-sigmoid"
    family = "sigmoid"
    spec_section = "K8.1"
    title = "sigma(a x): K2.1 shift-add exponential of |x|, 2^O e / (2^30 + e), one division"

    def plan(self, in_scale, in_fmt, out_bits=16, gain=1.0):
        s, a, out_bits = _check_plan(self.name, in_scale, in_fmt, out_bits, gain)
        consts, info = _consts(self.name, s, a, in_fmt, out_bits)
        return KernelPlan(self.name, consts, in_fmt, IntFormat(out_bits, signed=False), 2.0 ** -out_bits,
                          info, s, {"gain": a})

    def reference(self, inputs, plan):
        q = _input("sigmoid input", inputs[0], plan.consts)
        return sigmoid_ref(q, plan.consts).astype(plan.out_fmt.storage)

    def fast(self, inputs, plan):
        return self._fast("sigmoid input", inputs[0], plan)

    def error_bound(self, plan, inputs):
        return self.sigmoid_error(plan, inputs[0])

    def float_reference(self, x, plan=None):
        a = plan.info["gain"] if plan is not None else 1.0
        return floatfn.sigmoid(np.asarray(x, dtype=np.float64) * a)


def quickgelu_out_fmt(in_fmt, out_bits):
    """K8.2: the narrowest signed format holding q * s for every q of in_fmt and s in [0, 2^O - 1]
    (s <= 2^(O-1) where q < 0)."""
    bound = max(-in_fmt.lo << (out_bits - 1), in_fmt.hi * ((1 << out_bits) - 1))
    bits = max(2, bound.bit_length() + 1)
    if bits > 32:
        raise ArithSpecError(f"bitshift-quickgelu: a {in_fmt.describe()} input times a {out_bits}-bit "
                             f"sigmoid needs {bits} bits > 32 (spec K8.2)")
    return IntFormat(bits)


class BitshiftQuickGelu(_SigmoidBase):
    name = "bitshift-quickgelu"
    family = "quickgelu"
    spec_section = "K8.2"
    title = "x * sigma(a x) (QuickGELU a = 1.702): K8.1's sigmoid times the input, exact product"
    times_input = True

    def plan(self, in_scale, in_fmt, out_bits=16, gain=1.702):
        s, a, out_bits = _check_plan(self.name, in_scale, in_fmt, out_bits, gain)
        consts, info = _consts(self.name, s, a, in_fmt, out_bits)
        return KernelPlan(self.name, consts, in_fmt, quickgelu_out_fmt(in_fmt, out_bits),
                          s * 2.0 ** -out_bits, info, s, {"gain": a})

    def out_fmt_for(self, in_fmt, out_bits):
        return quickgelu_out_fmt(in_fmt, out_bits)

    def reference(self, inputs, plan):
        q = _input("quickgelu input", inputs[0], plan.consts)
        return (q * sigmoid_ref(q, plan.consts)).astype(plan.out_fmt.storage)

    def fast(self, inputs, plan):
        return self._fast("quickgelu input", inputs[0], plan)

    def error_bound(self, plan, inputs):
        """|x| times the sigmoid's bound at x: the product itself is exact (K8.2)."""
        q = np.asarray(inputs[0], dtype=np.int64)
        return np.abs(q) * plan.info["in_scale"] * self.sigmoid_error(plan, q) + BOUND_MARGIN

    def float_reference(self, x, plan=None):
        a = plan.info["gain"] if plan is not None else 1.702
        return floatfn.quick_gelu(np.asarray(x, dtype=np.float64), a)


bitshift_sigmoid = BitshiftSigmoid()
bitshift_quickgelu = BitshiftQuickGelu()
SIGMOID_CANDIDATES = {bitshift_sigmoid.name: bitshift_sigmoid}
QUICKGELU_CANDIDATES = {bitshift_quickgelu.name: bitshift_quickgelu}
