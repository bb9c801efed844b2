"""Integer Softmax over the last axis: three interchangeable candidates (spec K2).

K2.0 common I/O: signed logits of `in_fmt` (2..16 bits) at real scale `in_scale`; unsigned
probabilities of `out_bits` (2..16) at scale 2^-out_bits, saturating at 2^out_bits - 1.
  bitshift-softmax  K2.1  ours: shift-add base-2 exponent, 16 piecewise chords, one reciprocal per row
  ivit-shiftmax     K2.2  I-ViT Shiftmax (PyTorch semantics, n = 15)
  ibert-softmax     K2.3  I-BERT i-exp softmax (n = 30), QuantAct(16) replaced by a fixed shift

Every kernel computes, per row, D = rowmax(q) - q >= 0 (K2.0), an integer exponential e(D) that
depends on D alone, and a normalisation of e by the row sum. Because e depends on D alone, the
accuracy bound of each plan is computed exactly from the table e(0..Dmax) (`error_bound`, K2.0.4).
"""
from fractions import Fraction
import math

import numba
import numpy as np

from .. import arith
from ..arith import ArithSpecError, ConstFormat, IntFormat
from .base import Consts, Kernel, KernelPlan, row_length

IN_BITS_RANGE = (2, 16)
OUT_BITS_RANGE = (2, 16)
MAX_ROW_LEN = 1 << 32          # K2.0: every row-sum bound below assumes L <= 2^32

# Exact rationals for the real constants (K2.1.1, K2.3.1); S enters as the exact binary value of the float.
LOG2E = Fraction("1.4426950408889634073599246810018921374266")
IBERT_X0 = Fraction("-0.6931")
IBERT_COEF = (Fraction("0.35815147"), Fraction("0.96963238"), Fraction(1))


# --- K2.0 shared helpers ---------------------------------------------------------------------------

def csd(n):
    """Canonical signed-digit (non-adjacent) form of n > 0: [(sign, shift), ...], n = sum sign*2^shift.
    It has the fewest nonzero digits of any signed-binary form, i.e. the fewest shifted copies to add."""
    if n <= 0:
        raise ArithSpecError(f"csd: need a positive integer, got {n}")
    digits, k = [], 0
    while n:
        if n & 1:
            d = 2 - (n & 3)          # +1 if n = 1 (mod 4), -1 if n = 3 (mod 4): leaves a 0 next
            n -= d
            digits.append((d, k))
        n >>= 1
        k += 1
    return digits


def _floor_log2(x: Fraction):
    """The integer e with 2^e <= x < 2^(e+1), exactly, for a positive rational."""
    e = x.numerator.bit_length() - x.denominator.bit_length()
    if (x.numerator << max(-e, 0)) < (x.denominator << max(e, 0)):
        e -= 1
    return e


def _check_common(in_scale, in_fmt, out_bits):
    """K2.0.1 parameter checks shared by every candidate."""
    s = arith.check_scale("softmax in_scale", in_scale)
    if not isinstance(in_fmt, IntFormat) or not in_fmt.signed:
        raise ArithSpecError(f"softmax in_fmt must be a signed IntFormat, got {in_fmt!r}")
    arith.check_bits("softmax in_fmt width", in_fmt.bits, *IN_BITS_RANGE)
    out_bits = arith.check_bits("softmax out_bits", out_bits, *OUT_BITS_RANGE)
    return s, IntFormat(out_bits, signed=False)


def _rows(q, consts):
    """K2.0.2: the input as (rows, L) int64 after the run-time checks."""
    q = np.asarray(q)
    _check_input(q, consts)
    return np.ascontiguousarray(q.reshape(-1, q.shape[-1]), dtype=np.int64)


def _check_input(q, consts):
    """K2.0.2 run-time checks: integer dtype, non-empty, at least one axis, every value inside
    in_fmt, L <= 2^32."""
    if q.ndim == 0:
        raise ArithSpecError("softmax needs at least one axis (it runs over the last one)")
    arith.check_nonempty("softmax input", q)
    if q.dtype.kind not in "iu":
        raise ArithSpecError(f"softmax input must be an integer array, got dtype {q.dtype}")
    if q.shape[-1] > MAX_ROW_LEN:
        raise ArithSpecError(f"softmax row length {q.shape[-1]} exceeds 2^32 (spec K2.0)")
    arith.check_fits("softmax input", q, IntFormat(consts["in_bits"], signed=True,
                                                   narrow=bool(consts["in_narrow"])))


def _row_max_sub(q2):
    """K2.0.3: D = rowmax(q) - q, in [0, 2^B - 1]."""
    return q2.max(axis=1, keepdims=True) - q2


def _out_storage(consts):
    """Storage dtype of the unsigned O-bit probabilities."""
    return IntFormat(consts["out_bits"], signed=False).storage


def _finish(out2, shape, consts):
    return out2.reshape(shape).astype(_out_storage(consts))


def _float_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


_BOUND_GRID = np.concatenate(([0.0], np.logspace(-10, 0, 121)[:-1]))


def _approx_bound(e_tab, in_scale, row_len):
    """K2.0.4: a proved bound on |e_i/sum(e) - softmax_i| over every row of length <= row_len,
    from the exact table e(D), D = 0..Dmax (the row maximum has D = 0 and e(0) > 0).

    With w = exp(-D*S) and w_hat = e/e(0), write w_hat = w*f + beta with f clipped into
    [lo, hi] (lo <= 1 <= hi) and beta the absolute rest. Re-weighting by factors within a ratio
    rho = hi/lo moves a probability by at most (sqrt(rho) - 1)/(sqrt(rho) + 1); the rests move it by
    at most L*beta_max/(1 - (L-1)*beta_max). Minimised over a grid of (lo, hi).
    """
    e_tab = np.asarray(e_tab, dtype=np.float64)
    w = np.exp(-np.arange(e_tab.size, dtype=np.float64) * in_scale)
    w_hat = e_tab / e_tab[0]
    beta_hi = np.array([np.max(np.maximum(w_hat - (1 + a) * w, 0.0)) for a in _BOUND_GRID])
    beta_lo = np.array([np.max(np.maximum((1 - a) * w - w_hat, 0.0)) for a in _BOUND_GRID])
    rho = (1 + _BOUND_GRID[:, None]) / (1 - _BOUND_GRID[None, :])      # rows: hi, columns: lo
    beta = np.maximum(beta_hi[:, None], beta_lo[None, :])
    lemma = (np.sqrt(rho) - 1) / (np.sqrt(rho) + 1)
    den = 1 - (row_len - 1) * beta
    rest = np.where(den > 0, row_len * beta / np.where(den > 0, den, 1.0), np.inf)
    return float(np.min(lemma + rest)) + 1e-12   # 1e-12: float64 evaluation of exp() and ratios


class _SoftmaxKernel(Kernel):
    """What the three candidates share: checks, row handling, float reference, bounds plumbing."""
    family = "softmax"

    def float_reference(self, x, plan=None):
        return _float_softmax(x)

    def _plan(self, consts, in_fmt, out_fmt, info):
        consts = {"in_bits": in_fmt.bits, "in_narrow": int(in_fmt.narrow),
                  "out_bits": out_fmt.bits, **consts}
        return KernelPlan(self.name, consts, in_fmt, out_fmt, 2.0 ** -out_fmt.bits, info,
                          info["in_scale"])

    const_registers = {}          # the candidate's own constants (K2.x.1), beside K2.0.1's

    def const_formats(self, plan):
        """K2.0.1: in_bits, in_narrow and out_bits restate the formats (registers holding their
        domains, 2..16 and 0..1), then the candidate's constants (K2.x.1)."""
        return {"in_bits": ConstFormat.holding(*IN_BITS_RANGE).exactly(plan.in_fmt.bits),
                "in_narrow": ConstFormat.holding(0, 1).exactly(int(plan.in_fmt.narrow)),
                "out_bits": ConstFormat.holding(*OUT_BITS_RANGE).exactly(plan.out_fmt.bits),
                **self.const_registers}

    def scale_range(self, in_fmt, out_bits=8):
        """(smallest, largest) in_scale that plan() accepts for in_fmt (K2.x.4): the accepted set
        is an interval (every limit is monotone in S); its ends are found by bisection on floats."""
        def ok(s):
            try:
                self.plan(s, in_fmt, out_bits)
                return True
            except ArithSpecError:
                return False

        def edge(good, bad):                      # bisect between an accepted and a rejected scale
            while True:
                mid = math.sqrt(good) * math.sqrt(bad)
                if mid in (good, bad) or not min(good, bad) < mid < max(good, bad):
                    return good
                good, bad = (mid, bad) if ok(mid) else (good, mid)
        start = next(s for s in (2.0 ** -8, 2.0 ** -12, 2.0 ** -4, 1.0) if ok(s))
        lo = 2.0 ** -1000 if ok(2.0 ** -1000) else edge(start, 2.0 ** -1000)
        hi = math.inf if ok(2.0 ** 1000) else edge(start, 2.0 ** 1000)
        return lo, hi

    def check_consts(self, plan):
        """K2.0.1: the registers (in_bits, in_narrow, out_bits restating the program's formats),
        a signed input and an unsigned output; then the candidate's preconditions (`_check`)."""
        c = Consts(self, plan)
        in_fmt = IntFormat(c["in_bits"], True, bool(c["in_narrow"]))
        out_fmt = IntFormat(c["out_bits"], signed=False)
        c.require(plan.in_fmt == in_fmt and plan.out_fmt == out_fmt,
                  f"constants say {in_fmt.describe()} -> {out_fmt.describe()}, the program's tensors "
                  f"are {plan.in_fmt.describe()} -> {plan.out_fmt.describe()}")
        self._check(c, in_fmt)

    def exp_table(self, consts):
        """e(D) for D = 0 .. in_hi - in_lo: the value the normalisation sees (K2.0.4)."""
        fmt = IntFormat(consts["in_bits"], signed=True, narrow=bool(consts["in_narrow"]))
        return self._exp_ref(np.arange(fmt.hi - fmt.lo + 1, dtype=np.int64), consts)

    def row_error_bound(self, plan, row_len):
        """Max |out * 2^-out_bits - softmax(q * in_scale)| over every input row of length
        <= row_len (spec K2.x.5). 1.0 means the plan is outside this kernel's accuracy domain."""
        return min(1.0, self._output_bound(plan, row_len, _approx_bound(
            self.exp_table(plan.consts), plan.info["in_scale"], row_len)))

    def error_bound(self, plan, inputs):
        """The row bound of K2.x.5 for these inputs' row length, for every element."""
        q = np.asarray(inputs[0])
        return np.full(q.shape, self.row_error_bound(plan, q.shape[-1]))

    def reference(self, inputs, plan):
        q, = inputs
        consts = plan.consts
        q2 = _rows(q, consts)
        e = self._exp_ref(_row_max_sub(q2), consts)
        return _finish(self._normalise_ref(e, consts), np.shape(q), consts)

    def fast(self, inputs, plan):
        q = np.asarray(inputs[0])
        consts = plan.consts
        _check_input(q, consts)
        # input in its own dtype and output straight into its storage dtype: the row kernels widen
        # to int64 per element, so no int64 copies of the whole tensor are made
        q2 = np.ascontiguousarray(q.reshape(-1, q.shape[-1]))
        out2 = np.empty(q2.shape, dtype=_out_storage(consts))
        self._fast_rows(q2, out2, consts)
        return out2.reshape(q.shape)


# --- K2.1 bitshift-softmax (ours) -------------------------------------------------------------------

BS_F = 20          # fraction bits of the base-2 exponent T
BS_Q = 30          # e(0) = 2^Q
BS_SEG_BITS = 4    # 16 chords, selected by the top 4 bits of the fraction
BS_K_BITS = 17     # K = S*log2(e)*2^(F+G) rounded to 17 significant bits: <= 9 CSD digits
BS_SLOPE_BITS = 11  # chord slopes floored to 11 significant bits: <= 6 CSD digits
BS_N = 62          # reciprocal R = floor(2^62 / sum)
BS_Z_MAX = BS_Q + 1  # y >> 31 = 0 for every y <= 2^30
BS_CSD_MAX_K = 9
BS_CSD_MAX_SLOPE = 6


def _nearest_pow2_frac(i, segs, q):
    """round(2^(q - i/segs)) exactly: floor(2*t) from an integer root, then (m + 1) // 2."""
    x = 1 << (segs * (q + 1) - i)           # (2t)^segs = 2^(segs*(q+1) - i)
    m = int(round(2.0 ** ((q + 1) - i / segs)))
    while m ** segs > x:
        m -= 1
    while (m + 1) ** segs <= x:
        m += 1
    return (m + 1) // 2


def _floor_sig_bits(n, bits):
    """n floored to `bits` significant bits (n > 0)."""
    drop = max(n.bit_length() - bits, 0)
    return (n >> drop) << drop


def bitshift_tables():
    """K2.1.2: chord knots C[i] = round(2^(30 - i/16)), i = 0..16, and floored slopes DS[i]."""
    segs = 1 << BS_SEG_BITS
    c = [_nearest_pow2_frac(i, segs, BS_Q) for i in range(segs + 1)]
    ds = [_floor_sig_bits(c[i] - c[i + 1], BS_SLOPE_BITS) for i in range(segs)]
    return np.array(c[:segs], dtype=np.int64), np.array(ds, dtype=np.int64)


def bitshift_exp_plan(what, s, d_max, section):
    """K2.1.1: the constants of the shift-add exponential e(D) ~= 2^Q * exp(-D * s) for integer
    D in [0, d_max] (the softmax's D = rowmax - q, the sigmoid's |q|): K * 2^-G ~= s * log2(e) *
    2^F with K rounded half up to 17 significant bits, the chord tables, Q and Z_MAX. Raises when
    G would exceed the shift limit or D*K could exceed 2^62 (`section` names the caller's limits).
    Returns (consts, info)."""
    kappa = Fraction(s) * LOG2E * (1 << BS_F)
    h = _floor_log2(kappa) - (BS_K_BITS - 1)
    km = arith.round_half_up(kappa / Fraction(2) ** h)
    k_const, g = (km << h, 0) if h >= 0 else (km, -h)
    if g > arith.SHIFT_MAX:
        raise ArithSpecError(f"{what}: in_scale {float(s)!r} is too small "
                             f"(needs G = {g} > {arith.SHIFT_MAX}; spec {section})")
    if d_max * k_const > (1 << 62):
        raise ArithSpecError(f"{what}: in_scale {float(s)!r} is too large: D*K up to "
                             f"{d_max * k_const} > 2^62 (spec {section})")
    c_tab, ds_tab = bitshift_tables()
    consts = {"K": k_const, "G": g, "F": BS_F, "Q": BS_Q, "SEG_BITS": BS_SEG_BITS,
              "C": c_tab, "DS": ds_tab, "Z_MAX": BS_Z_MAX}
    info = {"K_csd_digits": len(csd(k_const)),
            "K_rel_error": float(Fraction(k_const, 1 << g) / kappa - 1),
            "slope_csd_digits": max(len(csd(int(v))) for v in ds_tab)}
    return consts, info


def bitshift_exp_ref(d, consts):
    """K2.1.3 steps 2-5: e = 2^Q * 2^-T with T = D*S*log2(e), at scale 2^-Q (D >= 0, int64)."""
    F, sb = consts["F"], consts["SEG_BITS"]
    t = (d * consts["K"]) >> consts["G"]                # T at scale 2^-F; K is <= 9 CSD digits
    z = t >> F                                           # integer part
    r = t & ((1 << F) - 1)                               # fraction, F bits
    i = r >> (F - sb)                                    # chord index: top 4 bits of r
    rho = r & ((1 << (F - sb)) - 1)                      # position inside the chord
    y = consts["C"][i] - ((rho * consts["DS"][i]) >> (F - sb))   # 2^-r at scale 2^-Q
    return y >> np.minimum(z, consts["Z_MAX"])


@numba.njit(cache=True, nogil=True, inline="always")
def bitshift_exp1(d, K, G, F, SB, C, DS, ZMAX):
    """bitshift_exp_ref for one int64 D (the jitted twin, K2.1.3 steps 2-5)."""
    t = (d * K) >> G
    z = t >> F
    r = t & ((np.int64(1) << F) - 1)
    i = r >> (F - SB)
    y = C[i] - (((r & ((np.int64(1) << (F - SB)) - 1)) * DS[i]) >> (F - SB))
    return y >> (z if z < ZMAX else ZMAX)


class BitshiftSoftmax(_SoftmaxKernel):
    name = "bitshift-softmax"
    spec_section = "K2.1"
    title = "bit-shifting Softmax (ours): CSD log2(e)*S, 16 chords for 2^-r, 1 reciprocal/row"
    const_registers = {                                   # K2.1.1 "Registers"
        "K": ConstFormat.holding(1 << (BS_K_BITS - 1), 1 << 62),
        "G": ConstFormat.holding(0, arith.SHIFT_MAX),
        "F": ConstFormat.fixed(BS_F), "Q": ConstFormat.fixed(BS_Q),
        "SEG_BITS": ConstFormat.fixed(BS_SEG_BITS),
        "C": ConstFormat.holding(1 << (BS_Q - 1), 1 << BS_Q, (1 << BS_SEG_BITS,)),
        "DS": ConstFormat.holding(0, (1 << 26) - 1, (1 << BS_SEG_BITS,)),
        "N": ConstFormat.fixed(BS_N), "Z_MAX": ConstFormat.fixed(BS_Z_MAX)}

    def plan(self, in_scale, in_fmt, out_bits=8):
        s, out_fmt = _check_common(in_scale, in_fmt, out_bits)
        exp_consts, info = bitshift_exp_plan(self.name, s, in_fmt.hi - in_fmt.lo, "K2.1.4")
        consts = {k: exp_consts[k] for k in ("K", "G", "F", "Q", "SEG_BITS", "C", "DS")}
        consts.update(N=BS_N, Z_MAX=BS_Z_MAX)
        return self._plan(consts, in_fmt, out_fmt, {"in_scale": s, **info})


    def datapath_widths(self, plan):
        """K2.1.3 for this plan's input range and K, G: D = m - q (step 1), D K and T (step 2), z
        (step 3), all unsigned; the rest of the row unit is fixed by the spec (e, sum, R, e R)."""
        c, in_fmt = plan.consts, plan.in_fmt
        d_max = in_fmt.hi - in_fmt.lo
        t_max = (d_max * int(c["K"])) >> int(c["G"])
        return {"D": d_max.bit_length(), "DK": (d_max * int(c["K"])).bit_length(), "T": t_max.bit_length(),
                "z": max((t_max >> int(c["F"])).bit_length(), 1)}

    @staticmethod
    def _check(c, in_fmt):
        """K2.1.2, K2.1.4: the spec's tables (the fixed scalars and the ranges of K and G are their
        registers) and D*K <= 2^62."""
        table, slopes = bitshift_tables()
        c.fixed("C", table)
        c.fixed("DS", slopes)
        k = c["K"]
        c.require((in_fmt.hi - in_fmt.lo) * k <= 1 << 62, f"D*K up to {(in_fmt.hi - in_fmt.lo) * k} > 2^62")

    @staticmethod
    def _exp_ref(d, consts):
        return bitshift_exp_ref(d, consts)

    @staticmethod
    def _normalise_ref(e, consts):
        """K2.1.3 steps 6-8: R = floor(2^N / sum), out = sat(round_shift(e * R, N - O))."""
        n, o = consts["N"], consts["out_bits"]
        recip = (np.int64(1) << np.int64(n)) // e.sum(axis=1, keepdims=True)
        return np.minimum(arith.round_shift(e * recip, n - o), (1 << o) - 1)

    @staticmethod
    def _fast_rows(q2, out2, c):
        _bitshift_rows(q2, out2, c["K"], c["G"], c["F"], c["SEG_BITS"], c["C"], c["DS"],
                       c["Z_MAX"], c["N"], c["out_bits"])

    @staticmethod
    def _output_bound(plan, row_len, approx):
        o = plan.out_fmt.bits
        # round half up of e*R/2^(N-O) (+ the floor of R: < e/2^N <= 2^-32), or saturation at 1 - 2^-O
        return max(2.0 ** -o, 2.0 ** -(o + 1) + 2.0 ** -32 + approx)

    def row_sum_bound(self, plan, row_len):
        """|sum(out) * 2^-O - 1| <= L * (2^-(O+1) + 2^-32) + 2^-O (K2.1.5)."""
        o = plan.out_fmt.bits
        return row_len * (2.0 ** -(o + 1) + 2.0 ** -32) + 2.0 ** -o

    def cost(self, shape, plan=None):
        row_len = row_length(shape)
        kd = plan.info["K_csd_digits"] if plan is not None else BS_CSD_MAX_K
        sd = plan.info["slope_csd_digits"] if plan is not None else BS_CSD_MAX_SLOPE
        return {"mul": 1.0,                                  # e * R
                "shift": kd + 1 + 1 + sd + 1 + 1 + 1,        # D*K, >>G, >>F, rho*DS, >>(F-4), >>z, >>(N-O)
                "add": 1 + (kd - 1) + (sd - 1) + 1 + 1 + 1,  # D, D*K, rho*DS, C-.., row sum, +half
                "div": 1.0 / row_len,                        # R, once per row
                "cmp": 1 + 1 + 1}                            # row max, min(z, 31), saturation


@numba.njit(cache=True, nogil=True)
def _row_max(q2, row):
    m = np.int64(q2[row, 0])
    for j in range(1, q2.shape[1]):
        m = max(m, np.int64(q2[row, j]))
    return m


@numba.njit(cache=True, nogil=True)
def _bitshift_rows(q2, out2, K, G, F, SB, C, DS, ZMAX, N, O):
    half = np.int64(1) << (N - O - 1)
    hi = (np.int64(1) << O) - 1
    e_row = np.empty(q2.shape[1], dtype=np.int64)
    for row in range(q2.shape[0]):
        m = _row_max(q2, row)
        s = np.int64(0)
        for j in range(q2.shape[1]):
            e = bitshift_exp1(m - np.int64(q2[row, j]), K, G, F, SB, C, DS, ZMAX)
            e_row[j] = e
            s += e
        recip = (np.int64(1) << N) // s
        for j in range(q2.shape[1]):
            v = (e_row[j] * recip + half) >> (N - O)
            out2[row, j] = v if v < hi else hi


# --- K2.2 ivit-shiftmax (prior art: I-ViT Shiftmax) --------------------------------------------------

IVIT_N = 15
IVIT_SUM_CAP = (1 << 31) - 1


class IvitShiftmax(_SoftmaxKernel):
    name = "ivit-shiftmax"
    spec_section = "K2.2"
    title = "I-ViT Shiftmax (n = 15, log2(e) ~ 1 + 1/2 - 1/16, chord 1 - r/2, 31-bit reciprocal)"
    const_registers = {"x0": ConstFormat.holding(-((1 << 16) - 1), -1),      # K2.2.1, K2.2.4
                       "n": ConstFormat.fixed(IVIT_N), "SUM_CAP": ConstFormat.fixed(IVIT_SUM_CAP)}

    def plan(self, in_scale, in_fmt, out_bits=8):
        s, out_fmt = _check_common(in_scale, in_fmt, out_bits)
        x0 = math.floor(Fraction(-1) / Fraction(s))          # K2.2.1: integer for -1.0, exact
        if -x0 << IVIT_N > IVIT_SUM_CAP:
            raise ArithSpecError(f"ivit-shiftmax: in_scale {s!r} is too small: x0 = {x0}, "
                                 f"e(0) = |x0|*2^15 exceeds 2^31 - 1 (spec K2.2.4)")
        consts = {"x0": x0, "n": IVIT_N, "SUM_CAP": IVIT_SUM_CAP}
        return self._plan(consts, in_fmt, out_fmt, {"in_scale": s})


    @staticmethod
    def _check(c, in_fmt):
        """K2.2.4: e(0) = |x0| 2^n <= 2^31 - 1 (n, the sum cap and x0's range are registers)."""
        n, cap, x0 = c["n"], c["SUM_CAP"], c["x0"]
        c.require(-x0 << n <= cap, f"e(0) = {-x0 << n} exceeds 2^31 - 1")

    @staticmethod
    def _exp_ref(d, consts):
        """K2.2.3 steps 1-6 (I-ViT int_exp_shift with true integer floor)."""
        x0, n = consts["x0"], consts["n"]
        q = -d
        q = q + (q >> 1) - (q >> 4)                # q * 1.4375 ~ q * log2(e), floor shifts
        q = np.maximum(q, n * x0)                  # clip at 2^-n
        z = arith.floor_div(q, x0)                 # 0..n, a floor division per element
        r = q - z * x0                             # (x0, 0]
        return ((r - 2 * x0) << (n - z)) >> 1      # floor((r/2 - x0) * 2^(n - z)); > 0 always

    @staticmethod
    def _normalise_ref(e, consts):
        """K2.2.3 steps 7-8: sum clamped to 2^31 - 1, factor = floor((2^31-1)/sum), >> (31 - O)."""
        cap, o = consts["SUM_CAP"], consts["out_bits"]
        factor = cap // np.minimum(e.sum(axis=1, keepdims=True), cap)
        return (e * factor) >> (31 - o)            # e*factor <= 2^31 - 1: out <= 2^O - 1

    @staticmethod
    def _fast_rows(q2, out2, c):
        _ivit_rows(q2, out2, c["x0"], c["n"], c["SUM_CAP"], c["out_bits"])

    @staticmethod
    def _output_bound(plan, row_len, approx):
        e0 = -plan.consts["x0"] << plan.consts["n"]
        if row_len * e0 > plan.consts["SUM_CAP"]:
            return 1.0                             # the sum may clamp: outside the accuracy domain
        return approx + 2.0 ** -plan.out_fmt.bits + (e0 + 1) / 2.0 ** 31

    def row_sum_bound(self, plan, row_len):
        """sum(out) * 2^-O in [1 - L*2^-O - (L*e(0) + 1)/2^31, 1] when the sum does not clamp (K2.2.5)."""
        e0 = -plan.consts["x0"] << plan.consts["n"]
        return row_len * 2.0 ** -plan.out_fmt.bits + (row_len * e0 + 1) / 2.0 ** 31

    def cost(self, shape, plan=None):
        row_len = row_length(shape)
        return {"mul": 2.0,                         # z*x0, e*factor
                "shift": 2 + 1 + 1 + 1,             # q>>1, q>>4, << (n-z), >>1, >> (31-O)
                "add": 1 + 2 + 1 + 1 + 1 + 1,       # D, shift-adds, r, r-2x0, n-z, row sum
                "div": 1 + 1.0 / row_len,           # z = q // x0 per element, factor per row
                "cmp": 1 + 1 + 1.0 / row_len}       # row max, clip, sum clamp


@numba.njit(cache=True, nogil=True)
def _ivit_rows(q2, out2, x0, n, cap, O):
    e_row = np.empty(q2.shape[1], dtype=np.int64)
    for row in range(q2.shape[0]):
        m = _row_max(q2, row)
        s = np.int64(0)
        for j in range(q2.shape[1]):
            q = np.int64(q2[row, j]) - m
            q = q + (q >> 1) - (q >> 4)
            if q < n * x0:
                q = n * x0
            z = arith.floor_div1(q, x0)
            r = q - z * x0
            e = ((r - 2 * x0) << (n - z)) >> 1
            e_row[j] = e
            s += e
        factor = cap // (s if s < cap else cap)
        for j in range(q2.shape[1]):
            out2[row, j] = (e_row[j] * factor) >> (31 - O)


# --- K2.3 ibert-softmax (prior art: I-BERT i-exp) ----------------------------------------------------

IBERT_N = 30
IBERT_E16_MAX = (1 << 15) - 1


class IbertSoftmax(_SoftmaxKernel):
    name = "ibert-softmax"
    spec_section = "K2.3"
    title = "I-BERT i-exp Softmax (n = 30, 2nd-order polynomial, fixed shift to 16 bits, 2^32/sum)"
    const_registers = {"x0": ConstFormat.holding(-(1 << 15), -1),            # K2.3.1, K2.3.4
                       "n": ConstFormat.fixed(IBERT_N), "b_int": ConstFormat.holding(1, (1 << 17) - 1),
                       "c_int": ConstFormat.holding(1, (1 << 32) - 1), "SH16": ConstFormat.holding(16, 47),
                       "E16_MAX": ConstFormat.fixed(IBERT_E16_MAX)}

    def plan(self, in_scale, in_fmt, out_bits=8):
        s, out_fmt = _check_common(in_scale, in_fmt, out_bits)
        fs = Fraction(s)
        a, b, c = IBERT_COEF
        x0 = math.floor(IBERT_X0 / fs)                       # K2.3.1, exact rationals
        b_int = math.floor((b / a) / fs)
        c_int = math.floor((c / a) / fs ** 2)
        if c_int < 1:
            raise ArithSpecError(f"ibert-softmax: in_scale {s!r} is too large: c_int = "
                                 f"floor(2.7921/S^2) = 0 makes every exponential 0 (spec K2.3.4)")
        e0 = c_int << IBERT_N
        if e0 >= (1 << 62) or (-x0) * b_int << IBERT_N >= (1 << 62):
            raise ArithSpecError(f"ibert-softmax: in_scale {s!r} is too small: "
                                 f"c_int * 2^30 = {e0} reaches 2^62 (spec K2.3.4)")
        sh = e0.bit_length() - 15                            # e(0) >> sh in [2^14, 2^15)
        consts = {"x0": x0, "n": IBERT_N, "b_int": b_int, "c_int": c_int, "SH16": sh,
                  "E16_MAX": IBERT_E16_MAX}
        return self._plan(consts, in_fmt, out_fmt, {"in_scale": s})


    @staticmethod
    def _check(c, in_fmt):
        """K2.3.4: both products below 2^62 and SH16 derived from e(0) as the plan derives it (n,
        the 16-bit cap and the ranges of x0, b_int, c_int are registers)."""
        n, x0, b_int, c_int = c["n"], c["x0"], c["b_int"], c["c_int"]
        c.require(c_int << n < 1 << 62 and (-x0) * b_int << n < 1 << 62,
                  "c_int * 2^30 or |x0| * b_int * 2^30 reaches 2^62")
        c.require(c["SH16"] == (c_int << n).bit_length() - 15,
                  "SH16 is not bitlen(c_int * 2^30) - 15")

    @staticmethod
    def _exp_ref(d, consts):
        """K2.3.3 steps 1-6: i-exp, then the fixed requantisation to 16 bits (ours)."""
        x0, n = consts["x0"], consts["n"]
        q = np.maximum(-d, n * x0)                 # clip at -30 ln 2
        z = arith.floor_div(q, x0)                 # 0..30, a floor division per element
        r = q - z * x0                             # (x0, 0]
        poly = r * (r + consts["b_int"]) + consts["c_int"]
        e = np.maximum(poly << (n - z), 0)
        return np.minimum(arith.round_shift(e, consts["SH16"]), consts["E16_MAX"])

    @staticmethod
    def _normalise_ref(e16, consts):
        """K2.3.3 steps 7-8: factor = floor(2^32 / sum), out = sat(floor(e16*factor / 2^(32-O)))."""
        o = consts["out_bits"]
        factor = (np.int64(1) << np.int64(32)) // e16.sum(axis=1, keepdims=True)
        return np.minimum((e16 * factor) >> (32 - o), (1 << o) - 1)

    @staticmethod
    def _fast_rows(q2, out2, c):
        _ibert_rows(q2, out2, c["x0"], c["n"], c["b_int"], c["c_int"], c["SH16"], c["E16_MAX"],
                    c["out_bits"])

    def _output_bound(self, plan, row_len, approx):
        e16_0 = int(self.exp_table_at0(plan.consts))
        if row_len * e16_0 > (1 << 32):
            return 1.0                             # factor may be 0: outside the accuracy domain
        return approx + 2.0 ** -plan.out_fmt.bits + e16_0 / 2.0 ** 32

    def exp_table_at0(self, consts):
        return self._exp_ref(np.zeros(1, dtype=np.int64), consts)[0]

    def row_sum_bound(self, plan, row_len):
        """sum(out) * 2^-O in [1 - L*2^-O - L*e16(0)/2^32, 1] (K2.3.5)."""
        return row_len * 2.0 ** -plan.out_fmt.bits + row_len * int(self.exp_table_at0(plan.consts)) / 2.0 ** 32

    def cost(self, shape, plan=None):
        row_len = row_length(shape)
        return {"mul": 3.0,                         # z*x0, r*(r+b), e16*factor
                "shift": 1 + 1 + 1,                 # << (n-z), >> SH16, >> (32-O)
                "add": 1 + 1 + 2 + 1 + 1 + 1,       # D, r, poly (+b, +c), n-z, +half, row sum
                "div": 1 + 1.0 / row_len,           # z = q // x0 per element, factor per row
                "cmp": 1 + 1 + 1 + 1 + 1}           # row max, clip, max(.,0), 16-bit clamp, saturation


@numba.njit(cache=True, nogil=True)
def _ibert_rows(q2, out2, x0, n, b_int, c_int, sh, e16max, O):
    half = np.int64(1) << (sh - 1)
    hi = (np.int64(1) << O) - 1
    e_row = np.empty(q2.shape[1], dtype=np.int64)
    for row in range(q2.shape[0]):
        m = _row_max(q2, row)
        s = np.int64(0)
        for j in range(q2.shape[1]):
            q = np.int64(q2[row, j]) - m
            if q < n * x0:
                q = n * x0
            z = arith.floor_div1(q, x0)
            r = q - z * x0
            e = (r * (r + b_int) + c_int) << (n - z)
            if e < 0:
                e = 0
            e = (e + half) >> sh
            if e > e16max:
                e = e16max
            e_row[j] = e
            s += e
        factor = (np.int64(1) << 32) // s
        for j in range(q2.shape[1]):
            v = (e_row[j] * factor) >> (32 - O)
            out2[row, j] = v if v < hi else hi


bitshift_softmax = BitshiftSoftmax()
ivit_shiftmax = IvitShiftmax()
ibert_softmax = IbertSoftmax()
CANDIDATES = {k.name: k for k in (bitshift_softmax, ivit_shiftmax, ibert_softmax)}
