"""Spec A1-A7 primitives and the requantize / matmul / residual-add kernels (K1, K5)."""
from fractions import Fraction
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, assume
from hypothesis.extra import numpy as hnp

from intsim import arith
from intsim.arith import IntFormat, ArithSpecError, IntOverflowError, dyadic
from intsim.kernels.requantize import requantize, requantize_ref
from intsim.kernels.matmul import matmul, matmul_ref, block_size
from intsim.kernels.add import residual_add, residual_add_ref

FAST = settings(max_examples=200, deadline=None)


def exact_requant(x, m, k, fmt):
    """The spec's definition with Python rationals: floor(x*m/2^k + 1/2), then saturate."""
    v = math.floor(Fraction(int(x) * int(m), 1) / Fraction(2) ** int(k) + Fraction(1, 2))
    return min(max(v, fmt.lo), fmt.hi)


# --- A1 formats ---------------------------------------------------------------------------------------
def test_format_ranges():
    assert (IntFormat(8).lo, IntFormat(8).hi) == (-128, 127)
    assert (IntFormat(8, narrow=True).lo, IntFormat(8, narrow=True).hi) == (-127, 127)
    assert (IntFormat(8, signed=False).lo, IntFormat(8, signed=False).hi) == (0, 255)
    assert (IntFormat(4).lo, IntFormat(4).hi) == (-8, 7)
    assert IntFormat(32).storage == np.int32 and IntFormat(9).storage == np.int16
    assert IntFormat(16, signed=False).storage == np.uint16


@pytest.mark.parametrize("bits", [0, 33, -1, 2.5, True, "8"])
def test_bad_widths_raise(bits):
    with pytest.raises(ArithSpecError, match="bits"):
        IntFormat(bits)


# --- A2 dyadic multipliers ---------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), None, "x"])
def test_bad_scale_raises(bad):
    with pytest.raises(ArithSpecError, match="positive finite"):
        dyadic(bad)


@pytest.mark.parametrize("bits", [0, 1, 32, 33])
def test_bad_multiplier_width(bits):
    with pytest.raises(ArithSpecError, match="multiplier width"):
        dyadic(0.5, bits)


@given(st.floats(min_value=2.0 ** -40, max_value=2.0 ** 20, allow_nan=False), st.integers(2, 31))
@FAST
def test_dyadic_is_normalised_and_nearest(real, bits):
    d = dyadic(real, bits)
    assert (1 << (bits - 1)) <= d.m < (1 << bits) or (d.k == arith.SHIFT_MAX and 0 < d.m < (1 << bits))
    # m is the nearest bits-bit mantissa: error at most half an LSB of m
    err = abs(Fraction(real) - d.value())
    assert err <= Fraction(1, 2) / Fraction(2) ** d.k


def test_dyadic_worked_examples():
    assert dyadic(1.0) == arith.Dyadic(1 << 30, 30)
    assert dyadic(0.75) == arith.Dyadic(3 << 29, 31)
    assert dyadic(0.1) == arith.Dyadic(1717986918, 34)
    # rounding reaches 2^bits -> renormalise to 2^(bits-1), k - 1
    assert dyadic(1 - 2 ** -40, 8) == arith.Dyadic(128, 7)
    # ratio above 2^bits -> negative k: exact left shift
    assert dyadic(1000.0, 8) == arith.Dyadic(250, -2)
    # tiny ratio -> denormal m at k = 62; below 2^-63 -> error
    assert dyadic(1e-12) == arith.Dyadic(4611686, 62)
    with pytest.raises(ArithSpecError):
        dyadic(2.0 ** -70)
    with pytest.raises(ArithSpecError):
        dyadic(2.0 ** 40, 8)


# --- A5 division: the jitted twin --------------------------------------------------------------------
def test_floor_div1_matches_python():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.integers(-2 ** 40, 2 ** 40, 20000), rng.integers(-50, 50, 2000),
                        [2 ** 31 - 1, -(2 ** 31), 0]])
    d = np.concatenate([rng.integers(1, 2 ** 31, 20000) * rng.choice([-1, 1], 20000),
                        rng.integers(1, 7, 2000) * rng.choice([-1, 1], 2000), [2, -3, 5]])
    got = np.array([arith.floor_div1(int(x), int(y)) for x, y in zip(a, d)])
    np.testing.assert_array_equal(got, np.array([int(x) // int(y) for x, y in zip(a, d)]))
    np.testing.assert_array_equal(arith.floor_div(a, d), got)


@given(st.integers(-(1 << 52), 0), st.integers(-(1 << 40), -1))
@settings(max_examples=500, deadline=None)
def test_floor_div1_of_nonpositive_by_negative(q, x0):
    """The softmax exponent split's case (q <= 0, x0 < 0), up to 2^52."""
    assert arith.floor_div1(q, x0) == q // x0


def test_floor_div1_edges():
    for x0 in (-1, -3, -7, -(1 << 31) + 1, -(1 << 40) + 3):
        for k in (0, 1, 2, 29, 30):
            for q in (k * x0, k * x0 - 1, k * x0 + 1):
                assert arith.floor_div1(q, x0) == q // x0, (q, x0)
                assert arith.floor_div1(q, -x0) == q // -x0, (q, -x0)
    with pytest.raises(ArithSpecError, match="division by zero"):
        arith.floor_div(np.array([1, 2]), np.array([1, 0]))


@pytest.mark.parametrize("k", [-3, 0, 1, 2, 62])
def test_round_shift1_is_round_shift(k):
    x = np.array([-(1 << 40) - 1, -7, -6, -5, -1, 0, 1, 5, 6, 7, 1 << 40], dtype=np.int64)
    got = [arith.round_shift1(int(v), k) for v in x]
    np.testing.assert_array_equal(got, arith.round_shift(x, k))


# --- A3 rounding --------------------------------------------------------------------------------------
def test_round_shift_ties_go_up():
    x = np.array([5, 3, 1, -1, -3, -5, 4, -4])
    assert arith.round_shift(x, 1).tolist() == [3, 2, 1, 0, -1, -2, 2, -2]
    assert arith.round_shift(np.array([-6, -2, 2, 6]), 2).tolist() == [-1, 0, 1, 2]
    assert arith.round_shift(np.array([3]), -2).tolist() == [12]


# --- A6 requantize ------------------------------------------------------------------------------------
fmts = st.builds(IntFormat, st.integers(2, 32), st.just(True), st.booleans()) | \
    st.builds(IntFormat, st.integers(1, 32), st.just(False), st.just(False))


@given(hnp.arrays(np.int64, hnp.array_shapes(max_dims=3, max_side=6),
                  elements=st.integers(-(1 << 31), (1 << 31) - 1)),
       st.floats(2.0 ** -35, 2.0 ** 8), st.integers(2, 31), fmts)
@FAST
def test_requantize_matches_rationals_and_fast_path(x, ratio, bits, fmt):
    d = dyadic(ratio, bits)
    ref = requantize_ref(x, d.m, d.k, fmt)
    assert ref.dtype == fmt.storage
    assert np.array_equal(ref, requantize(x, d.m, d.k, fmt))
    flat = x.ravel()[:20]
    assert [exact_requant(v, d.m, d.k, fmt) for v in flat] == ref.ravel()[:20].tolist()


@given(st.integers(1, 40), st.integers(-(1 << 20), 1 << 20))
@FAST
def test_requantize_ties(k, base):
    # x*m lands exactly on a half: x = (2*base + 1) * 2^(k-1), m = 1 -> exact value base + 1/2
    x = np.array([(2 * base + 1) << (k - 1)], dtype=np.int64)
    fmt = IntFormat(32)
    out = requantize_ref(x, 1, k, fmt)
    assert out[0] == base + 1 == exact_requant(x[0], 1, k, fmt)
    assert requantize(x, 1, k, fmt)[0] == base + 1


@given(hnp.arrays(np.int32, st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 4))),
       st.lists(st.floats(2.0 ** -30, 2.0 ** 8), min_size=5, max_size=5), st.integers(-3, 2),
       st.integers(2, 31))
@FAST
def test_requantize_per_channel(x, ratios, axis, bits):
    # narrow multipliers with large ratios give k < 0 (exact left shifts) on some channels
    assume(x.shape[axis] <= 5)
    m, k = arith.dyadic_array(ratios[:x.shape[axis]], bits)
    fmt = IntFormat(8)
    ref = requantize_ref(x, m, k, fmt, axis=axis)
    assert np.array_equal(ref, requantize(x, m, k, fmt, axis=axis))
    idx = np.ndindex(*x.shape)
    for i in list(idx)[:30]:
        c = i[axis % x.ndim]
        assert ref[i] == exact_requant(x[i], m[c], k[c], fmt)


def test_requantize_overflow_is_detected():
    x = np.array([1 << 40], dtype=np.int64)
    with pytest.raises(IntOverflowError):
        requantize(x, (1 << 31) - 1, 40, IntFormat(8))
    # per channel, channels innermost and not: the offending element is neither first nor last
    x = np.zeros((3, 4), dtype=np.int64)
    x[1, 2] = -(1 << 40)
    for axis in (-1, 0):
        n = x.shape[axis]
        with pytest.raises(IntOverflowError):
            requantize(x, np.full(n, (1 << 31) - 1), np.full(n, 40), IntFormat(8), axis=axis)
    with pytest.raises(ArithSpecError, match="axis"):
        requantize(np.zeros((2, 3), np.int32), np.array([1, 2, 3]), np.array([1, 1, 1]), IntFormat(8))


# --- A7 boundary quantizer ------------------------------------------------------------------------------
def test_quantize_ties_to_even_and_nan():
    q = arith.quantize(np.array([0.5, 1.5, 2.5, -0.5, -1.5, 300.0]), 1.0, IntFormat(8))
    assert q.tolist() == [0, 2, 2, 0, -2, 127]
    with pytest.raises(ArithSpecError, match=r"NaN/Inf.*index \(1,\)"):
        arith.quantize(np.array([0.0, np.nan]), 1.0, IntFormat(8))


# --- K1 matmul ----------------------------------------------------------------------------------------------
def python_matmul(a, b):
    return [[sum(int(a[i, t]) * int(b[t, j]) for t in range(a.shape[1])) for j in range(b.shape[1])]
            for i in range(a.shape[0])]


@pytest.mark.parametrize("av,bv", [(-128, -128), (127, -128), (-128, 127), (127, 127)])
def test_matmul_adversarial_k3072(av, bv):
    # every product at the extreme: 3072 * 2^14 = 2^25.6 > 2^24 - float32 alone would round
    a = np.full((2, 3072), av, dtype=np.int8)
    b = np.full((3072, 3), bv, dtype=np.int8)
    b[::7, 1] = -bv if bv != -128 else 127  # break uniformity a little
    i8 = IntFormat(8)
    fast = matmul(a, b, i8, i8)
    assert np.array_equal(fast, matmul_ref(a, b))
    assert fast.tolist() == python_matmul(a, b)


@given(st.integers(2, 8), st.integers(2, 8), st.integers(1, 40), st.integers(1, 3000),
       st.integers(1, 20), st.randoms(use_true_random=False))
@settings(max_examples=40, deadline=None)
def test_matmul_fast_equals_reference(abits, bbits, m, k, n, rnd):
    af, bf = IntFormat(abits), IntFormat(bbits, narrow=True)
    rng = np.random.default_rng(rnd.randint(0, 2 ** 32))
    a = rng.integers(af.lo, af.hi + 1, size=(m, k))
    b = rng.integers(bf.lo, bf.hi + 1, size=(k, n))
    bias = rng.integers(-(1 << 28), 1 << 28, size=n)
    assert np.array_equal(matmul(a, b, af, bf, bias=bias), matmul_ref(a, b, bias))


def test_matmul_block_sizes():
    assert block_size(IntFormat(8), IntFormat(8)) == 1024
    assert block_size(IntFormat(8), IntFormat(4)) == 16384
    assert block_size(IntFormat(8, signed=False), IntFormat(8)) == (1 << 24) // (255 * 128)


def test_matmul_errors():
    i8 = IntFormat(8)
    with pytest.raises(ArithSpecError, match="inner"):
        matmul(np.zeros((2, 3), int), np.zeros((4, 2), int), i8, i8)
    with pytest.raises(ArithSpecError, match="empty"):
        matmul(np.zeros((0, 3), int), np.zeros((3, 2), int), i8, i8)
    with pytest.raises(IntOverflowError, match="operand a"):
        matmul(np.full((1, 3), 300), np.zeros((3, 2), dtype=np.int8), i8, i8)
    with pytest.raises(ArithSpecError, match="integer"):
        matmul(np.zeros((1, 3)), np.zeros((3, 2)), i8, i8)
    for fast in (False, True):   # the bias pushes the exact sum past int32: K1.3 check, both paths
        a, b, bias = np.full((3, 4), 127), np.full((4, 2), 127), [(1 << 31) - 10, 0]
        with pytest.raises(IntOverflowError, match="accumulator"):
            matmul(a, b, i8, i8, bias=bias) if fast else matmul_ref(a, b, bias=bias)


# --- K5 residual add ---------------------------------------------------------------------------------------
@given(hnp.arrays(np.int64, st.integers(1, 50), elements=st.integers(-(1 << 23), 1 << 23)),
       st.floats(2.0 ** -12, 8.0), st.floats(2.0 ** -12, 8.0), st.integers(2, 24))
@FAST
def test_residual_add(a, ra, rb, bits):
    b = a[::-1].copy()
    da, db = dyadic(ra), dyadic(rb)
    fmt = IntFormat(bits)
    ref = residual_add_ref(a, b, da.m, da.k, db.m, db.k, fmt)
    assert np.array_equal(ref, residual_add(a, b, da.m, da.k, db.m, db.k, fmt))
    for i in range(min(10, a.size)):
        ya = math.floor(Fraction(int(a[i]) * da.m, 2 ** da.k) + Fraction(1, 2))
        yb = math.floor(Fraction(int(b[i]) * db.m, 2 ** db.k) + Fraction(1, 2))
        assert ref[i] == min(max(ya + yb, fmt.lo), fmt.hi)


@given(st.integers(1, 514), st.integers(1, 6), st.integers(1, 5), st.randoms(use_true_random=False))
@settings(max_examples=40, deadline=None)
def test_matmul_16bit_probabilities(k, m, n, rnd):
    # unsigned 16-bit softmax probabilities x int8 v: the float64 path of spec K1.2
    rng = np.random.default_rng(rnd.randint(0, 2 ** 32))
    u16 = IntFormat(16, signed=False)
    a = rng.integers(0, 65536 // k + 1, size=(2, m, k)).astype(np.uint16)   # rows sum <= 2^16
    b = rng.integers(-128, 128, size=(2, k, n)).astype(np.int8)
    a[0, 0] = 65535 // k
    assert np.array_equal(matmul(a, b, u16, IntFormat(8)), matmul_ref(a, b))


@given(st.lists(st.floats(2.0 ** -70, 2.0 ** 40, allow_nan=False), min_size=1, max_size=40),
       st.sampled_from([2, 3, 8, 16, 30, 31]))
@settings(max_examples=200, deadline=None)
def test_dyadic_array_is_dyadic_of_every_ratio(ratios, bits):
    """The vectorised per-channel multipliers equal the scalar rule of A2, or refuse alike."""
    def scalar(r):
        try:
            d = arith.dyadic(r, bits)
            return d.m, d.k
        except arith.ArithSpecError:
            return None
    want = [scalar(r) for r in ratios]
    if None in want:
        with pytest.raises(arith.ArithSpecError):
            arith.dyadic_array(np.array(ratios), bits)
    else:
        m, k = arith.dyadic_array(np.array(ratios), bits)
        assert list(zip(m.tolist(), k.tolist())) == want


@given(st.integers(-(1 << 80), 1 << 80), st.integers(1, 1 << 60))
def test_round_half_up_ratio_is_round_half_up_of_the_fraction(num, den):
    assert arith.round_half_up_ratio(num, den) == arith.round_half_up(Fraction(num, den))


@pytest.mark.parametrize("num, den, want", [(1, 2, 1), (-1, 2, 0), (3, 2, 2), (-3, 2, -1), (5, 4, 1), (-5, 4, -1)])
def test_round_half_up_ratio_ties_go_up(num, den, want):
    assert arith.round_half_up_ratio(num, den) == want
