"""Integer LayerNorm over the last axis: two interchangeable candidates (spec K4).

K4.0 common I/O: signed integers of `in_fmt` (2..24 bits) at real scale `in_scale`, rows of length
C = len(gamma) in 1..4096, any leading shape. Each candidate computes a normalised integer n per
element (n ~ z * 2^Fn / lam, z = (x - mean) / sqrt(var + eps)); the common affine stage applies
gamma and beta in integers and gives one per-tensor output scale:
    out = round_shift(n * g[c], h) + B[c]                       (K4.0.3)
  isqrt-layernorm  K4.2  ours: exact C*q - sum(q), exact variance sum, eps inside, floor isqrt (K4.1)
  ivit-layernorm   K4.3  I-ViT I-LayerNorm: rounded mean, 10 fixed Newton steps from 2^16

Run-time code (reference / fast) uses integers only; plan() and error_bound() are offline.
fast() is serial numba: on the loaded 2-core test machine prange was 4x slower than one thread, and
one thread is already ~3x faster than float NumPy LayerNorm at (197, 384).
"""
from fractions import Fraction
import math

import numba
import numpy as np

from .. import arith, floatfn
from ..arith import ArithSpecError, ConstFormat, IntFormat, IntOverflowError
from .base import OP_KINDS, Consts, Kernel, KernelPlan, row_length

IN_BITS_RANGE = (2, 24)
C_MAX = 4096
GAMMA_BITS_RANGE = (2, 24)
GAMMA_BITS_DEFAULT = 16
OUT_BITS_RANGE = (8, 32)
NORM_BITS_RANGE = (4, 24)       # F of K4.2; F <= 24 keeps every shift K - F - t - u >= 2
H_MAX = 62                      # largest output shift h (A3: round_shift needs 2^(h-1) in int64)

# K4.2 constants
R_LIMIT = 1 << 62               # R = (D << 2u) + E must stay below 2^62 (normalisation to [2^60, 2^62))
RECIP_BITS = 56                 # K: f = floor(2^K / r), r in [2^30, 2^31) -> f in (2^25, 2^26]
U_MAX = 30                      # eps resolution shift u in [0, 30]

# K4.3 constants (I-ViT, verbatim)
IVIT_STD0 = 1 << 16
IVIT_ITERS = 10
IVIT_ONE = (1 << 31) - 1
IVIT_NORM_BITS = 30             # n at real scale sqrt(C) * 2^-30 (in units of the normalised value)


# --- K4.1 exact floor square root --------------------------------------------------------------------

def bit_length_ref(n):
    """Number of significant bits of each n >= 0 (0 for n = 0): binary search, integer only."""
    v = np.array(n, dtype=np.int64)
    L = np.zeros_like(v)
    for k in (32, 16, 8, 4, 2, 1):
        big = (v >> k) > 0
        L = L + np.where(big, k, 0)
        v = np.where(big, v >> k, v)
    return L + (v > 0)


def _isqrt_arg(n):
    try:
        a = np.array(n, dtype=np.int64)
    except OverflowError:
        a = None
    if a is None or np.any(a < 0):
        raise ArithSpecError("isqrt: argument must be an integer in [0, 2^63 - 1] (spec K4.1)")
    return a


def isqrt_ref(n):
    """floor(sqrt(n)) for int64 n in [0, 2^63 - 1], elementwise (spec K4.1, I-BERT's I-SQRT):
    x0 = 2^ceil(bitlen(n)/2); x <- floor((x + floor(n/x)) / 2) while that decreases x."""
    n = _isqrt_arg(n)
    x = np.left_shift(np.int64(1), (bit_length_ref(n) + 1) >> 1)   # > sqrt(n); 1 for n = 0
    active = n > 0
    while active.any():
        y = (x + n // x) >> 1
        active &= y < x
        x = np.where(active, y, x)
    return np.where(n > 0, x, 0)


@numba.njit(cache=True, nogil=True)
def _bit_length1(n):
    L = 0
    for k in (32, 16, 8, 4, 2, 1):
        if (n >> k) > 0:
            L += k
            n >>= k
    return L + (1 if n > 0 else 0)


@numba.njit(cache=True, nogil=True)
def _isqrt1(n):
    if n <= 0:
        return np.int64(0)
    x = np.int64(1) << ((_bit_length1(n) + 1) >> 1)
    while True:
        y = (x + n // x) >> 1
        if y >= x:
            return x
        x = y


@numba.njit(cache=True, nogil=True)
def _isqrt_many(n, out):
    for i in range(n.shape[0]):
        out[i] = _isqrt1(n[i])


def isqrt(n):
    """The numba path of isqrt_ref (same algorithm, same results)."""
    a = _isqrt_arg(n)
    out = np.empty(a.size, dtype=np.int64)
    _isqrt_many(a.ravel(), out)
    return out.reshape(a.shape) if a.ndim else out[0]


def isqrt_divisions(n):
    """Number of divisions isqrt performs on Python int n (the last one is the stopping test)."""
    if n == 0:
        return 0
    x, d = 1 << ((n.bit_length() + 1) // 2), 0
    while True:
        d += 1
        y = (x + n // x) >> 1
        if y >= x:
            return d
        x = y


def ivit_std(V):
    """I-ViT's fixed Newton (K4.3): std = 2^16, then 10 times std = floor((std + floor(V/std)) / 2)."""
    std = np.full(np.shape(V), IVIT_STD0, dtype=np.int64)
    for _ in range(IVIT_ITERS):
        std = (std + np.asarray(V, dtype=np.int64) // std) >> 1
    return std


# --- K4.0 common: parameter checks, input rows, the integer gamma/beta stage ---------------------------

def _check_common(in_scale, in_fmt, gamma, beta, eps, gamma_bits, out_bits):
    """K4.0.1 parameter checks shared by both candidates."""
    s = arith.check_scale("layernorm in_scale", in_scale)
    if isinstance(in_fmt, (int, np.integer)) and not isinstance(in_fmt, bool):
        in_fmt = IntFormat(int(in_fmt))
    if not isinstance(in_fmt, IntFormat) or not in_fmt.signed:
        raise ArithSpecError(f"layernorm in_fmt must be a signed IntFormat, got {in_fmt!r}")
    arith.check_bits("layernorm in_fmt width", in_fmt.bits, *IN_BITS_RANGE)
    gamma = _check_vector("gamma", gamma)
    beta = _check_vector("beta", beta)
    if gamma.shape != beta.shape:
        raise ArithSpecError(f"layernorm: gamma has {gamma.size} channels, beta {beta.size}")
    e = arith.check_nonnegative("layernorm eps", eps)
    gamma_bits = arith.check_bits("layernorm gamma_bits", gamma_bits, *GAMMA_BITS_RANGE)
    out_bits = arith.check_bits("layernorm out_bits", out_bits, *OUT_BITS_RANGE)
    return s, in_fmt, gamma, beta, e, gamma_bits, out_bits


def _check_vector(what, v):
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise ArithSpecError(f"layernorm {what} must be a 1-D float array, got {v!r}") from None
    if a.ndim != 1 or not 1 <= a.size <= C_MAX:
        raise ArithSpecError(f"layernorm {what} must be 1-D with 1..{C_MAX} channels, got shape {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        raise ArithSpecError(f"layernorm {what} has {int(bad.sum())} NaN/Inf value(s), the first at "
                             f"channel {int(np.argmax(bad))}")
    return a


def _affine_plan(gamma, beta, lam, F, n_max, gamma_bits, out_bits):
    """K4.0.3: integer gamma g (symmetric, narrow, per-tensor scale S_g, gamma*lam quantized half to
    even), output shift h (smallest that fits out_bits for every n with |n| <= n_max) and integer
    beta B at the output scale S_out = S_g * 2^(h - F). Offline."""
    gfmt = IntFormat(gamma_bits, narrow=True)
    gl = gamma * lam
    amax = float(np.max(np.abs(gl)))
    if amax > 0:
        S_g = amax / gfmt.hi
    else:     # all-zero gamma: the output is beta alone; give it beta's resolution (any scale is exact for g)
        bmax = float(np.max(np.abs(beta)))
        S_g = bmax / gfmt.hi if bmax > 0 else 1.0
    g = arith.quantize(gl, S_g, gfmt).astype(np.int64)
    g_max = int(np.max(np.abs(g)))
    out_hi = (1 << (out_bits - 1)) - 1
    prod_max = n_max * g_max                    # |n * g| <= 2^31 * 2^23: int64 (K4.0.3)
    b_ratios = [float(b).as_integer_ratio() for b in beta]
    s_num, s_den = float(S_g).as_integer_ratio()
    for h in range(max(0, prod_max.bit_length() - out_bits), H_MAX + 1):
        S_out = Fraction(S_g) * Fraction(2) ** (h - F)
        # B = round_half_up(beta / S_out) in exact integers: beta = p / q, S_out = (s_num / s_den) 2^(h-F)
        up, down = max(F - h, 0), max(h - F, 0)
        B = [arith.round_half_up_ratio((p * s_den) << up, (q * s_num) << down) for p, q in b_ratios]
        out_max = _affine_bound(prod_max, h, max(abs(x) for x in B))
        if out_max <= out_hi:
            return g, np.array(B, dtype=np.int64), h, S_g, float(S_out), out_max
    raise ArithSpecError(f"layernorm: beta (max |beta| = {float(np.max(np.abs(beta)))!r}) is too large "
                         f"relative to gamma scale {S_g!r} to fit a {out_bits}-bit output (K4.0.3)")


def _affine_bound(prod_max, h, b_max):
    """K4.0.3: the largest |round_shift(n g, h) + B| when |n g| <= prod_max and |B| <= b_max."""
    shifted = prod_max if h == 0 else (prod_max + (1 << (h - 1))) >> h
    return shifted + b_max


def _rows(q, consts):
    """K4.0.2: the input as a C-contiguous (rows, C) integer array after the shape checks."""
    q = np.asarray(q)
    if q.ndim == 0:
        raise ArithSpecError("layernorm needs at least one axis (it normalises the last one)")
    arith.check_nonempty("layernorm input", q)
    if q.dtype.kind not in "iu":
        raise ArithSpecError(f"layernorm input must be an integer array, got dtype {q.dtype}")
    if q.dtype == np.uint64:         # would wrap in int64 arithmetic: every valid value is < 2^23
        if int(q.max()) > arith.INT64_MAX:
            raise IntOverflowError(f"layernorm input: value {int(q.max())} outside int64")
        q = q.astype(np.int64)
    C = consts["C"]
    if q.shape[-1] != C:
        raise ArithSpecError(f"layernorm input's last axis has length {q.shape[-1]}, the plan has C = {C}")
    for name in ("g", "B"):             # one per channel: the fast loop would read past a short one
        if np.shape(consts[name]) != (C,):
            raise ArithSpecError(f"layernorm plan: {name} has shape {np.shape(consts[name])}, expected ({C},) "
                                 f"(one per channel)")
    return np.ascontiguousarray(q).reshape(-1, C)


def _check_input_ref(q2, consts):
    lo, hi = consts["in_lo"], consts["in_hi"]
    if q2.min() < lo or q2.max() > hi:
        _raise_bad_input(int(((q2 < lo) | (q2 > hi)).sum()), consts)


def _affine_ref(n, consts):
    """K4.0.3: out = round_shift(n * g, h) + B, per channel along the last axis."""
    out = arith.round_shift(n * consts["g"], consts["h"]) + consts["B"]
    arith.check_fits("layernorm output", out, IntFormat(consts["out_bits"]))    # proved; never raises
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _affine1(n, g, h, B):
    return arith.round_shift1(n * g, h) + B


def _finish(out2, q, consts):
    fmt = IntFormat(consts["out_bits"])
    return out2.reshape(np.shape(q)).astype(fmt.storage, copy=False)


def _raise_bad_input(bad, consts):
    if bad:
        raise IntOverflowError(f"layernorm input: {bad} value(s) outside [{consts['in_lo']}, "
                               f"{consts['in_hi']}] (spec K4.0.2, A4: never a wrap)")


# K4.2.5 / K4.3.5 operation counts: (step, per 'elem' or per 'row', {kind: count})
AFFINE_COST = [("n*g, round_shift(., h), + B", "elem", {"mul": 1, "add": 2, "shift": 1})]
ISQRT_LN_COST = [
    ("s += q~, Q += q~^2", "elem", {"mul": 1, "add": 2}),
    ("y' = C*q~ - s", "elem", {"mul": 1, "add": 1}),
    ("n = (y' * f) >> sh", "elem", {"mul": 1, "shift": 1}),
    ("D = C*Q - s^2, D == 0", "row", {"mul": 2, "add": 1, "cmp": 1}),
    ("R = (D << 2u) + E", "row", {"shift": 1, "add": 1}),
    ("L = bitlen(R) (6-step binary search)", "row", {"shift": 6, "cmp": 7, "add": 7}),
    ("t = (62 - L) >> 1, N = R << 2t", "row", {"add": 1, "shift": 2}),
    ("isqrt(N) from x0 = 2^31, 7 iterations (worst case)", "row", {"div": 7, "add": 7, "shift": 7, "cmp": 7}),
    ("f = 2^56 // r, sh = 56 - F - t - u", "row", {"div": 1, "add": 1}),
] + AFFINE_COST
IVIT_LN_COST = [
    ("s += q, y = q - mean, V += y^2", "elem", {"mul": 1, "add": 3}),
    ("n = (y * f) >> 1", "elem", {"mul": 1, "shift": 1}),
    ("mean = rhe(s / C)", "row", {"div": 1, "mul": 1, "add": 2, "shift": 1, "cmp": 3}),
    ("10 Newton steps", "row", {"div": 10, "add": 10, "shift": 10}),
    ("f = (2^31 - 1) // std", "row", {"div": 1}),
] + AFFINE_COST


def _cost(table, shape):
    row_len = row_length(shape)
    out = dict.fromkeys(OP_KINDS, 0.0)
    for _, per, ops in table:
        for k, v in ops.items():
            out[k] += v if per == "elem" else v / row_len
    return out


def _float_ln(x, eps):
    """The normalised value z = (x - mean) / sqrt(var + eps), float64."""
    return floatfn.layer_norm(np.asarray(x, dtype=np.float64), 1.0, 0.0, eps)


class _LayerNormKernel(Kernel):
    """The family's plan options: gamma, beta, eps (the float LayerNorm's parameters) and the
    candidate's knobs (gamma_bits, out_bits, norm_bits)."""
    family = "layernorm"

    def float_reference(self, x, plan=None):
        """float64 LayerNorm over the last axis with the plan's gamma, beta and eps."""
        fp = plan.float_params
        return floatfn.layer_norm(np.asarray(x, dtype=np.float64), fp["gamma"], fp["beta"], fp["eps"])

    @staticmethod
    def _affine_error(z, dz, gamma, plan):
        """K4.0.4: |out*S_out - (gamma*z + beta)| <= (|gamma| + S_gam/2)*dz + S_gam/2*|z| + S_out,
        where dz bounds |z_int - z| and S_gam = S_g / lam is gamma's real LSB."""
        s_gam = plan.info["gamma_scale"] / plan.info["lam"]
        return (np.abs(gamma) + s_gam / 2) * dz + s_gam / 2 * np.abs(z) + plan.out_scale

    const_registers = {}          # the candidate's own constants (K4.2.1), beside K4.0's

    def const_formats(self, plan):
        """K4.0: C, in_lo and in_hi (restating the input format), the integer gamma g (signed narrow
        gamma_bits, default 16) and beta B (signed out_bits) per channel, the shift h and out_bits;
        then the candidate's constants."""
        C = np.asarray(plan.consts.get("C", 0))
        per_channel = (int(C),) if C.ndim == 0 and C.dtype.kind in "iu" else None
        widest = 1 << (IN_BITS_RANGE[1] - 1)
        gamma = IntFormat(plan.info.get("gamma_bits", GAMMA_BITS_DEFAULT), narrow=True)
        out = IntFormat(plan.out_fmt.bits)
        return {"C": ConstFormat.holding(1, C_MAX),
                "in_lo": ConstFormat.holding(-widest, -1).exactly(plan.in_fmt.lo),
                "in_hi": ConstFormat.holding(1, widest - 1).exactly(plan.in_fmt.hi),
                "g": ConstFormat.of(gamma, per_channel), "B": ConstFormat.of(out, per_channel),
                "h": ConstFormat.holding(0, H_MAX),
                "out_bits": ConstFormat.holding(*OUT_BITS_RANGE).exactly(out.bits), **self.const_registers}

    def check_consts(self, plan):
        """K4.0: the registers (C, in_lo, in_hi restating the program's input, g and B of C
        channels, h, out_bits), then the candidate's preconditions (`_check`, which returns the
        bound on |n|) and the affine stage's output bound against the declared width."""
        c = Consts(self, plan)
        fmt, out_fmt = plan.in_fmt, IntFormat(c["out_bits"])
        c.require(fmt.signed and plan.out_fmt == out_fmt,
                  f"the program's tensors are {fmt.describe()} -> {plan.out_fmt.describe()}, the "
                  f"constants need a signed input and {out_fmt.describe()}")
        n_max = self._check(c, fmt, c["C"])
        bound = _affine_bound(n_max * int(np.max(np.abs(c["g"]))), c["h"], int(np.max(np.abs(c["B"]))))
        c.require(bound <= out_fmt.hi, f"outputs up to {bound} do not fit {out_fmt.describe()}")

    def _plan_out(self, consts, in_fmt, gamma, beta, lam, F, n_max, gamma_bits, out_bits, info):
        g, B, h, S_g, S_out, out_max = _affine_plan(gamma, beta, lam, F, n_max, gamma_bits, out_bits)
        consts.update({"g": g, "B": B, "h": h, "out_bits": out_bits})
        info.update({"gamma_scale": S_g, "lam": lam, "h": h, "n_max": n_max, "out_max": out_max,
                     "gamma_bits": gamma_bits})
        return KernelPlan(self.name, consts, in_fmt, IntFormat(out_bits), S_out, info, info["in_scale"],
                          {"gamma": gamma, "beta": beta, "eps": info["eps"]})


# --- K4.2 isqrt-layernorm (ours) -------------------------------------------------------------------------

def _choose_p_u_E(in_fmt, C, in_scale, eps):
    """K4.2.1: the smallest pre-shift p, then the largest eps resolution u, such that every variance
    intermediate fits int64 and R = (D << 2u) + E < 2^62 for every input row."""
    for p in range(0, in_fmt.bits - 1):
        lo, hi = in_fmt.lo >> p, in_fmt.hi >> p
        if C * C * max(lo * lo, hi * hi) > arith.INT64_MAX:       # C*sum(q~^2) and s^2
            continue
        D_max = (C * (hi - lo)) ** 2 // 4                        # C^2 * (largest population variance)
        E_exact = Fraction(C * C) * Fraction(eps) / (Fraction(in_scale) * 2 ** p) ** 2   # C^2 eps / S~^2
        for u in range(U_MAX, -1, -1):
            E = arith.round_half_up(E_exact * 4 ** u)
            if (D_max << (2 * u)) + E < R_LIMIT:
                return p, u, E, D_max
    raise ArithSpecError(f"layernorm: eps = {eps!r} at in_scale = {in_scale!r} (eps/in_scale^2 = "
                         f"{eps / in_scale ** 2:.3g}) does not fit the 62-bit variance register even "
                         f"with a {in_fmt.bits - 2}-bit pre-shift (K4.2.1)")


def isqrt_ln_normalised(D, u, E):
    """K4.2.2 steps 5-6 on int64 D >= 1: R = D * 2^(2u) + E, t = asr(62 - bitlen(R), 1) and
    N = R * 2^(2t) in [2^60, 2^62); returns (N, t)."""
    R = (np.asarray(D, dtype=np.int64) << (2 * u)) + E
    t = (62 - bit_length_ref(R)) >> 1
    return R << (2 * t), t


def _isqrt_ln_norm_ref(q2, consts):
    """K4.2.2 per row, in the spec's names. Returns n (rows, C) int64."""
    C, p, u, E, F = consts["C"], consts["p"], consts["u"], consts["E"], consts["F"]
    K = RECIP_BITS
    qt = q2.astype(np.int64) >> p                               # q~ = floor(q / 2^p)
    s = qt.sum(axis=-1, keepdims=True)
    D = C * (qt * qt).sum(axis=-1, keepdims=True) - s * s        # = C * sum (q~ - mean)^2, exact
    const = D == 0                                               # constant row: n = 0 (K4.2.2 step 4)
    N, t = isqrt_ln_normalised(np.where(const, 1, D), u, E)     # D = 1 keeps a constant row's math defined
    r = isqrt_ref(N)                                             # r in [2^30, 2^31)
    f = (1 << K) // r                                            # f in (2^25, 2^26]
    y = C * qt - s                                               # y' = C * (q~ - mean), exact
    n = (y * f) >> (K - F - t - u)
    return np.where(const, 0, n)


@numba.njit(cache=True, nogil=True)
def _isqrt_ln_row(q2, i, in_lo, in_hi, p, u, E, F, g, h, B, out):
    """K4.2.2 for row i; returns the number of inputs outside in_fmt."""
    C = q2.shape[1]
    s = np.int64(0)
    Q = np.int64(0)
    nbad = 0
    for j in range(C):
        v = np.int64(q2[i, j])
        if v < in_lo or v > in_hi:
            nbad += 1
        v >>= p
        s += v
        Q += v * v
    D = C * Q - s * s
    if D == 0:
        for j in range(C):
            out[i, j] = _affine1(np.int64(0), g[j], h, B[j])
        return nbad
    R = (D << (2 * u)) + E
    t = (62 - _bit_length1(R)) >> 1
    r = _isqrt1(R << (2 * t))
    f = (np.int64(1) << RECIP_BITS) // r
    sh = RECIP_BITS - F - t - u
    for j in range(C):
        y = C * (np.int64(q2[i, j]) >> p) - s
        out[i, j] = _affine1((y * f) >> sh, g[j], h, B[j])
    return nbad


@numba.njit(cache=True, nogil=True)
def _isqrt_ln_serial(q2, in_lo, in_hi, p, u, E, F, g, h, B, out):
    bad = 0
    for i in range(q2.shape[0]):
        bad += _isqrt_ln_row(q2, i, in_lo, in_hi, p, u, E, F, g, h, B, out)
    return bad


class IsqrtLayerNorm(_LayerNormKernel):
    name = "isqrt-layernorm"
    spec_section = "K4.2"
    title = "exact integer mean/variance, eps inside, floor isqrt, 2^-16 normalised value (ours)"
    const_registers = {"p": ConstFormat.holding(0, IN_BITS_RANGE[1] - 2), "u": ConstFormat.holding(0, U_MAX),
                       "E": ConstFormat.holding(0, R_LIMIT - 1), "F": ConstFormat.holding(*NORM_BITS_RANGE)}

    def plan(self, in_scale, in_fmt, gamma=None, beta=None, eps=1e-6, gamma_bits=16, norm_bits=16,
             out_bits=32):
        if gamma is None or beta is None:
            raise ArithSpecError("layernorm plan needs gamma and beta (float arrays of length C)")
        S, in_fmt, gamma, beta, eps, gamma_bits, out_bits = _check_common(
            in_scale, in_fmt, gamma, beta, eps, gamma_bits, out_bits)
        F = arith.check_bits("layernorm norm_bits", norm_bits, *NORM_BITS_RANGE)
        C = gamma.size
        p, u, E, D_max = _choose_p_u_E(in_fmt, C, S, eps)
        # |n| <= sqrt(C-1) * 2^F * (1 + 2^-29) + 1 (K4.2.3); +4 covers both slack terms for F <= 24
        n_max = math.isqrt((C - 1) << (2 * F)) + 4
        consts = {"C": C, "in_lo": in_fmt.lo, "in_hi": in_fmt.hi, "p": p, "u": u, "E": E, "F": F}
        info = {"in_scale": S, "eps": eps, "p": p, "u": u, "E": E, "D_max": D_max, "norm_bits": F}
        return self._plan_out(consts, in_fmt, gamma, beta, 1.0, F, n_max, gamma_bits, out_bits, info)

    def datapath_widths(self, plan):
        """K4.2.3 for this plan (C, the input range after the pre-shift p, F, g): s and y' signed,
        C*Q, s^2 and D unsigned, n and n*g signed; R, N, r and P are fixed by the spec (< 2^62,
        [2^60, 2^62), [2^30, 2^31), < 2^62)."""
        c = plan.consts
        C, p, F = int(c["C"]), int(c["p"]), int(c["F"])
        lo_p, hi_p = int(c["in_lo"]) >> p, int(c["in_hi"]) >> p
        n_max = math.isqrt((C - 1) << (2 * F)) + 4
        g_max = int(np.max(np.abs(c["g"])))

        def signed(m):
            return m.bit_length() + 1
        return {"s": signed(C * max(-lo_p, hi_p)), "CQ": (C * C * max(lo_p * lo_p, hi_p * hi_p)).bit_length(),
                "D": (C * C * (hi_p - lo_p) ** 2 // 4).bit_length(), "y": signed(C * (hi_p - lo_p)),
                "n": signed(n_max), "ng": signed(n_max * g_max), "out": int(c["out_bits"])}

    @staticmethod
    def _check(c, fmt, C):
        """K4.2.1: a pre-shift below the input width, and p, u and E keeping every variance
        intermediate in int64 and R = (D << 2u) + E below 2^62 (their ranges and F's are
        registers); returns the bound on |n| of K4.2.3."""
        p, u, F = c["p"], c["u"], c["F"]
        c.require(p <= fmt.bits - 2, f"pre-shift p = {p} exceeds the {fmt.bits}-bit input")
        lo, hi = fmt.lo >> p, fmt.hi >> p
        c.require(C * C * max(lo * lo, hi * hi) <= arith.INT64_MAX, f"pre-shift p = {p} leaves C*sum(q~^2) "
                  f"outside int64")
        D_max = (C * (hi - lo)) ** 2 // 4
        c.require((D_max << (2 * u)) + c["E"] < R_LIMIT, "R = (D << 2u) + E reaches 2^62")
        return math.isqrt((C - 1) << (2 * F)) + 4

    def reference(self, inputs, plan):
        q, consts = inputs[0], plan.consts
        q2 = _rows(q, consts)
        _check_input_ref(q2, consts)
        n = _isqrt_ln_norm_ref(q2, consts)
        return _finish(_affine_ref(n, consts), q, consts)

    def fast(self, inputs, plan):
        q, consts = inputs[0], plan.consts
        q2 = _rows(q, consts)
        out = np.empty(q2.shape, dtype=IntFormat(consts["out_bits"]).storage)
        lo, hi = np.int64(consts["in_lo"]), np.int64(consts["in_hi"])
        bad = _isqrt_ln_serial(q2, lo, hi, np.int64(consts["p"]), np.int64(consts["u"]), np.int64(consts["E"]),
                  np.int64(consts["F"]), consts["g"], np.int64(consts["h"]), consts["B"], out)
        _raise_bad_input(bad, consts)
        return _finish(out, q, consts)

    def cost(self, shape, plan=None):
        """K4.2.5: isqrt at its proved worst case (7 divisions for N in [2^60, 2^62)); the pre-shift
        costs one more shift per element when the plan has p > 0 (p = 0 without a plan)."""
        ops = _cost(ISQRT_LN_COST, shape)
        if plan is not None and plan.consts["p"] > 0:
            ops["shift"] += 1
        return ops

    def error_bound(self, plan, inputs):
        """K4.2.4: per-element bound on |out*S_out - float_reference(q*in_scale)|. Offline (float)."""
        q, gamma = inputs[0], plan.float_params["gamma"]
        info, c = plan.info, plan.consts
        C, p, u, F = c["C"], c["p"], c["u"], c["F"]
        S = info["in_scale"]
        x = np.asarray(q, dtype=np.float64) * S
        z = _float_ln(x, info["eps"])
        rho = 2.0 ** -24 + (2.0 ** (-2 * u - 1) / (C - 1) if C > 1 else 0.0)
        if p == 0:
            d_p = 0.0
        else:     # pre-shift: LN is 1/sigma_eps-Lipschitz in the 2-norm (K4.2.4)
            half = (2 ** p - 1) / 2 * S
            sig = np.sqrt(((x - x.mean(-1, keepdims=True)) ** 2).mean(-1, keepdims=True) + info["eps"])
            with np.errstate(divide="ignore"):
                d_p = np.where(sig > half, math.sqrt(C) * half / np.maximum(sig - half, 1e-300), np.inf)
        dz = (np.abs(z) + d_p) * rho + 2.0 ** -F + d_p
        return self._affine_error(z, dz, gamma, plan)


# --- K4.3 ivit-layernorm (I-ViT I-LayerNorm) -----------------------------------------------------------

def _ivit_y_V(q2, C):
    """K4.3.2 steps 1-3: y = q - rhe(sum(q) / C) (exact integer rounding half to even), V = sum(y^2)."""
    q = q2.astype(np.int64)
    s = q.sum(axis=-1, keepdims=True)
    m0 = s // C
    twice_rem = 2 * (s - m0 * C)
    mean = m0 + ((twice_rem > C) | ((twice_rem == C) & ((m0 & 1) == 1)))
    y = q - mean
    return y, (y * y).sum(axis=-1, keepdims=True)


def _ivit_norm_ref(q2, consts):
    """K4.3.2 per row, in the spec's names. Returns n (rows, C) int64."""
    y, V = _ivit_y_V(q2, consts["C"])
    std = ivit_std(V)                                            # >= 64, >= isqrt(V)
    f = IVIT_ONE // std
    return (y * f) >> 1                                          # in [-2^30, 2^30 - 1]


@numba.njit(cache=True, nogil=True)
def _ivit_row(q2, i, in_lo, in_hi, g, h, B, out):
    """K4.3.2 for row i; returns the number of inputs outside in_fmt."""
    C = q2.shape[1]
    s = np.int64(0)
    nbad = 0
    for j in range(C):
        v = np.int64(q2[i, j])
        if v < in_lo or v > in_hi:
            nbad += 1
        s += v
    m0 = s // C
    twice_rem = 2 * (s - m0 * C)
    mean = m0
    if twice_rem > C or (twice_rem == C and (m0 & 1) == 1):
        mean += 1
    V = np.int64(0)
    for j in range(C):
        y = np.int64(q2[i, j]) - mean
        V += y * y
    std = np.int64(IVIT_STD0)
    for _ in range(IVIT_ITERS):
        std = (std + V // std) >> 1
    f = IVIT_ONE // std
    for j in range(C):
        y = np.int64(q2[i, j]) - mean
        out[i, j] = _affine1((y * f) >> 1, g[j], h, B[j])
    return nbad


@numba.njit(cache=True, nogil=True)
def _ivit_serial(q2, in_lo, in_hi, g, h, B, out):
    bad = 0
    for i in range(q2.shape[0]):
        bad += _ivit_row(q2, i, in_lo, in_hi, g, h, B, out)
    return bad


class IvitLayerNorm(_LayerNormKernel):
    name = "ivit-layernorm"
    spec_section = "K4.3"
    title = "I-ViT I-LayerNorm: rounded mean, 10 Newton steps from 2^16 (inexact outside a window)"

    def plan(self, in_scale, in_fmt, gamma=None, beta=None, eps=1e-6, gamma_bits=16, out_bits=32):
        if gamma is None or beta is None:
            raise ArithSpecError("layernorm plan needs gamma and beta (float arrays of length C)")
        S, in_fmt, gamma, beta, eps, gamma_bits, out_bits = _check_common(
            in_scale, in_fmt, gamma, beta, eps, gamma_bits, out_bits)
        C = gamma.size
        consts = {"C": C, "in_lo": in_fmt.lo, "in_hi": in_fmt.hi}
        info = {"in_scale": S, "eps": eps, "eps_ignored": True}
        return self._plan_out(consts, in_fmt, gamma, beta, math.sqrt(C), IVIT_NORM_BITS, 1 << 30,
                              gamma_bits, out_bits, info)


    @staticmethod
    def _check(c, fmt, C):
        """K4.3: no constants of its own; |n| <= 2^30."""
        return 1 << 30

    def reference(self, inputs, plan):
        q, consts = inputs[0], plan.consts
        q2 = _rows(q, consts)
        _check_input_ref(q2, consts)
        return _finish(_affine_ref(_ivit_norm_ref(q2, consts), consts), q, consts)

    def fast(self, inputs, plan):
        q, consts = inputs[0], plan.consts
        q2 = _rows(q, consts)
        out = np.empty(q2.shape, dtype=IntFormat(consts["out_bits"]).storage)
        lo, hi = np.int64(consts["in_lo"]), np.int64(consts["in_hi"])
        bad = _ivit_serial(q2, lo, hi, consts["g"], np.int64(consts["h"]), consts["B"], out)
        _raise_bad_input(bad, consts)
        return _finish(out, q, consts)

    def cost(self, shape, plan=None):
        """K4.3.5: the 10 Newton steps are fixed (no early exit)."""
        return _cost(IVIT_LN_COST, shape)

    @staticmethod
    def exact_rows(q, consts):
        """Per row: True where I-ViT's 10-step std equals isqrt(V) (K4.3.3), V as the kernel forms it."""
        _, V = _ivit_y_V(np.asarray(q).reshape(-1, consts["C"]), consts["C"])
        V = V[:, 0]
        return ivit_std(V) == isqrt_ref(V), V

    def error_bound(self, plan, inputs):
        """K4.3.4: the bound where std = isqrt(V) and sqrt(C)*sigma > 1; inf elsewhere."""
        q, gamma = inputs[0], plan.float_params["gamma"]
        info, c = plan.info, plan.consts
        C = c["C"]
        qf = np.asarray(q, dtype=np.float64)
        x = qf * info["in_scale"]
        z = _float_ln(x, info["eps"])
        ok, V = self.exact_rows(q, c)
        std = isqrt_ref(V).astype(np.float64).reshape(qf.shape[:-1] + (1,))
        ok = ok.reshape(qf.shape[:-1] + (1,))
        sig = np.sqrt(((qf - qf.mean(-1, keepdims=True)) ** 2).mean(-1, keepdims=True))
        eps_q = info["eps"] / info["in_scale"] ** 2
        valid = ok & (math.sqrt(C) * sig > 1) & (std > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            up = np.sqrt(sig ** 2 + eps_q) / (sig - 1 / math.sqrt(C)) - 1
            down = 1 - sig / np.sqrt(sig ** 2 + 0.25) * (1 - (1 + std) * 2.0 ** -31)
            a = np.maximum(up, down)
            dz = np.abs(z) * a + math.sqrt(C) / (2 * std) + math.sqrt(C) * 2.0 ** -30
        dz = np.where(valid, dz, np.inf)
        return self._affine_error(z, dz, gamma, plan)


isqrt_layernorm = IsqrtLayerNorm()
ivit_layernorm = IvitLayerNorm()
CANDIDATES = {k.name: k for k in (isqrt_layernorm, ivit_layernorm)}
