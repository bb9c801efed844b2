"""Directed and random vectors of the K4 LayerNorm candidates."""
import math

import numpy as np

from ..kernels import candidates
from ..kernels.layernorm import isqrt_divisions, isqrt_ln_normalised, isqrt_ref, ivit_std
from .cases import Case, random_codes, signed, with_extremes


# --- K4 LayerNorm ---------------------------------------------------------------------------------

def _ln_case(kernel, name, q, in_fmt, in_scale, gamma, beta, **opts):
    k = candidates("layernorm")[kernel]
    plan = k.plan(in_scale, in_fmt, gamma=gamma, beta=beta, **opts)
    attrs = {"family": "layernorm", "kernel": kernel, "in_scale": float(in_scale)}
    return Case(kernel, name, "layernorm", [("in", np.asarray(q, dtype=np.int64), in_fmt)], [plan.out_fmt],
                dict(plan.consts), attrs, spec=k.spec_section)


def _layernorm_cases_for(kernel, rng):
    def gb(c):
        return rng.normal(1, 0.3, c), rng.normal(0, 0.2, c)

    # each input width (2..24), random rows with extremes plus a constant row
    for bits in list(range(2, 17)) + [20, 24]:
        if kernel == "ivit-layernorm" and bits > 16:
            continue                    # K4.3 sums y^2 in int64: fine, but its Newton window is 16-bit
        fmt = signed(bits)
        q = with_extremes(random_codes(rng, fmt, (3, 32)), fmt)
        q[2] = fmt.hi // 3                                  # a constant row (D = 0)
        yield _ln_case(kernel, f"in{bits}", q, fmt, 4.0 / (fmt.hi + 1), *gb(32))
    fmt = signed(16)
    # residual-stream-like rows with outlier channels, C = 96 (the shipped model's width)
    x = rng.normal(0, 1, (6, 96)) * np.exp(rng.normal(0, 0.5, 96))
    x[:, :3] *= 20
    s = float(np.abs(x).max()) / fmt.hi
    yield _ln_case(kernel, "residual_like", np.round(x / s), fmt, s, *gb(96))
    # constant rows only, including both ends of the range; gamma all zero (output = beta)
    q = np.array([[fmt.lo] * 16, [fmt.hi] * 16, [0] * 16, [-5] * 16])
    yield _ln_case(kernel, "const_rows", q, fmt, 1e-3, *gb(16))
    yield _ln_case(kernel, "gamma_zero", random_codes(rng, fmt, (2, 16)), fmt, 1e-3, np.zeros(16), rng.normal(0, 1, 16))
    # small-variance rows (I-ViT's Newton has not converged: V < 142883) and one channel (C = 1)
    q = 1000 + rng.integers(-3, 4, size=(3, 64))
    yield _ln_case(kernel, "small_var", q, fmt, 1e-3, *gb(64))
    yield _ln_case(kernel, "one_channel", random_codes(rng, fmt, (4, 1)), fmt, 1e-3, *gb(1))
    # seeded random widths and lengths
    for i in range(2):
        c = int(rng.integers(2, 200))
        x = rng.normal(0, 1, (3, c))
        s = float(np.abs(x).max()) / fmt.hi
        yield _ln_case(kernel, f"random{i}", np.round(x / s), fmt, s, *gb(c))


def isqrt_layernorm_cases(rng):
    yield from _layernorm_cases_for("isqrt-layernorm", rng)
    # a pre-shift p > 0 (K4.2.1): 24-bit input at C = 384 (C^2 * 2^46 > 2^63 - 1)
    fmt = signed(24)
    q = with_extremes(random_codes(rng, fmt, (3, 384)), fmt)
    q[1] = rng.integers(-3, 4, 384) + 77                # a small-variance row under the pre-shift
    yield _ln_case("isqrt-layernorm", "preshift_c384", q, fmt, 2.0 ** -16,
                   rng.normal(1, 0.3, 384), rng.normal(0, 0.2, 384))
    # rows whose square root takes the worst case of 7 divisions (K4.1.3): N just below a square
    # needs the whole 62-bit range, so a 24-bit input (u <= 1)
    for bits, C in ((24, 96), (24, 384)):
        fmt = signed(bits)
        plan = candidates("layernorm")["isqrt-layernorm"].plan(2.0 ** -10, fmt, gamma=np.ones(C), beta=np.zeros(C))
        row = _isqrt_worst_row(plan, fmt)
        yield _ln_case("isqrt-layernorm", f"isqrt_7_in{bits}_c{C}", row[None], fmt, 2.0 ** -10,
                       rng.normal(1, 0.3, C), rng.normal(0, 0.2, C))
    # a pre-shift forced by an extreme eps/S^2 at 16 bits, C = 4096
    fmt = signed(16)
    q = with_extremes(random_codes(rng, fmt, (2, 4096)), fmt)
    yield _ln_case("isqrt-layernorm", "preshift_eps", q, fmt, 2.0 ** -30,
                   rng.normal(1, 0.3, 4096), rng.normal(0, 0.2, 4096), eps=1.0)


def _isqrt_worst_row(plan, fmt):
    """A mean-zero row of pairs (v, -v) (s = 0, D = 2 C sum v^2) whose step-7 square root takes
    K4.1.3's 7 divisions: N just below a square m^2 with m = 2^30 + j. None if this plan has none."""
    c = plan.consts
    C, u, E = int(c["C"]), int(c["u"]), int(c["E"])
    vmax = min(fmt.hi, -fmt.lo) >> int(c["p"])
    for j in range(1, 1 << 12):
        m = (1 << 30) + j
        for t in range(31 - u):
            r_lo, r_hi = -(-(m * m - 1000) // 4 ** t), (m * m - 1) // 4 ** t
            d = max(1, -(-(r_lo - E) // 4 ** u))
            d = -(-d // (2 * C)) * 2 * C                        # a multiple of 2C
            if r_hi < r_lo or d * 4 ** u + E > r_hi:
                continue
            rest, vs = d // (2 * C), []
            while rest and len(vs) < C // 2:                   # greedy sum of at most C/2 squares
                v = min(vmax, math.isqrt(rest))
                vs.append(v)
                rest -= v * v
            qt = np.array([x for v in vs for x in (v, -v)] + [0] * (C - 2 * len(vs)), dtype=np.int64)
            D = C * int((qt * qt).sum())                        # q~ = asr(q, p) = v
            if not rest and isqrt_divisions(int(isqrt_ln_normalised(D, u, E)[0])) == 7:
                return qt << int(c["p"])
    return None


def ivit_layernorm_cases(rng):
    yield from _layernorm_cases_for("ivit-layernorm", rng)
    # V + 1 a perfect square above the window start: Newton returns isqrt(V) + 1 (K4.3.3)
    # row [a, -a] with C = 2: mean 0, V = 2 a^2; choose a row with V = 428^2 - 1 via a search
    q = _ivit_newton_off_row()
    yield _ln_case("ivit-layernorm", "newton_off", q, signed(16), 1e-3, np.ones(q.shape[1]), np.zeros(q.shape[1]))
    # the mean's exact ties s / C = j + 1/2 with j even (0.5 and -1.5), where half to even (K4.3.2
    # step 1) and half up differ
    q = np.array([[1000, -1000, 3000, -2998], [1000, -1000, 3000, -3006]])
    yield _ln_case("ivit-layernorm", "mean_tie", q, signed(16), 1e-3, np.ones(4), np.zeros(4))


def _ivit_newton_off_row():
    """A 4-channel 16-bit row whose variance sum V = sum (q - mean)^2 has V + 1 a perfect square
    >= 142883, where I-ViT's 10-step Newton returns isqrt(V) + 1 (K4.3.3)."""
    for a in range(200, 2000):
        for b in range(0, a):
            row = np.array([a, -a, b, -b])              # mean 0, V = 2a^2 + 2b^2
            V = 2 * a * a + 2 * b * b
            if V >= 142883 and int(ivit_std(np.array(V))) != int(isqrt_ref(np.array(V))):
                return row[None]
    raise AssertionError("no row found")
