"""The constants of intsim/elementary.py, derived from the mathematical definitions.

    python scripts/fit_elementary.py            # prints the constants block the module holds

Every value is computed in decimal arithmetic at 60 significant digits (Python's `decimal`, whose
exp, ln and sqrt are correctly rounded) and only at the end rounded to the nearest float64, so the
script prints the same digits on every machine. From the definitions:

- ln 2 = Decimal(2).ln(); pi by Machin's formula 16 atan(1/5) - 4 atan(1/239);
- erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1)), summed with 40 extra digits to absorb
  the cancellation up to x = 6; erfc = 1 - erf at that precision;
- atanh(s) = sum s^(2n+1) / (2n+1).

The polynomials are weighted minimax fits (the Remez exchange on a dense Chebyshev grid) of the
part of each function that the module evaluates as a polynomial; the weights make the error the
one that reaches the result (relative for exp and log and for erf near 0, absolute for erf's tail).
The script prints each fit's error after rounding the coefficients to float64, in bits.
"""
from decimal import Decimal, localcontext
import decimal
import math
import struct

DIGITS = 60
decimal.getcontext().prec = DIGITS
D = Decimal

# --- the exact functions ---------------------------------------------------------------------------


def _atan_inv(k):
    """atan(1/k) for an integer k > 1."""
    k = D(k)
    power, total, n, sign = 1 / k, D(0), 1, 1
    while power > D(10) ** -(DIGITS + 5):
        total += sign * power / n
        power /= k * k
        n, sign = n + 2, -sign
    return total


PI = 16 * _atan_inv(5) - 4 * _atan_inv(239)
LN2 = D(2).ln()
SQRT2 = D(2).sqrt()


def cos(x):
    """cos(x) by its Taylor series (only the fitting grid needs it)."""
    term, total, n = D(1), D(1), 0
    while abs(term) > D(10) ** -(DIGITS + 5):
        n += 2
        term = -term * x * x / (n * (n - 1))
        total += term
    return total


def erf(x):
    with localcontext() as ctx:
        ctx.prec = DIGITS + 40
        z = x * x
        term, total, n = x, x, 0           # term = (-1)^n x^(2n+1) / n!
        while n <= z or abs(term) > D(10) ** -(DIGITS + 30):
            n += 1
            term = -term * z / n
            total += term / (2 * n + 1)
        result = 2 * total / ctx.sqrt(PI)
    return +result


def erfc(x):
    with localcontext() as ctx:
        ctx.prec = DIGITS + 40
        result = 1 - erf(x)
    return +result


def exp_cubic_rest(r):
    """(exp(r) - 1 - r - r^2/2) / r^3 = sum_{n>=3} r^(n-3) / n!, without cancellation."""
    term, total, n = D(1) / 6, D(1) / 6, 3
    while abs(term) > D(10) ** -(DIGITS + 5):
        n += 1
        term = term * r / n
        total += term
    return total


def atanh_rest(z):
    """(2 atanh(s) - 2s) / s^3 = sum_{n>=1} 2 z^(n-1) / (2n+1) for z = s^2."""
    term, total, n = D(1), D(0), 1         # term = z^(n-1)
    while term > D(10) ** -(DIGITS + 5):
        total += 2 * term / (2 * n + 1)
        term *= z
        n += 1
    return total


def erf_small_rest(z):
    """erf(a)/a - 1 for z = a^2."""
    if z == 0:
        return 2 / PI.sqrt() - 1
    a = z.sqrt()
    return erf(a) / a - 1


def erfc_scaled(a):
    """erfc(a) * exp(a^2)."""
    return erfc(a) * (a * a).exp()


# --- weighted minimax fitting --------------------------------------------------------------------

def solve(rows, rhs):
    """Gaussian elimination with partial pivoting."""
    n = len(rhs)
    m = [row[:] + [b] for row, b in zip(rows, rhs)]
    for i in range(n):
        p = max(range(i, n), key=lambda r: abs(m[r][i]))
        m[i], m[p] = m[p], m[i]
        for r in range(i + 1, n):
            f = m[r][i] / m[i][i]
            for c in range(i, n + 1):
                m[r][c] -= f * m[i][c]
    x = [D(0)] * n
    for i in range(n - 1, -1, -1):
        x[i] = (m[i][n] - sum(m[i][c] * x[c] for c in range(i + 1, n))) / m[i][i]
    return x


def horner(coefs, t):
    acc = D(0)
    for c in reversed(coefs):
        acc = acc * t + c
    return acc


def remez(target, weight, degree, lo, hi, points=1200, iterations=40):
    """Coefficients c_0..c_degree of the polynomial p minimising max |weight(t) (target(t) - p(t))|
    over a Chebyshev grid of `points` points of [lo, hi] (the discrete Remez exchange), and that
    maximum."""
    lo, hi = D(lo), D(hi)
    ts = [(lo + hi) / 2 - (hi - lo) / 2 * cos(PI * i / (points - 1)) for i in range(points)]
    fs = [target(t) for t in ts]
    ws = [weight(t) for t in ts]
    m = degree + 2
    ref = [round((points - 1) * i / (m - 1)) for i in range(m)]
    for _ in range(iterations):
        rows = [[ts[i] ** j if j else D(1) for j in range(degree + 1)] + [D((-1) ** k) / ws[i]]
                for k, i in enumerate(ref)]
        *coefs, level = solve(rows, [fs[i] for i in ref])
        err = [w * (f - horner(coefs, t)) for t, f, w in zip(ts, fs, ws)]
        worst = max(abs(e) for e in err)
        # the largest |error| of each run of one sign: an alternating set of extrema
        peaks = []
        for i, e in enumerate(err):
            if peaks and (e > 0) == (err[peaks[-1]] > 0):
                if abs(e) > abs(err[peaks[-1]]):
                    peaks[-1] = i
            elif e != 0:
                peaks.append(i)
        while len(peaks) > m:
            peaks.pop(0 if abs(err[peaks[0]]) < abs(err[peaks[-1]]) else -1)
        if len(peaks) < m or worst - abs(level) < worst * D("1e-5"):
            break
        ref = peaks
    return coefs, worst


def rounded_error(coefs, target, weight, lo, hi, points=4000):
    """max |weight (target - p)| of the polynomial with float64 coefficients, exactly (in decimal)
    on a uniform grid."""
    lo, hi = D(lo), D(hi)
    ts = [lo + (hi - lo) * i / (points - 1) for i in range(points)]
    return max(abs(weight(t) * (target(t) - horner([D(c) for c in coefs], t))) for t in ts)


def double(x):
    return float(x)          # correctly rounded: Decimal -> str -> float


def split_high(x, bits):
    """x rounded to `bits` significant bits (a float64 whose products with small integers are exact)
    and the float64 nearest to the rest."""
    step = D(2) ** (math.frexp(float(x))[1] - bits)      # x = m 2^e, 1/2 <= |m| < 1: frexp is exact
    high = (x / step).to_integral_value() * step
    return double(high), double(x - high)


# --- the module's constants ------------------------------------------------------------------------

EXP_REDUCED_MAX = D("0.347")   # |r| after exp's reduction: ln2/2 plus margin
LOG_Z_MAX = D("0.0295")        # s^2, s = f/(2+f) for 1+f in [sqrt(1/2), sqrt(2)): (3 - 2 sqrt 2)^2
ERF_SPLIT = D(1)               # erf below it from the series polynomial, above from exp * tail
ERF_ONE = D(6)                 # erf(a) rounds to 1 above 5.9
ERF_TAIL_SHIFT = D(2)          # the tail polynomial's variable u = K / (SHIFT + a) - M
DEGREES = {"EXP": 9, "LOG": 6, "ERF_SMALL": 12, "ERF_TAIL": 12}


def tail_variable():
    """K and M of u = K / (SHIFT + a) - M, mapping a in [ERF_SPLIT, ERF_ONE] onto [-1, 1], both
    rounded to float64 (the fit uses the variable the module computes)."""
    near, far = 1 / (ERF_TAIL_SHIFT + ERF_SPLIT), 1 / (ERF_TAIL_SHIFT + ERF_ONE)
    k = double(2 / (near - far))
    m = double(D(k) * near - 1)
    return k, m


def problems():
    """{name: (target, weight, lo, hi)} of the four fits: the part of each function the module
    evaluates as a polynomial, weighted so that the error is the one that reaches the result."""
    k, m = tail_variable()
    a_of = lambda u: D(k) / (u + D(m)) - ERF_TAIL_SHIFT
    return {
        # exp(r) = 1 + r + r^2/2 + r^3 EXP(r): relative error
        "EXP": (exp_cubic_rest, lambda r: abs(r) ** 3 / r.exp(), -EXP_REDUCED_MAX, EXP_REDUCED_MAX),
        # log(1+f) = 2s + s z LOG(z), z = s^2: relative error z |error| / 2 (about)
        "LOG": (atanh_rest, lambda z: z / 2, D(0), LOG_Z_MAX),
        # erf(a) = a + a ERF_SMALL(a^2): relative error
        "ERF_SMALL": (erf_small_rest, lambda z: 1 / (1 + erf_small_rest(z)), D(0), ERF_SPLIT ** 2),
        # erfc(a) = exp(-a^2) ERF_TAIL(u): absolute error
        "ERF_TAIL": (lambda u: erfc_scaled(a_of(u)), lambda u: (-a_of(u) ** 2).exp(),
                     D(k) / (ERF_TAIL_SHIFT + ERF_ONE) - D(m), D(k) / (ERF_TAIL_SHIFT + ERF_SPLIT) - D(m)),
    }


def fits():
    """{name: float64 coefficients, lowest degree first} of the four polynomials."""
    out = {}
    for name, (target, weight, lo, hi) in problems().items():
        if name == "LOG":       # the weight vanishes at z = 0: a floor keeps the fit well posed
            weight = lambda z: z / 2 + LOG_Z_MAX / 256
        coefs, _ = remez(target, weight, DEGREES[name], lo, hi)
        out[name] = tuple(double(c) for c in coefs)
    return out


def constants(polys):
    """Every constant of intsim/elementary.py: {name: float, int or tuple of floats}."""
    ln2_hi, ln2_lo = split_high(LN2, 42)     # |k| < 2^11, so k * LN2_HI is exact
    k, m = tail_variable()
    return {
        "LN2_HI": ln2_hi, "LN2_LO": ln2_lo, "INV_LN2": double(1 / LN2),
        "SQRT_HALF_BITS": struct.unpack(">q", struct.pack(">d", double(SQRT2 / 2)))[0],
        "ERF_SPLIT": double(ERF_SPLIT), "ERF_ONE": double(ERF_ONE),
        "ERF_TAIL_SHIFT": double(ERF_TAIL_SHIFT), "ERF_TAIL_K": k, "ERF_TAIL_M": m,
        **{name + "_POLY": c for name, c in polys.items()},
    }


def main():
    polys = fits()
    print("# --- generated by scripts/fit_elementary.py ---")
    for name, value in constants(polys).items():
        if isinstance(value, tuple):
            print(f"{name} = (")
            for v in value:
                print(f"    {v!r},")
            print(")")
        elif isinstance(value, int):
            print(f"{name} = 0x{value:016X}")
        else:
            print(f"{name} = {value!r}")
    print("# --- end of generated constants ---")
    for name, problem in problems().items():
        err = rounded_error(polys[name], *problem)
        print(f"# {name}: degree {len(polys[name]) - 1}, weighted error with the float64 "
              f"coefficients 2^{math.log2(err):.1f}")


if __name__ == "__main__":
    main()
