"""GELU kernels (spec K3): three integer-only candidates and the data-aware Poly-GELU fitter.

  poly-gelu       K3.1  IPTQ-ViT's Data-aware Poly-GELU, 0.5x(1 + L(x/sqrt2)) with a 4th-power L;
                        the fitter is K3.1.1, the integer realisation is ours
  ibert-gelu      K3.2  I-BERT's i-GELU (square polynomial), I-BERT's integer recipe, sign flipped
                        at the end so the output scale is positive
  ivit-shiftgelu  K3.3  I-ViT's ShiftGELU x*sigmoid(1.702x) via the shift exponential, PyTorch
                        floor semantics in true integers, 8-bit sigmoid at 2^-7

Every plan holds integer constants only; reference() is plain NumPy that reads like the spec,
fast() is numba and agrees bit for bit. Float appears only in plan(), the fitter, the error-bound
helpers and float_reference().
"""
import functools
import math
import warnings

import numba
import numpy as np

from .. import arith, floatfn, reproducible
from ..arith import ArithSpecError, ConstFormat, IntFormat, IntOverflowError
from ..errors import IntsimWarning
from .base import TABLE_IN_BITS_MAX, Consts, ElementTable, Kernel, KernelPlan, row_length

SQRT2 = math.sqrt(2.0)
INT64_LIMIT = 1 << 62          # every intermediate is proven to stay strictly below this (K3.0)
IN_BITS_MAX = 16               # declared input domain: signed 2..16-bit integers (K3.0)
OUT_BITS_MAX = 32


# --- K3.0 common input / output --------------------------------------------------------------------

def _check_in_fmt(in_fmt):
    """in_fmt: an IntFormat or a bit count; must be signed with 2..16 bits (K3.0)."""
    if isinstance(in_fmt, IntFormat):
        fmt = in_fmt
    else:
        fmt = IntFormat(arith.check_bits("in_fmt", in_fmt, 2, IN_BITS_MAX))
    if not fmt.signed:
        raise ArithSpecError(f"GELU input must be a signed format, got {fmt.describe()}")
    arith.check_bits("in_fmt", fmt.bits, 2, IN_BITS_MAX)
    return fmt


def _out_fmt_for(bound, what):
    """The narrowest signed format holding [-bound, bound] (K3.0); more than 32 bits is an error."""
    bits = int(bound).bit_length() + 1
    if bits > OUT_BITS_MAX:
        raise ArithSpecError(f"{what}: output magnitude up to {bound} needs {bits} bits > {OUT_BITS_MAX}")
    return IntFormat(max(bits, 2))


def _base_consts(fmt, out_fmt):
    return {"in_lo": fmt.lo, "in_hi": fmt.hi, "out_bits": out_fmt.bits}


def _ref_input(q, consts):
    """Reference-path input: integer dtype, non-empty, every value inside in_fmt (K3.0)."""
    q = np.asarray(q)
    if not np.issubdtype(q.dtype, np.integer):
        raise ArithSpecError(f"GELU input must be an integer array, got dtype {q.dtype}")
    arith.check_nonempty("GELU input", q)
    _raise_range(int(np.sum((q < consts["in_lo"]) | (q > consts["in_hi"]))), consts)
    return q.astype(np.int64)


def _fast_input(q, consts):
    q = np.asarray(q)
    if not np.issubdtype(q.dtype, np.integer):
        raise ArithSpecError(f"GELU input must be an integer array, got dtype {q.dtype}")
    arith.check_nonempty("GELU input", q)
    if q.dtype == np.uint64:        # the kernels read int64; larger values are out of range anyway
        _raise_range(int(np.sum(q > np.uint64(consts["in_hi"]))), consts)
        q = q.astype(np.int64)
    return q


def _plan_consts(what, in_scale, fn):
    """Run fn() (float arithmetic of a plan); float overflow / division by zero at an extreme
    in_scale becomes a clear ArithSpecError (K3.0)."""
    try:
        return fn()
    except (OverflowError, ZeroDivisionError, ValueError) as e:
        if isinstance(e, ArithSpecError):
            raise
        raise ArithSpecError(f"{what}: in_scale={in_scale!r} is out of range ({e})") from None


def _raise_range(bad, consts):
    if bad:
        raise IntOverflowError(f"GELU input: {bad} value(s) outside [{consts['in_lo']}, "
                               f"{consts['in_hi']}] (spec K3.0: the declared input domain)")


def _out_dtype(consts):
    return IntFormat(consts["out_bits"]).storage


def _run_elementwise(jit_kernel, q, consts, *kernel_consts):
    """Fast path of an elementwise GELU: jit_kernel(q_flat, in_lo, in_hi, *kernel_consts, out)
    writes out in the declared storage and returns how many inputs lie outside in_fmt."""
    q = _fast_input(q, consts)
    out = np.empty(q.size, dtype=_out_dtype(consts))
    bad = jit_kernel(np.ascontiguousarray(q).reshape(-1), consts["in_lo"], consts["in_hi"],
                     *kernel_consts, out)
    _raise_range(bad, consts)
    return out.reshape(q.shape)


def _ref_output(y, consts):
    """The proven bound says y fits out_fmt; the reference checks it anyway (never wrap, A4)."""
    fmt = IntFormat(consts["out_bits"])
    arith.check_fits("GELU output", y, fmt)
    return y.astype(fmt.storage)


def gelu_exact(x):
    """Exact GELU in float64 (offline: the fitter, the error bounds)."""
    return floatfn.gelu(np.asarray(x, dtype=np.float64))


class _GeluKernel(Kernel):
    """The family's plan options: `sample` (the layer's calibration values, for data-aware fits;
    a candidate without a fit ignores it) and the candidate's own knobs."""
    family = "gelu"

    def check_consts(self, plan):
        """K3.0: the registers (in_lo, in_hi, out_bits restating the program's formats), a signed
        input and a signed full-range output; then the candidate's preconditions (`_check`) and
        its output bound, which must fit the declared output width."""
        c = Consts(self, plan)
        fmt, out_fmt = plan.in_fmt, IntFormat(c["out_bits"])
        c.require(fmt.signed and plan.out_fmt == out_fmt,
                  f"the program's tensors are {fmt.describe()} -> {plan.out_fmt.describe()}, the "
                  f"constants need a signed input and {out_fmt.describe()}")
        bound = self._check(c, fmt)
        c.require(bound <= out_fmt.hi, f"outputs up to {bound} do not fit {out_fmt.describe()}")

    def float_reference(self, x, plan=None):
        """Exact GELU(x) = 0.5 x (1 + erf(x/sqrt2)) in float64."""
        return gelu_exact(x)

    def elementwise(self, plan):
        """Each output depends on its own input alone (every candidate but I-ViT's row max)."""
        return True

    def bind(self, plan):
        """An elementwise plan on a narrow input becomes a table of its outputs (ElementTable)."""
        if self.elementwise(plan) and plan.in_fmt.bits <= TABLE_IN_BITS_MAX:
            plan.runtime = ElementTable.of(self, plan)
        return plan

    def fast(self, inputs, plan):
        """The bound table when there is one, else the candidate's arithmetic (numba)."""
        if plan.runtime is not None:
            return plan.runtime(inputs[0])
        return self.arithmetic(inputs, plan)

    def error_bound(self, plan, inputs):
        """Pointwise bound at the real inputs x = q * in_scale (the candidate's `bound_at`)."""
        return self.bound_at(plan, np.asarray(inputs[0], dtype=np.float64) * plan.in_scale)

    const_registers = {}          # the candidate's own constants (K3.x), beside K3.0's

    def const_formats(self, plan):
        """K3.0: in_lo, in_hi and out_bits restate the formats (registers holding their domains:
        signed 2..16-bit inputs, outputs up to 32 bits), then the candidate's constants."""
        return {"in_lo": ConstFormat.holding(-(1 << (IN_BITS_MAX - 1)), -1).exactly(plan.in_fmt.lo),
                "in_hi": ConstFormat.holding(1, (1 << (IN_BITS_MAX - 1)) - 1).exactly(plan.in_fmt.hi),
                "out_bits": ConstFormat.holding(2, OUT_BITS_MAX).exactly(plan.out_fmt.bits),
                **self.const_registers}


# =====================================================================================================
# K3.1 poly-gelu
# =====================================================================================================

NB = 14                  # B = |b|/Sw rounded lies in [2^(NB-1), 2^NB]: u has NB-bit resolution on [0,|b|]
S2 = 2 * NB - 24         # d^2 is floored by 2^S2 so that (d^2 >> S2)^2 < 2^48
MA_BITS = 14             # width of the dyadic multiplier of |a|: 2^48 * 2^14 = 2^62
F_POLY = 15              # L is carried at scale 2^-F_POLY; 1 + L at most 2 -> 2^(F_POLY+1)


def poly_gelu_float(x, a, b):
    """The float Poly-GELU: 0.5 x (1 + L(x/sqrt2)), L(u) = sgn(u) [a (min(|u|, -b) + b)^4 + 1]."""
    x = np.asarray(x, dtype=np.float64)
    u = x / SQRT2
    t = np.square(np.minimum(np.abs(u), -b) + b)
    L = np.sign(u) * (a * (t * t) + 1.0)
    return 0.5 * x * (1.0 + L)


# --- K3.1.1 the fitter ---------------------------------------------------------------------------
FIT_RANGE_DEFAULT = (-8.0, 8.0)     # x range of the plain uniform fit
FIT_UNIFORM_POINTS = 8193           # uniform grid (odd: includes x = 0)
FIT_BINS = 4096                     # histogram bins of the data-aware fit
FIT_B_RANGE = (-8.0, -0.5)          # b is searched in this interval
FIT_B_GRID = 751                    # coarse grid step 0.01, then golden-section refinement


def fit_poly_gelu(samples=None, lo=None, hi=None):
    """Least-squares (a, b) of Poly-GELU (spec K3.1.1). Deterministic; a < 0, b < 0.

    No samples: the plain uniform fit, sum over a uniform grid of x in [lo, hi] (default [-8, 8])
    of (L(x/sqrt2) - erf(x/sqrt2))^2 -> a = -0.01912, b = -2.7193 (IPTQ-ViT's -0.0191, -2.719).
    With samples (the layer's observed GELU inputs): minimise the mean squared GELU error over the
    samples, sum_i (PolyGELU(x_i) - GELU(x_i))^2, restricted to [lo, hi] (default [min T, max T]);
    the samples enter as a 4096-bin histogram on that range (counts, so any order gives the same fit).
    """
    if samples is None:
        lo = FIT_RANGE_DEFAULT[0] if lo is None else float(lo)
        hi = FIT_RANGE_DEFAULT[1] if hi is None else float(hi)
        _check_fit_range(lo, hi)
        x = reproducible.linspace(lo, hi, FIT_UNIFORM_POINTS)
        weight = np.ones_like(x)                     # erf error, uniform
    else:
        s = np.asarray(samples, dtype=np.float64).ravel()
        if s.size == 0:
            raise ArithSpecError("fit data is empty")
        bad = ~np.isfinite(s)
        if bad.any():
            raise ArithSpecError(f"fit data holds {int(bad.sum())} NaN/Inf value(s)")
        lo = float(s.min()) if lo is None else float(lo)
        hi = float(s.max()) if hi is None else float(hi)
        s = s[(s >= lo) & (s <= hi)]
        if s.size < 2 or s.min() == s.max():
            raise ArithSpecError(f"fit data needs at least 2 distinct values in [{lo}, {hi}]")
        _check_fit_range(lo, hi)
        counts, centres = fit_histogram(s, FIT_BINS, lo, hi)
        keep = counts > 0
        x = centres[keep]
        weight = counts[keep] * (x * x / 4.0)        # GELU error = (x/2) * erf error
    return _fit_ab(x, weight)


def fit_histogram(s, bins, lo, hi):
    """(counts, centres) of `bins` equal bins on [lo, hi] (K3.1.1 "Binning"): sample x falls in
    bin min(floor((x - lo) * (bins / (hi - lo))), bins - 1), whose centre is
    lo + (i + 1/2) * ((hi - lo) / bins). IEEE operations alone, so every machine bins alike."""
    idx = np.minimum(np.floor((s - lo) * (bins / (hi - lo))), bins - 1).astype(np.int64)
    counts = np.bincount(idx, minlength=bins)
    return counts, lo + (np.arange(bins) + 0.5) * ((hi - lo) / bins)


def _check_fit_range(lo, hi):
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ArithSpecError(f"fit range [{lo}, {hi}] must be finite with lo < hi")


def _profiles(bs, au, sgn, r0, weight, rows=64):
    """`_fit_ab`'s profile at every b of `bs`: [(cost, a)], a eliminated in closed form (inf, 0
    where no weight is inside the ramp). `rows` values of b at a time; each b's sums are sequential
    sums along its row (reproducible.row_sums), so one b alone gives the same floats as b inside a
    grid, on every machine."""
    total = reproducible.total(weight * r0 * r0)
    out = []
    for i in range(0, len(bs), rows):
        b = np.asarray(bs[i:i + rows], dtype=np.float64)[:, None]
        t = np.minimum(au[None, :], -b) + b
        t = t * t
        h = sgn[None, :] * (t * t)
        shh = reproducible.row_sums(weight * h * h).reshape(-1)
        shr = reproducible.row_sums(weight * h * r0).reshape(-1)
        out += [(total - float(r) * float(r) / float(q), -float(r) / float(q)) if q > 0.0 else (math.inf, 0.0)
                for q, r in zip(shh, shr)]
    return out


def _fit_ab(x, weight):
    """min over (a, b) of sum w (L(u) - erf(u))^2, u = x/sqrt2. For fixed b the model is linear in a,
    so a is eliminated in closed form and b is found by grid search + golden section (K3.1.1)."""
    u = x / SQRT2
    sgn = np.sign(u)
    au = np.abs(u)
    r0 = sgn - floatfn.erf(u)          # residual of L with a = 0 (L = sgn)

    def profile(b):
        return _profiles([b], au, sgn, r0, weight)[0]

    grid = reproducible.linspace(FIT_B_RANGE[0], FIT_B_RANGE[1], FIT_B_GRID)
    costs = [cost for cost, _ in _profiles(grid, au, sgn, r0, weight)]
    i = int(np.argmin(costs))
    if not math.isfinite(costs[i]):
        raise ArithSpecError("fit data has no nonzero value inside the erf ramp |x| < 11.3: "
                             "a and b are undetermined")
    lo_b, hi_b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    g = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = hi_b - g * (hi_b - lo_b), lo_b + g * (hi_b - lo_b)
    fc, fd = profile(c)[0], profile(d)[0]
    for _ in range(80):                 # fixed count: deterministic, bracket shrinks by 0.618^80
        if fc <= fd:
            hi_b, d, fd = d, c, fc
            c = hi_b - g * (hi_b - lo_b)
            fc = profile(c)[0]
        else:
            lo_b, c, fc = c, d, fd
            d = lo_b + g * (hi_b - lo_b)
            fd = profile(d)[0]
    b = 0.5 * (lo_b + hi_b)
    a = profile(b)[1]
    if not a < 0.0:
        raise ArithSpecError(f"fit produced a = {a} (not negative): the data do not determine the ramp")
    return float(a), float(b)


@functools.lru_cache(maxsize=1)
def default_poly_ab():
    """The uniform fit over FIT_RANGE_DEFAULT (computed once)."""
    return fit_poly_gelu()


def _check_ab(a, b):
    for name, v in (("a", a), ("b", b)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
                or not math.isfinite(float(v)) or not float(v) < 0.0:
            raise ArithSpecError(f"Poly-GELU {name} must be a finite negative number, got {v!r}")
    return float(a), float(b)


# --- K3.1 integer kernel ----------------------------------------------------------------------------

class PolyGelu(_GeluKernel):
    name = "poly-gelu"
    spec_section = "K3.1"
    title = "IPTQ-ViT data-aware Poly-GELU, 4th-power erf, fitted (a, b)"
    const_registers = {                                   # K3.1.2 "Registers"
        "GL": ConstFormat.holding(0, 61), "GR": ConstFormat.holding(0, IN_BITS_MAX - 1),
        "B": ConstFormat.holding(1 << (NB - 1), 1 << NB), "S2": ConstFormat.fixed(S2),
        "mA": ConstFormat.holding(1 << (MA_BITS - 1), (1 << MA_BITS) - 1),
        "kA": ConstFormat.holding(0, arith.SHIFT_MAX), "TWO_ONE": ConstFormat.fixed(1 << (F_POLY + 1))}

    def plan(self, in_scale, in_fmt, sample=None, a=None, b=None):
        """Constants of K3.1.2 from in_scale and (a, b): given, else fitted on the calibration
        `sample` of the layer's input, else the uniform default fit."""
        S = arith.check_scale("in_scale", in_scale)
        fmt = _check_in_fmt(in_fmt)
        if (a is None) != (b is None):
            raise ArithSpecError("poly-gelu: give both a and b, or neither")
        if a is not None:
            source = "given"
        elif sample is not None and np.unique(np.asarray(sample)).size >= 2:
            a, b = fit_poly_gelu(sample)
            source = "fit_data"
        else:       # no sample, or one with a single value (a layer calibrated on zeros): nothing to fit
            if sample is not None:
                warnings.warn(IntsimWarning("poly-gelu: the calibration sample holds one value only; "
                                            "using the uniform fit of (a, b)"), stacklevel=2)
            a, b = default_poly_ab()
            source = "uniform"
        a, b = _check_ab(a, b)

        # G normalises the u grid: |b| / Sw in [2^(NB-1), 2^NB), Sw = (S/sqrt2) * 2^-G
        ratio = abs(b) * SQRT2 / S                       # |b| / S1 in input LSBs
        if not math.isfinite(ratio) or ratio == 0.0:
            raise ArithSpecError(f"poly-gelu: in_scale={in_scale!r} with b={b!r} is out of range")
        G = NB - math.frexp(ratio)[1]
        GL, GR = max(G, 0), max(-G, 0)
        mag = max(-fmt.lo, fmt.hi)
        if mag.bit_length() + GL > 62:
            raise ArithSpecError(f"poly-gelu: in_scale={in_scale!r} is too coarse: |q| << {GL} "
                                 f"would leave int64 (spec K3.1.2)")
        if (mag >> GR) == 0:
            raise ArithSpecError(f"poly-gelu: in_scale={in_scale!r} is too fine: the whole input "
                                 f"range lies below one step of u ({abs(b)}/2^{NB}), the function "
                                 f"is lost (spec K3.1.2)")
        B = math.floor(math.ldexp(ratio, G) + 0.5)       # round half up, in [2^(NB-1), 2^NB]
        Sw = math.ldexp(S / SQRT2, -G)
        dy = arith.dyadic(abs(a) * Sw ** 4 * 2.0 ** (2 * S2 + F_POLY), bits=MA_BITS)
        if dy.m < (1 << (MA_BITS - 1)) or dy.k < 0:
            raise ArithSpecError(f"poly-gelu: a={a!r} gives a multiplier outside the normalised "
                                 f"{MA_BITS}-bit range (m={dy.m}, k={dy.k}; spec K3.1.2)")
        bound, y_max = _poly_bound(fmt, B, dy.m, dy.k)
        two_one = 1 << (F_POLY + 1)
        out_fmt = _out_fmt_for(bound, f"poly-gelu with a={a!r}, b={b!r}")
        consts = dict(_base_consts(fmt, out_fmt), GL=GL, GR=GR, B=B, S2=S2, mA=dy.m, kA=dy.k,
                      TWO_ONE=two_one)
        info = {"a": a, "b": b, "fit": source, "G": G, "Sw": Sw, "y_max": y_max,
                "L_at_0": 1.0 - y_max / 2.0 ** F_POLY}
        return KernelPlan(self.name, consts, fmt, out_fmt, S / 2.0 ** (F_POLY + 1), info, S,
                          {"a": a, "b": b})


    @staticmethod
    def _check(c, fmt):
        """K3.1.2: one of GL, GR zero and |q| << GL inside int64, |q| >> GR not all zero (B, mA,
        kA, S2 and 2^(F+1) are checked by their registers); returns the output bound."""
        gl, gr = c["GL"], c["GR"]
        mag = max(-fmt.lo, fmt.hi)
        c.require(min(gl, gr) == 0 and mag.bit_length() + gl <= 62 and mag >> gr > 0,
                  f"GL = {gl}, GR = {gr} do not fit a {fmt.bits}-bit input")
        return _poly_bound(fmt, c["B"], c["mA"], c["kA"])[0]

    def datapath_widths(self, plan):
        """K3.1.2 "Registers": y (P4) unsigned in [0, y_max]; E (P5) signed in
        [min(0, 2^(F+1) - y_max), max(2^(F+1), y_max)]; out (P6) the output format."""
        c = plan.consts
        y_max = _poly_bound(plan.in_fmt, c["B"], c["mA"], c["kA"])[1]
        two_one = 1 << (F_POLY + 1)
        e_lo, e_hi = min(0, two_one - y_max), max(two_one, y_max)
        e_bits = max(e_hi.bit_length(), (-e_lo - 1).bit_length()) + 1
        return {"y": max(y_max.bit_length(), 1), "E": e_bits, "out": plan.out_fmt.bits}

    def reference(self, inputs, plan):
        """Spec K3.1.3, steps P1-P6."""
        c = plan.consts
        q = _ref_input(inputs[0], c)
        w = (np.abs(q) << c["GL"]) >> c["GR"]            # P1 |u| on the Sw grid (floor)
        d = c["B"] - np.minimum(w, c["B"])               # P2 d = max(0, B - w), Sw units
        d2s = (d * d) >> c["S2"]                         # P3 d^2 / 2^S2 (floor)
        y = (d2s * d2s * c["mA"]) >> c["kA"]             # P4 y ~ |a| (d Sw)^4 2^F (floor)
        E = np.where(q > 0, c["TWO_ONE"] - y, y)         # P5 E = 2^F (1 + L)
        return _ref_output(q * E, c)                      # P6 out = q E

    def arithmetic(self, inputs, plan):
        c = plan.consts
        return _run_elementwise(_poly_fast, inputs[0], c, c["GL"], c["GR"], c["B"], c["S2"], c["mA"],
                                c["kA"], c["TWO_ONE"])

    def cost(self, shape, plan=None):
        row_length(shape)
        # |q| (cmp + add), shift, min (cmp), sub, d*d, shift, d2s^2, *mA, shift, sign select
        # (cmp), 2^(F+1) - y (add), q*E (mul) (K3.1.5)
        return {"mul": 4, "shift": 3, "add": 3, "div": 0, "cmp": 3}

    @staticmethod
    def bound_at(plan, x):
        """Pointwise bound of spec K3.1.4: |out*out_scale - GELU(x)| <= this, x = q*in_scale."""
        a, b = plan.info["a"], plan.info["b"]
        Sw = plan.info["Sw"]
        c = plan.consts
        x = np.asarray(x, dtype=np.float64)
        delta = Sw * (0.5 + (1.0 if c["GR"] > 0 else 0.0)) * (1 + 1e-9)
        v = np.maximum(0.0, -b - np.abs(x) / SQRT2) + delta
        A = -a
        e_int = (2.0 ** -F_POLY + 2.0 ** -MA_BITS * A * v ** 4
                 + 32.0 * A * Sw ** 2 * v ** 2 + 4.0 * A * v ** 3 * delta)
        e_int = np.where(np.abs(x) / SQRT2 >= -b + delta, 0.0, e_int)    # w >= B: d = 0, exact
        return np.abs(poly_gelu_float(x, a, b) - gelu_exact(x)) + np.abs(x) / 2.0 * e_int + 1e-12


def _poly_bound(fmt, B, mA, kA):
    """K3.1.3: the largest |output| (and y_max) for these constants; B <= 2^NB and mA < 2^14 keep
    d^4 * mA below 2^62."""
    d4_max = ((B * B) >> S2) ** 2
    assert d4_max * mA < INT64_LIMIT, "K3.1.3: B <= 2^NB bounds the product below 2^62"
    y_max = (d4_max * mA) >> kA
    two_one = 1 << (F_POLY + 1)
    return max(fmt.hi * two_one, -fmt.lo * y_max, fmt.hi * max(y_max - two_one, 0)), y_max


@numba.njit(cache=True, nogil=True)
def _poly_fast(q, lo, hi, GL, GR, B, S2_, mA, kA, two_one, out):
    bad = 0
    for i in range(q.size):
        x = np.int64(q[i])
        if x < lo or x > hi:
            bad += 1
        w = ((x if x >= 0 else -x) << GL) >> GR
        d = B - (w if w < B else B)
        d2s = (d * d) >> S2_
        y = (d2s * d2s * mA) >> kA
        out[i] = x * (two_one - y) if x > 0 else x * y
    return bad


# =====================================================================================================
# K3.2 ibert-gelu
# =====================================================================================================

IBERT_A = -0.2888
IBERT_B = -1.769
IBERT_K = 1.4142          # I-BERT's sqrt(2) constant, kept verbatim
IBERT_ONE_BITS = 14       # auto n keeps |one| at 14 bits (our decision; I-BERT fixes n = 14, K3.2.1)
IBERT_ONE_MIN = 16        # fewer erf levels than this: the function is lost


class IbertGelu(_GeluKernel):
    name = "ibert-gelu"
    spec_section = "K3.2"
    title = "I-BERT i-GELU, 2nd-order erf (a=-0.2888, b=-1.769)"

    const_registers = {"b_int": ConstFormat.holding(-((1 << 31) - 1), -1),    # K3.2.1 "Registers"
                       "c_int": ConstFormat.holding(-((1 << 62) - 1), -1),
                       "n": ConstFormat.holding(0, 62),
                       "one": ConstFormat.holding(-((1 << 31) - 1), -IBERT_ONE_MIN)}

    def plan(self, in_scale, in_fmt, sample=None, n=None):
        """K3.2.1 (I-BERT's constants; no fit: `sample` is not used)."""
        S = arith.check_scale("in_scale", in_scale)
        fmt = _check_in_fmt(in_fmt)
        S1 = S / IBERT_K
        b_int, c_int = _plan_consts("ibert-gelu", in_scale, lambda: (
            math.floor(IBERT_B / S1), math.floor((1.0 / IBERT_A) / S1 ** 2)))
        if b_int * b_int + abs(c_int) >= INT64_LIMIT:
            raise ArithSpecError(f"ibert-gelu: in_scale={in_scale!r} is too fine: b_int^2 = "
                                 f"{b_int * b_int} leaves int64 (spec K3.2.1)")
        if n is None:
            n = max(0, abs(c_int).bit_length() - IBERT_ONE_BITS)
        n = arith.check_bits("ibert-gelu n", n, 0, 62)
        S_erf = IBERT_A * S1 ** 2 * 2.0 ** n               # negative (a < 0)
        one = _plan_consts("ibert-gelu", in_scale, lambda: math.floor(1.0 / S_erf))
        if abs(one) < IBERT_ONE_MIN:
            raise ArithSpecError(f"ibert-gelu: in_scale={in_scale!r} with n={n} leaves 1.0 = {one} "
                                 f"(fewer than {IBERT_ONE_MIN} erf levels): the function is lost "
                                 f"(spec K3.2.1)")
        bound = _ibert_bound(fmt, b_int, c_int, n, one)
        out_fmt = _out_fmt_for(bound, f"ibert-gelu at in_scale={in_scale!r}, n={n}")
        consts = dict(_base_consts(fmt, out_fmt), b_int=b_int, c_int=c_int, n=n, one=one)
        info = {"a": IBERT_A, "b": IBERT_B, "n": n, "S1": S1, "S_erf": S_erf}
        return KernelPlan(self.name, consts, fmt, out_fmt, -S * S_erf / 2.0, info, S)


    @staticmethod
    def _check(c, fmt):
        """K3.2.1: b_int^2 + |c_int| below 2^62 (the signs and ranges of b_int, c_int, n and one
        are their registers); returns the output bound."""
        b_int, c_int = c["b_int"], c["c_int"]
        c.require(b_int * b_int + abs(c_int) < INT64_LIMIT, "b_int^2 + |c_int| leaves int64")
        return _ibert_bound(fmt, b_int, c_int, c["n"], c["one"])

    def reference(self, inputs, plan):
        """Spec K3.2.2, steps I1-I5 (I-BERT's algorithm; the final negation is ours)."""
        c = plan.consts
        q = _ref_input(inputs[0], c)
        t = np.minimum(np.abs(q), -c["b_int"])                         # I1
        y = np.sign(q) * ((t + c["b_int"]) ** 2 + c["c_int"])          # I2 scale a S1^2 (< 0)
        y = y >> c["n"]                                                # I3 floor, as I-BERT
        return _ref_output(-(q * (y + c["one"])), c)                   # I4-I5

    def arithmetic(self, inputs, plan):
        c = plan.consts
        return _run_elementwise(_ibert_fast, inputs[0], c, c["b_int"], c["c_int"], c["n"], c["one"])

    def cost(self, shape, plan=None):
        row_length(shape)
        # |q| (cmp + add), min (cmp), +b_int, square, +c_int, sign (cmp + add), >>n, +one, q*(.),
        # negate (K3.2.4)
        return {"mul": 2, "shift": 1, "add": 6, "div": 0, "cmp": 3}

    @staticmethod
    def bound_at(plan, x):
        """Pointwise bound of spec K3.2.3 at the real inputs x."""
        S1, n = plan.info["S1"], plan.info["n"]
        A, bb = -IBERT_A, -IBERT_B
        x = np.asarray(x, dtype=np.float64)
        u = np.abs(x) / SQRT2
        delta = S1 + u * abs(SQRT2 / IBERT_K - 1.0)
        p = np.maximum(0.0, bb - u) + delta
        e_int = A * ((2.0 * p + delta) * delta + S1 ** 2 * (1.0 + 2.0 * 2.0 ** n))
        f = ibert_gelu_float(x)
        return np.abs(f - gelu_exact(x)) + np.abs(x) / 2.0 * e_int + 1e-12


def _ibert_bound(fmt, b_int, c_int, n, one):
    """K3.2.1: the largest |output|, |q| (|(t + b_int)^2 + c_int| >> n + 1 + |one|)."""
    y_abs = max(abs(c_int), abs(b_int * b_int + c_int))
    return max(-fmt.lo, fmt.hi) * ((y_abs >> n) + 1 + abs(one))


def ibert_gelu_float(x):
    """I-BERT's float i-GELU (a = -0.2888, b = -1.769, square)."""
    x = np.asarray(x, dtype=np.float64)
    u = x / SQRT2
    L = np.sign(u) * (IBERT_A * (np.minimum(np.abs(u), -IBERT_B) + IBERT_B) ** 2 + 1.0)
    return 0.5 * x * (1.0 + L)


@numba.njit(cache=True, nogil=True)
def _ibert_fast(q, lo, hi, b_int, c_int, n, one, out):
    bad = 0
    for i in range(q.size):
        x = np.int64(q[i])
        if x < lo or x > hi:
            bad += 1
        ax = x if x >= 0 else -x
        t = ax if ax < -b_int else -b_int
        p = t + b_int
        y = p * p + c_int
        if x < 0:
            y = -y
        elif x == 0:
            y = 0
        out[i] = -(x * ((y >> n) + one))
    return bad


# =====================================================================================================
# K3.3 ivit-shiftgelu
# =====================================================================================================

IVIT_ALPHA = 1.702        # sigmoid(1.702 x) ~ Phi(x)
IVIT_N_MAX = 23           # I-ViT's n for GELU
IVIT_N_MIN = 8            # below this the exponential clips above the sigmoid's 2^-8 resolution
SIG_BITS = 8              # sigmoid output: unsigned [0, 127] at scale 2^-7, as in I-ViT
SAT = (1 << 31) - 1       # I-ViT's clamp of the sum and its reciprocal numerator
SIG_SHIFT = 31 - SIG_BITS + 1
CHORD_MAX = 1.0616        # >= max of (1 - r/2) 2^r on [0, 1) = 1.06148: the chord's excess (K3.3.4)


def _exp_shift_ref(v, x0, n):
    """K3.3.1 E1-E7: I-ViT's shift exponential of integers v (any sign), floor semantics,
    result saturated at SAT (E7, ours: exact under I-ViT's sum clamp, K3.3.2)."""
    v = v + (v >> 1) - (v >> 4)                     # E1 v * (1 + 1/2 - 1/16)
    v = np.maximum(v, n * x0)                       # E2 clip at 2^-n
    z = arith.floor_div(v, x0)                      # E3 floor; z <= n
    r = v - z * x0                                  # E4 r in (x0, 0]
    f2 = r - 2 * x0                                 # E5 2 f = r - 2 x0 in [1 - x0, -2 x0]
    s = n - z                                       # >= 0
    big = s > 32                                    # f2 << (s - 1) >= 2^32 > SAT
    sc = np.where(big, 1, s)
    e = np.where(sc == 0, f2 >> 1, f2 << np.maximum(sc - 1, 0))   # E6 floor(f 2^(n - z))
    return np.where(big, SAT, np.minimum(e, SAT))                 # E7


class IvitShiftGelu(_GeluKernel):
    name = "ivit-shiftgelu"
    spec_section = "K3.3"
    title = "I-ViT ShiftGELU x*sigmoid(1.702x), shift exponential, 8-bit sigmoid"

    const_registers = {"x0": ConstFormat.holding(-((1 << 31) - 1), -1),      # K3.3 "Registers"
                       "n": ConstFormat.holding(1, 30), "rowmax": ConstFormat.holding(0, 1)}

    def plan(self, in_scale, in_fmt, sample=None, n=None, rowmax=True):
        """rowmax=True: I-ViT's max over the last axis (row-wise kernel). rowmax=False: our
        elementwise variant with m = max(q, 0) per element (K3.3.3). No fit: `sample` is not used."""
        S = arith.check_scale("in_scale", in_scale)
        fmt = _check_in_fmt(in_fmt)
        Sp = IVIT_ALPHA * S
        x0 = _plan_consts("ivit-shiftgelu", in_scale, lambda: math.floor(-1.0 / Sp))
        if not x0 < 0 or abs(x0) >= (1 << 31):
            raise ArithSpecError(f"ivit-shiftgelu: in_scale={in_scale!r} gives x0={x0}: out of range")
        X = -x0
        if n is None:      # K3.3.2: I-ViT's 23 where valid; otherwise, and for our variant, ours
            if rowmax:
                n = IVIT_N_MAX if X << IVIT_N_MAX <= SAT else 30 - X.bit_length()
            else:
                n = max(IVIT_N_MIN, (31 - X.bit_length()) // 2)
            if n < IVIT_N_MIN:
                raise ArithSpecError(f"ivit-shiftgelu: in_scale={in_scale!r} is too fine (x0={x0}): "
                                     f"n would be {n} < {IVIT_N_MIN} (spec K3.3.2)")
        n = arith.check_bits("ivit-shiftgelu n", n, 1, 30)
        if X << n > SAT:
            raise ArithSpecError(f"ivit-shiftgelu: n={n} with in_scale={in_scale!r} (x0={x0}) lets "
                                 f"exp reach {X << n} > 2^31-1: the 8-bit sigmoid would overflow "
                                 f"(spec K3.3.2)")
        mag = max(-fmt.lo, fmt.hi)
        out_fmt = _out_fmt_for(mag * ((1 << (SIG_BITS - 1)) - 1), "ivit-shiftgelu")
        consts = dict(_base_consts(fmt, out_fmt), x0=x0, n=n, rowmax=int(bool(rowmax)))
        info = {"n": n, "x0": x0, "rowmax": bool(rowmax), "clamp_free_for_m_ge_0": 2 * (X << n) <= SAT}
        return KernelPlan(self.name, consts, fmt, out_fmt, S / 2.0 ** (SIG_BITS - 1), info, S)


    @staticmethod
    def _check(c, fmt):
        """K3.3.2: |x0| 2^n <= 2^31 - 1 (x0 < 0, n in [1, 30] and rowmax are registers); the
        output bound is |q| * 127."""
        x0, n = c["x0"], c["n"]
        c.require(-x0 << n <= SAT, f"|x0| * 2^n = {-x0 << n} exceeds 2^31 - 1")
        return max(-fmt.lo, fmt.hi) * ((1 << (SIG_BITS - 1)) - 1)

    def reference(self, inputs, plan):
        """Spec K3.3.2, steps S1-S7 (S1 of K3.3.3 for the elementwise variant)."""
        c = plan.consts
        q = _ref_input(inputs[0], c)
        if c["rowmax"]:
            m = np.max(q, axis=-1, keepdims=True) if q.ndim else q      # S1 I-ViT: row max
        else:
            m = np.maximum(q, 0)                                        # S1' ours, K3.3.3
        e1 = _exp_shift_ref(q - m, c["x0"], c["n"])                     # S2 ~ e^{1.702 (x - m)}
        e2 = _exp_shift_ref(-m, c["x0"], c["n"])                        # S3 ~ e^{-1.702 m}
        total = np.minimum(e1 + e2, SAT)                                # S4 I-ViT clamp
        factor = arith.floor_div(SAT, total)                            # S5 floor
        sig = (e1 * factor) >> SIG_SHIFT                                # S6 [0, 127] at 2^-7
        return _ref_output(q * sig, c)                                  # S7

    def arithmetic(self, inputs, plan):
        c = plan.consts
        q = _fast_input(inputs[0], c)
        shape = q.shape
        qmin, qmax = int(q.min()), int(q.max())     # checked first: the tables index by value
        if qmin < c["in_lo"] or qmax > c["in_hi"]:
            _raise_range(int(np.sum((q < c["in_lo"]) | (q > c["in_hi"]))), c)
        out = np.empty(shape, dtype=_out_dtype(c))
        if c["rowmax"]:     # rows over the last axis, as I-ViT; a 0-d input is a row of one
            cols = shape[-1] if q.ndim else 1
            _ivit_rowmax(np.ascontiguousarray(q).reshape(-1, cols), c["x0"], c["n"], qmin, qmax,
                         out.reshape(-1, cols))
        else:
            _ivit_elementwise(np.ascontiguousarray(q).reshape(-1), c["x0"], c["n"], qmin, qmax,
                              out.reshape(-1))
        return out

    def elementwise(self, plan):
        return not plan.consts["rowmax"]

    def cost(self, shape, plan=None):
        """Per element (K3.3.5). With the row max (I-ViT, the default without a plan) the max and
        e2 are once per row of shape[-1] elements; the elementwise variant pays them per element."""
        row_len = row_length(shape)
        rowmax = plan.info["rowmax"] if plan is not None else True
        per_exp = {"mul": 1, "shift": 3, "add": 5, "div": 1, "cmp": 3}   # E1-E7 (K3.3.5)
        k = 1.0 / max(int(row_len), 1) if rowmax else 1.0
        c = {kind: per_exp[kind] * (1 + k) for kind in per_exp}          # e1 + e2
        c["cmp"] += 2          # row max (or max(q, 0)), sum clamp
        c["add"] += 2          # q - m, e1 + e2
        c["div"] += 1          # factor = SAT // sum (per element: the sum depends on e1)
        c["mul"] += 2          # e1 * factor, q * sig
        c["shift"] += 1        # >> 24
        return c

    @staticmethod
    def bound_at(plan, x, m=None):
        """Pointwise bound of spec K3.3.4 for real elements x whose row max is m >= max(x, 0);
        m=None: the plan's own rule (the row max over the last axis, or max(x, 0) elementwise)."""
        x = np.asarray(x, dtype=np.float64)
        if m is None and plan.info["rowmax"] and x.ndim:
            m = np.max(x, axis=-1, keepdims=True)
        return _ivit_bound(plan, x, m)


def ivit_gelu_float(x):
    """I-ViT's float target x * sigmoid(1.702 x)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        return x / (1.0 + np.exp(-IVIT_ALPHA * x))


def _ivit_bound(plan, x, m):
    """K3.3.4. Valid when the sum clamp cannot trigger (plan.info['clamp_free_for_m_ge_0']) and
    m >= max(x, 0); returns inf elsewhere."""
    S = plan.out_scale * 2.0 ** (SIG_BITS - 1)
    n, X = plan.info["n"], -plan.info["x0"]
    mm = np.maximum(x, 0.0) if m is None else np.asarray(m, dtype=np.float64)
    X2n = float(X) * 2.0 ** n

    def e_range(V):
        # |v'| in [1.4375 V - 15/16, 1.4375 V + 1/2] (E1, v <= 0), P = |v'| / X, clipped at n (E2);
        # e = floor(X 2^n 2^-P c), c = (1 - r/2) 2^r in [1, 1.0616] (E5-E6)
        P_lo = np.maximum(1.4375 * V - 15.0 / 16.0, 0.0) / X
        P_hi = (1.4375 * V + 0.5) / X
        return (np.maximum(X2n * 2.0 ** -np.minimum(P_hi, n) - 1.0, 0.0),
                X2n * CHORD_MAX * 2.0 ** -np.minimum(P_lo, n))

    e1_lo, e1_hi = e_range(np.round(np.abs(x - mm) / S))
    e2_lo, e2_hi = e_range(np.round(np.abs(mm) / S))
    sig_hi = e1_hi / (e1_hi + e2_lo)
    sig_lo = e1_lo / (e1_lo + e2_hi) - 2.0 ** -(SIG_BITS - 1) - e1_hi / 2.0 ** 31 - 2.0 ** -31
    with np.errstate(over="ignore"):
        sig_true = 1.0 / (1.0 + np.exp(-IVIT_ALPHA * x))
    dsig = np.maximum(sig_hi - sig_true, sig_true - sig_lo)
    ok = (mm >= np.maximum(x, 0.0)) & bool(plan.info["clamp_free_for_m_ge_0"])
    bound = np.abs(ivit_gelu_float(x) - gelu_exact(x)) + np.abs(x) * dsig + 1e-12
    return np.where(ok, bound, np.inf)


@numba.njit(cache=True, inline="always")
def _exp_shift1(v, x0, n):
    v = v + (v >> 1) - (v >> 4)
    lim = n * x0
    if v < lim:
        v = lim
    z = arith.floor_div1(v, x0)
    r = v - z * x0
    f2 = r - 2 * x0
    s = n - z
    if s > 32:
        return np.int64(SAT)
    e = (f2 >> 1) if s == 0 else (f2 << (s - 1))
    return e if e < SAT else np.int64(SAT)


@numba.njit(cache=True, inline="always")
def _ivit_finish(v, e1, e2):
    """S4-S7 for one element."""
    total = e1 + e2
    if total > SAT:
        total = SAT
    return v * ((e1 * arith.floor_div1(np.int64(SAT), total)) >> SIG_SHIFT)


@numba.njit(cache=True, nogil=True)
def _ivit_elementwise(q, x0, n, mn, mx, out):
    """K3.3.3 over a flat array whose values lie in [mn, mx]. The result depends on v alone: when
    there are at least twice as many elements as distinct values, tabulate and gather."""
    tabulate = 2 * (mx - mn + 1) <= q.size
    lo = mn if tabulate else mx + 1
    tab = np.empty(mx - lo + 1, dtype=np.int64)
    for k in range(tab.size):
        v = lo + k
        m = v if v > 0 else np.int64(0)
        tab[k] = _ivit_finish(v, _exp_shift1(v - m, x0, n), _exp_shift1(-m, x0, n))
    for i in range(q.size):
        v = np.int64(q[i])
        if tabulate:
            out[i] = tab[v - mn]
        else:
            m = v if v > 0 else np.int64(0)
            out[i] = _ivit_finish(v, _exp_shift1(v - m, x0, n), _exp_shift1(-m, x0, n))


@numba.njit(cache=True, nogil=True)
def _ivit_rowmax(q2, x0, n, mn, mx, out):
    """K3.3.2 over rows of values in [mn, mx]. e1 depends on D = m - v alone, so with enough
    elements it is tabulated once over D in [0, mx - mn]; a row spanning few values also
    tabulates its outputs. Same scalar steps either way, so bit-identical."""
    dmax = mx - mn
    tabulate = 2 * (dmax + 1) <= q2.size
    e1_tab = np.empty(dmax + 1 if tabulate else 0, dtype=np.int64)
    for d in range(e1_tab.size):
        e1_tab[d] = _exp_shift1(-d, x0, n)
    for i in range(q2.shape[0]):
        m = np.int64(q2[i, 0])
        rmin = m
        for j in range(q2.shape[1]):
            v = np.int64(q2[i, j])
            if v > m:
                m = v
            if v < rmin:
                rmin = v
        e2 = _exp_shift1(-m, x0, n)
        span = m - rmin + 1
        if 2 * span <= q2.shape[1]:
            row_tab = np.empty(span, dtype=np.int64)
            for k in range(span):
                v = rmin + k
                e1 = e1_tab[m - v] if tabulate else _exp_shift1(v - m, x0, n)
                row_tab[k] = _ivit_finish(v, e1, e2)
            for j in range(q2.shape[1]):
                out[i, j] = row_tab[np.int64(q2[i, j]) - rmin]
        else:
            for j in range(q2.shape[1]):
                v = np.int64(q2[i, j])
                e1 = e1_tab[m - v] if tabulate else _exp_shift1(v - m, x0, n)
                out[i, j] = _ivit_finish(v, e1, e2)


POLY_GELU = PolyGelu()
IBERT_GELU = IbertGelu()
IVIT_SHIFTGELU = IvitShiftGelu()
CANDIDATES = {k.name: k for k in (POLY_GELU, IBERT_GELU, IVIT_SHIFTGELU)}
