"""The arithmetic primitives of docs/arithmetic.md: integer formats, dyadic multipliers, rounding
shifts, saturation and overflow checks. Every kernel builds on these and nothing else.

Spec sections: A1 (formats), A2 (dyadic multipliers), A3 (rounding), A4 (widths and overflow),
A5 (shifts and division), A6 (requantize).

Each run-time rule has two twins side by side: a NumPy one for whole arrays (the reference paths)
and a numba one for one int64 value (`*1`: round_shift1, floor_div1, saturate1), which every jitted
fast path inlines. The fast paths never re-derive a rule of their own.
"""
from dataclasses import dataclass
from fractions import Fraction
import functools
import math

import numba
import numpy as np

from .errors import IntsimError

SPEC_VERSION = "1.1"

INT64_MAX = (1 << 63) - 1


class ArithSpecError(IntsimError):
    """A parameter or value outside what docs/arithmetic.md defines (bad width, scale, overflow)."""


class IntOverflowError(ArithSpecError):
    """An intermediate or accumulator left its declared width (spec A4: detect and raise)."""


# --- A1: integer formats -------------------------------------------------------------------------

@dataclass(frozen=True)
class IntFormat:
    """A two's-complement (signed) or plain binary (unsigned) integer of `bits` bits.
    narrow=True drops the most negative code (symmetric range, e.g. [-127, 127] for int8)."""
    bits: int
    signed: bool = True
    narrow: bool = False

    def __post_init__(self):
        check_bits("format width", self.bits, 1 if not self.signed else 2, 32)
        if self.narrow and not self.signed:
            raise ArithSpecError("a narrow range is defined only for signed formats")

    @property
    def lo(self):
        if not self.signed:
            return 0
        return -(1 << (self.bits - 1)) + (1 if self.narrow else 0)

    @property
    def hi(self):
        return (1 << self.bits) - 1 if not self.signed else (1 << (self.bits - 1)) - 1

    @property
    def storage(self):
        """The smallest NumPy dtype that holds every value of the format."""
        return _storage(self.bits, self.signed)

    def describe(self):
        return f"{'s' if self.signed else 'u'}{self.bits}{'n' if self.narrow else ''}[{self.lo}, {self.hi}]"

    def to_dict(self):
        return {"bits": self.bits, "signed": self.signed, "narrow": self.narrow}


@functools.lru_cache(maxsize=None)
def _storage(bits, signed):
    for dt in ((np.int8, np.int16, np.int32) if signed else (np.uint8, np.uint16, np.uint32)):
        if np.iinfo(dt).bits >= bits:
            return np.dtype(dt)
    raise AssertionError((bits, signed))


def check_bits(what, bits, lo, hi):
    """Raise a clear error unless `bits` is an integer in [lo, hi]."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not lo <= bits <= hi:
        raise ArithSpecError(f"{what} must be an integer in [{lo}, {hi}] bits, got {bits!r}")
    return int(bits)


def check_scale(what, scale):
    """A real scale must be a finite positive number (spec A2)."""
    try:
        s = float(scale)
    except (TypeError, ValueError):
        raise ArithSpecError(f"{what} must be a positive finite number, got {scale!r}") from None
    if not math.isfinite(s) or s <= 0.0:
        raise ArithSpecError(f"{what} must be a positive finite number, got {scale!r}")
    return s


def check_nonnegative(what, value):
    """A finite real number >= 0 (a weight, an epsilon), as a float; anything else is refused."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ArithSpecError(f"{what} must be a finite number >= 0, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ArithSpecError(f"{what} must be a finite number >= 0, got {value!r}")
    return v


def int_const(what, v):
    """An integer constant (Python int, NumPy integer or integer array) as int64; anything else -
    a float above all - is refused: the integer program carries integers only (spec K0)."""
    if isinstance(v, bool) or not (isinstance(v, (int, np.integer)) or
                                   (isinstance(v, np.ndarray) and v.dtype.kind in "iu")):
        got = f"an array of dtype {v.dtype}" if isinstance(v, np.ndarray) else f"{type(v).__name__} {v!r}"
        raise ArithSpecError(f"{what} must be an integer constant, got {got}")
    return np.asarray(v, dtype=np.int64)


def check_nonempty(what, x):
    if np.size(x) == 0:
        raise ArithSpecError(f"{what} is empty (shape {np.shape(x)}): nothing to compute")


@dataclass(frozen=True)
class ConstFormat:
    """The register of one constant of an integer op (spec A1, "Constant registers"): `bits`,
    `signed`, `narrow` as for IntFormat but up to 64 bits wide, the values the spec allows in it
    (`lo`..`hi`; None: the register's whole range) and its shape (None: not declared)."""
    bits: int
    signed: bool = False
    narrow: bool = False
    lo: int = None
    hi: int = None
    shape: tuple = None

    def __post_init__(self):
        check_bits("constant register width", self.bits, 2 if self.signed else 1, 64)
        if self.narrow and not self.signed:
            raise ArithSpecError("a narrow range is defined only for signed registers")
        reg_lo, reg_hi = register_range(self.bits, self.signed, self.narrow)
        lo = reg_lo if self.lo is None else int(self.lo)
        hi = reg_hi if self.hi is None else int(self.hi)
        if not reg_lo <= lo <= hi <= reg_hi:
            raise ArithSpecError(f"constant values [{lo}, {hi}] do not fit the register {self.describe()}")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    @classmethod
    def holding(cls, lo, hi, shape=()):
        """The narrowest register holding every value of [lo, hi] (unsigned when lo >= 0)."""
        lo, hi = int(lo), int(hi)
        if lo >= 0:
            return cls(max(hi.bit_length(), 1), False, False, lo, hi, shape)
        bits = max(max(hi, 0).bit_length(), (-lo - 1).bit_length(), 1) + 1     # signed: >= 2 bits
        return cls(bits, True, False, lo, hi, shape)

    @classmethod
    def fixed(cls, value):
        """A constant the spec fixes (e.g. F = 20): its own value only, in the narrowest register."""
        return cls.holding(value, value)

    def exactly(self, value):
        """This register holding one value only (a constant that restates a format, e.g. in_bits)."""
        return ConstFormat(self.bits, self.signed, self.narrow, value, value, self.shape)

    @classmethod
    def of(cls, fmt, shape=None):
        """A constant stored in a tensor format (a weight, a bias, a residual-stream constant)."""
        return cls(fmt.bits, fmt.signed, fmt.narrow, fmt.lo, fmt.hi, shape)

    def describe(self):
        return f"{'s' if self.signed else 'u'}{self.bits}{'n' if self.narrow else ''}"

    def violation(self, value):
        """Why `value` cannot be this constant (not an integer, another shape, a value outside
        [lo, hi]), or None when it can. Values are compared as Python ints: nothing wraps."""
        integer = isinstance(value, (int, np.integer)) or (
            isinstance(value, np.ndarray) and value.dtype.kind in "iu")
        if isinstance(value, (bool, np.bool_)) or not integer:
            return f"{type(value).__name__} {value!r:.40} is not an integer constant"
        v = np.asarray(value)
        if self.shape is not None and v.shape != tuple(self.shape):
            return f"shape {v.shape}, declared {tuple(self.shape)}"
        lo, hi = (int(v.min()), int(v.max())) if v.size else (self.lo, self.hi)
        if lo < self.lo or hi > self.hi:
            bad = lo if lo < self.lo else hi
            if (self.lo, self.hi) == register_range(self.bits, self.signed, self.narrow):
                return f"value {bad} outside {self.describe()}[{self.lo}, {self.hi}]"
            return f"value {bad} outside [{self.lo}, {self.hi}] (register {self.describe()})"
        return None


def register_range(bits, signed, narrow=False):
    """(lo, hi) of a `bits`-wide two's-complement (signed) or binary register (spec A1)."""
    if not signed:
        return 0, (1 << bits) - 1
    return -(1 << (bits - 1)) + (1 if narrow else 0), (1 << (bits - 1)) - 1


def saturate(x, fmt):
    """Clamp to the format's range and store in its dtype (spec A1: saturation points)."""
    return np.clip(x, fmt.lo, fmt.hi).astype(fmt.storage)


@numba.njit(cache=True, nogil=True, inline="always")
def saturate1(v, lo, hi):
    """saturate for one int64 value (the jitted twin)."""
    return lo if v < lo else (hi if v > hi else v)


# --- A2: dyadic multipliers ----------------------------------------------------------------------

MULTIPLIER_BITS_DEFAULT = 31
SHIFT_MAX = 62       # k <= 62: the rounding constant 2^(k-1) and x*m stay in int64
SHIFT_MIN = -31      # k < 0 is an exact left shift by -k (only for multipliers above 2^bits)


@dataclass(frozen=True)
class Dyadic:
    """real ~= m * 2^-k, m in [2^(bits-1), 2^bits) (normalised), or k = 62 and m smaller."""
    m: int
    k: int

    def value(self):
        return Fraction(self.m) / (Fraction(2) ** self.k)


def dyadic(real, bits=MULTIPLIER_BITS_DEFAULT):
    """The (m, k) pair of spec A2 for a positive real ratio.

    m is rounded half up from the *exact* binary value of the float (no float arithmetic);
    if rounding reaches 2^bits, m becomes 2^(bits-1) and k drops by one (renormalisation).
    k above SHIFT_MAX is clamped to it with a denormal m; k below SHIFT_MIN raises.
    """
    bits = check_bits("multiplier width", bits, 2, 31)
    f, e = math.frexp(check_scale("requantization ratio", real))   # real = f * 2^e, f in [0.5, 1)
    k = bits - e
    m = round_half_up(Fraction(f) * (1 << bits))                     # exact: f is a binary fraction
    if m == (1 << bits):
        m, k = 1 << (bits - 1), k - 1
    if k > SHIFT_MAX:
        # denormal: keep k = SHIFT_MAX and let m lose leading bits; a ratio that rounds to m = 0
        # would silence the tensor, so it is an error
        k = SHIFT_MAX
        m = round_half_up(Fraction(real) * (1 << SHIFT_MAX))
        if m == 0:
            raise ArithSpecError(f"ratio {float(real):.6g} is below 2^-63: it rounds to a zero multiplier")
    if k < SHIFT_MIN:
        raise ArithSpecError(
            f"ratio {float(real):.6g} needs shift k={k} < {SHIFT_MIN} (multiplier width {bits}): "
            f"the scales are too far apart to requantize")
    return Dyadic(m, k)


def check_multiplier(what, m, k):
    """(m, k) as int64 inside the ranges of A2 (0 <= m < 2^31, SHIFT_MIN <= k <= SHIFT_MAX): a
    shift outside them would be undefined in int64 (NumPy and C alike), so it is refused."""
    m, k = int_const(f"{what} multiplier m", m), int_const(f"{what} shift k", k)
    if m.size and (int(m.min()) < 0 or int(m.max()) >= 1 << 31):
        bad = int(m.min()) if int(m.min()) < 0 else int(m.max())
        raise ArithSpecError(f"{what}: multiplier m = {bad} outside [0, 2^31) (spec A2)")
    if k.size and (int(k.min()) < SHIFT_MIN or int(k.max()) > SHIFT_MAX):
        bad = int(k.min()) if int(k.min()) < SHIFT_MIN else int(k.max())
        raise ArithSpecError(f"{what}: shift k = {bad} outside [{SHIFT_MIN}, {SHIFT_MAX}] (spec A2)")
    return m, k


def dyadic_array(reals, bits=MULTIPLIER_BITS_DEFAULT):
    """Per-channel (m, k) as two int64 arrays: `dyadic` of every ratio. Vectorised where it is
    exact - frexp is exact, f 2^bits is exact and so is adding 1/2 to it (f 2^bits < 2^31 has at
    most 22 fraction bits), so floor(f 2^bits + 1/2) is the rounding half up of A2 - and the
    scalar rule for any ratio it would clamp (k > SHIFT_MAX) or refuse."""
    bits = check_bits("multiplier width", bits, 2, 31)
    r = np.asarray(reals, dtype=np.float64).ravel()
    valid = np.isfinite(r) & (r > 0)
    f, e = np.frexp(np.where(valid, r, 1.0))
    m = np.floor(np.ldexp(f, bits) + 0.5).astype(np.int64)
    k = bits - e.astype(np.int64)
    renorm = m == (1 << bits)
    m[renorm], k[renorm] = 1 << (bits - 1), k[renorm] - 1
    for i in np.flatnonzero(~valid | (k > SHIFT_MAX) | (k < SHIFT_MIN)):
        d = dyadic(r[i], bits)
        m[i], k[i] = d.m, d.k
    return m, k


# --- A3: rounding ---------------------------------------------------------------------------------

def round_half_up(x: Fraction):
    """An exact rational rounded half up (ties toward +inf): the offline twin of round_shift,
    used wherever a plan turns a real constant into an integer."""
    return math.floor(x + Fraction(1, 2))


def round_half_up_ratio(num: int, den: int):
    """round_half_up(num / den) for integers, den > 0, without building a Fraction."""
    return (2 * num + den) // (2 * den)


def round_shift(x, k):
    """x / 2^k rounded half up (ties toward +inf), the one rounding rule of requantization (A3).

    x: int64 array, k: int or int64 array (broadcast), k >= 0 rounds; k < 0 is an exact left shift.
    |k| <= MAX_SHIFT (int64 holds the half 2^(k-1) and the shifted value there); overflow of x's
    own range is the caller's job to have excluded (see requantize's bound check).
    """
    x = np.asarray(x, dtype=np.int64)
    k = check_shift(k, "round_shift")
    if k.ndim == 0:
        kk = int(k)
        if kk > 0:
            return (x + np.int64(1 << (kk - 1))) >> np.int64(kk)
        return x << np.int64(-kk)
    pos = np.maximum(k, 0)
    half = np.where(pos > 0, np.left_shift(np.int64(1), np.maximum(pos - 1, 0)), 0)
    return np.where(k > 0, (x + half) >> pos, x << np.maximum(-k, 0))


MAX_SHIFT = 62


def check_shift(k, where):
    """k as int64, or an ArithSpecError when some |k| exceeds MAX_SHIFT (A3)."""
    try:
        kk = np.asarray(k, dtype=np.int64)
    except (OverflowError, TypeError, ValueError):
        raise ArithSpecError(f"{where}: shift {k!r} is not an int64 integer (spec A3)") from None
    if kk.size and int(np.max(np.abs(kk))) > MAX_SHIFT:
        bad = int(kk.flat[int(np.argmax(np.abs(kk)))])
        raise ArithSpecError(f"{where}: shift {bad} outside -{MAX_SHIFT}..{MAX_SHIFT} (spec A3)")
    return kk


@numba.njit(cache=True, nogil=True, inline="always")
def round_shift1(x, k):
    """round_shift for one int64 value (the jitted twin): k > 0 rounds half up, k <= 0 shifts left."""
    if k > 0:
        return (x + (np.int64(1) << (k - 1))) >> k
    return x << (-k)


# --- A5: shifts and division ------------------------------------------------------------------------

def floor_div(a, d):
    """floor(a / d) elementwise in int64 (Python's //), d != 0: the one division rule (A5).
    Division by zero is a spec violation and raises."""
    d = np.asarray(d, dtype=np.int64)
    if np.any(d == 0):
        raise ArithSpecError("floor_div: division by zero (spec A5)")
    return np.floor_divide(np.asarray(a, dtype=np.int64), d)


@numba.njit(cache=True, nogil=True, inline="always")
def floor_div1(a, d):
    """floor(a / d) for one pair of int64 with |a|, |d| < 2^53 and d != 0 (the jitted twin).

    Both operands convert to float64 exactly and the rounded quotient lies within one of a/d, so its
    floor is off by at most one; one integer correction on the remainder makes it exact. Cheaper
    than a 64-bit integer divide, and the same integer as Python's a // d."""
    z = np.int64(math.floor(a / d))
    r = a - z * d
    if d > 0:
        if r < 0:
            z -= 1
        elif r >= d:
            z += 1
    else:
        if r > 0:
            z -= 1
        elif r <= d:
            z += 1
    return z


# --- A4: widths and overflow ------------------------------------------------------------------------

def max_abs(x):
    """Largest |value| of an integer array, as a Python int (0 for an empty array)."""
    if np.size(x) == 0:
        return 0
    return max(abs(int(np.min(x))), abs(int(np.max(x))))


def integer_input(what, x):
    """x as an integer array whose values all fit int64: a uint64 value above 2^63 - 1 would wrap
    when widened, so it is refused (A4); a float array is refused (the program is integer-only)."""
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise ArithSpecError(f"{what}: integer input required, got dtype {x.dtype}")
    if x.dtype == np.uint64:
        if x.size and int(x.max()) > INT64_MAX:
            raise IntOverflowError(f"{what}: value {int(x.max())} outside int64 (spec A4: never a wrap)")
        x = x.astype(np.int64)
    return x


@functools.lru_cache(maxsize=None)
def dtype_within(dtype, fmt):
    """True when no value of this storage dtype can lie outside fmt (its range needs no pass)."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu":
        return False
    info = np.iinfo(dtype)
    return fmt.lo <= info.min and info.max <= fmt.hi


def check_fits(what, x, fmt):
    """Raise IntOverflowError if any value of x lies outside fmt (no silent wrap, spec A4). An
    integer array whose dtype cannot hold a value outside fmt is not read."""
    if isinstance(x, np.ndarray) and dtype_within(x.dtype, fmt):
        return
    if np.size(x) == 0:
        return
    lo, hi = int(np.min(x)), int(np.max(x))
    if lo < fmt.lo or hi > fmt.hi:
        bad = lo if lo < fmt.lo else hi
        raise IntOverflowError(f"{what}: value {bad} outside {fmt.describe()} (spec A4: overflow "
                               f"is an error, never a wrap)")


def dtype_magnitude(dtype):
    """The largest |value| an integer dtype holds: a bound on max_abs(x) that reads no data."""
    info = np.iinfo(dtype)
    return max(-int(info.min), int(info.max))


def check_product_bound_of(what, x, m, k):
    """check_product_bound for an integer array x: proved from x's dtype alone when its whole
    range keeps the product inside int64 (no pass over x), else from max_abs(x)."""
    m_max = int(np.max(np.abs(m))) if np.ndim(m) else abs(int(m))
    k_min = int(np.min(k)) if np.ndim(k) else int(k)
    if dtype_magnitude(x.dtype) * m_max * (1 << max(-k_min, 0)) + (1 << 62) <= INT64_MAX:
        return
    check_product_bound(what, max_abs(x), m, k)


def check_product_bound(what, max_abs_x, m, k):
    """|x| * m + 2^(k-1) (and the left-shifted value for k < 0) must stay below 2^63."""
    m_max = int(np.max(np.abs(m))) if np.ndim(m) else abs(int(m))
    k_min = int(np.min(k)) if np.ndim(k) else int(k)
    bound = max_abs_x * m_max * (1 << max(-k_min, 0)) + (1 << 62)
    if bound > INT64_MAX:
        raise IntOverflowError(f"{what}: |x| up to {max_abs_x} times multiplier {m_max} "
                               f"exceeds the int64 intermediate (spec A4)")


# --- A6: requantize -------------------------------------------------------------------------------------

def requantize(x, m, k, out_fmt, axis=None):
    """y = sat(round_shift(x * m, k)) (spec A6). Per-tensor when m, k are scalars; per-channel
    along `axis` when they are 1-D arrays of that axis' length. Reference NumPy path."""
    x = integer_input("requantize", x)
    m, k = _channel_params(x, *check_multiplier("requantize", m, k), axis)
    if m.ndim == 0:
        check_product_bound("requantize", max_abs(x), m, k)
    else:               # each channel's values against its own pair (A4)
        ax = axis % x.ndim
        for c in range(m.size):
            check_product_bound("requantize", max_abs(np.take(x, c, axis=ax)), m.flat[c], k.flat[c])
    return saturate(round_shift(x.astype(np.int64) * m, k), out_fmt)


def _channel_params(x, m, k, axis):
    m = np.asarray(m, dtype=np.int64)
    k = np.asarray(k, dtype=np.int64)
    if m.ndim == 0 and k.ndim == 0:
        return m, k
    if axis is None:
        raise ArithSpecError("per-channel requantization needs the channel axis")
    ax = axis % x.ndim
    if m.shape != (x.shape[ax],) or k.shape != (x.shape[ax],):
        raise ArithSpecError(f"per-channel (m, k) of shape {m.shape}/{k.shape} does not match "
                               f"axis {axis} of length {x.shape[ax]}")
    shape = [1] * x.ndim
    shape[ax] = x.shape[ax]
    return m.reshape(shape), k.reshape(shape)


# --- model boundary: quantize / dequantize (float allowed only here) ----------------------------

def quantize(x, scale, fmt):
    """q = sat(round_half_even(x / scale)) for float input at the model boundary (spec A7).
    Rejects NaN/Inf with the count and position of the first one."""
    scale = check_scale("input scale", scale)
    x = np.asarray(x, dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ArithSpecError(f"quantize: {int(bad.sum())} NaN/Inf value(s) in the input, the "
                               f"first at index {first} ({x[first]})")
    return saturate(np.rint(x / scale), fmt)


def dequantize(q, scale):
    """x = q * scale, float64, at the model boundary only (spec A7)."""
    return np.asarray(q, dtype=np.float64) * np.asarray(scale, dtype=np.float64)
