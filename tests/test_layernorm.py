"""LayerNorm kernels (spec K4): isqrt (K4.1), isqrt-layernorm (K4.2), ivit-layernorm (K4.3)."""
from fractions import Fraction
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from intsim import floatfn
from intsim.arith import ArithSpecError, IntFormat, IntOverflowError
from intsim.kernels import get_kernel
from intsim.kernels.layernorm import (CANDIDATES, bit_length_ref, isqrt, isqrt_divisions, isqrt_ref,
                                      isqrt_layernorm, ivit_layernorm, ivit_std)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KERNELS = list(CANDIDATES.values())


# --- helpers ---------------------------------------------------------------------------------------

def make_rows(rng, pattern, rows, C, fmt, offset_frac=0.0):
    """Input rows of a named pattern inside fmt (the declared domain), int64."""
    lo, hi = fmt.lo, fmt.hi
    if pattern == "uniform":
        q = rng.integers(lo, hi + 1, (rows, C))
    elif pattern == "all_min":
        q = np.full((rows, C), lo)
    elif pattern == "all_max":
        q = np.full((rows, C), hi)
    elif pattern == "constant":
        q = np.repeat(rng.integers(lo, hi + 1, (rows, 1)), C, axis=1)
    elif pattern == "outlier":          # one extreme element, the rest at the other extreme
        q = np.full((rows, C), lo)
        q[np.arange(rows), rng.integers(0, C, rows)] = hi
    elif pattern == "alternating":      # largest possible variance
        q = np.where(np.arange(C) % 2 == 0, lo, hi) * np.ones((rows, 1), dtype=np.int64)
    elif pattern == "small_var":        # offset + tiny spread: eps and rounding matter most here
        centre = int(lo + (hi - lo) * offset_frac)
        q = np.clip(centre + rng.integers(-2, 3, (rows, C)), lo, hi)
    elif pattern == "gaussian":
        sd = max(1.0, (hi - lo) / 16)
        q = np.clip(np.rint(rng.normal(0, sd, (rows, C))), lo, hi)
    else:
        raise AssertionError(pattern)
    return q.astype(np.int64)


def residual_stream(rng, tokens=197, C=384, outliers=(5, 77, 200), bits=16):
    """A realistic LayerNorm input: per-channel scaled Gaussians plus a few massive outlier channels,
    quantized per tensor at max|x| (what the calibration observer picks)."""
    x = rng.normal(0, 1, (tokens, C)) * rng.lognormal(0, 0.5, C)
    x[:, list(outliers)] *= 40
    fmt = IntFormat(bits)
    S = float(np.abs(x).max() / fmt.hi)
    return np.clip(np.rint(x / S), fmt.lo, fmt.hi).astype(fmt.storage), S, fmt


def ln_params(rng, C):
    gamma = rng.normal(1.0, 0.3, C)
    gamma[rng.integers(0, C)] = 0.02          # a near-zero gamma (pitfall 8: no beta/gamma folding here)
    return gamma, rng.normal(0, 0.2, C)


def rhu_div(a, h):
    return a if h == 0 else (a + (1 << (h - 1))) >> h


def model_isqrt_ln(row, c, n_max):
    """Spec K4.2.2 + K4.0.3 in Python ints (no wrap possible), asserting every width K4.2.3 states."""
    C, p, u, E, F = c["C"], c["p"], c["u"], c["E"], c["F"]
    qt = [int(v) >> p for v in row]
    s, Q = sum(qt), sum(v * v for v in qt)
    assert C * Q < 2 ** 63 and s * s < 2 ** 63
    D = C * Q - s * s
    if D == 0:
        n = [0] * C
    else:
        R = (D << (2 * u)) + E
        assert R < 2 ** 62
        t = (62 - R.bit_length()) // 2
        N = R << (2 * t)
        assert 2 ** 60 <= N < 2 ** 62
        r = math.isqrt(N)
        f = 2 ** 56 // r
        sh = 56 - F - t - u
        assert 2 <= sh and 2 ** 25 < f <= 2 ** 26
        n = []
        for v in qt:
            P = (C * v - s) * f
            assert abs(P) < 2 ** 62
            n.append(P >> sh)
    return _model_affine(n, c, n_max)


def model_ivit_ln(row, c):
    """Spec K4.3.2 + K4.0.3 in Python ints; mean via Python's round (half to even) of an exact Fraction."""
    C = c["C"]
    q = [int(v) for v in row]
    mean = round(Fraction(sum(q), C))
    y = [v - mean for v in q]
    V = sum(v * v for v in y)
    assert V < 2 ** 63
    std = 1 << 16
    for _ in range(10):
        std = (std + V // std) >> 1
    assert std >= max(64, math.isqrt(V))
    f = (2 ** 31 - 1) // std
    n = [(v * f) >> 1 for v in y]
    return _model_affine(n, c, 1 << 30)


def _model_affine(n, c, n_max):
    out = []
    for nc, gc, bc in zip(n, c["g"], c["B"]):
        assert abs(nc) <= n_max
        out.append(rhu_div(nc * int(gc), c["h"]) + int(bc))
    lim = 2 ** (c["out_bits"] - 1)
    assert all(-lim <= o < lim for o in out)
    return out


def plan_for(kernel, S, fmt, gamma, beta, eps=1e-6, **opt):
    if kernel is ivit_layernorm:
        opt.pop("norm_bits", None)
    return kernel.plan(S, fmt, gamma=gamma, beta=beta, eps=eps, **opt)


# --- K4.1 isqrt -----------------------------------------------------------------------------------------

def test_isqrt_exhaustive_small():
    n = np.arange(1 << 20, dtype=np.int64)
    want = np.array([math.isqrt(int(v)) for v in n])
    assert np.array_equal(isqrt_ref(n), want)
    assert np.array_equal(isqrt(n), want)


def _adversarial_n(rng):
    s = [int(v) for v in rng.integers(1, 1 << 31, 300)] + [(1 << 30), (1 << 31) - 1, 3037000499]
    ns = [1 << 60, (1 << 62) - 1, 1 << 62, (1 << 63) - 1, (1 << 62) + 1, 2 ** 61]
    for v in s:
        ns += [v * v - 1, v * v, v * v + 1, v * v + 2 * v]          # squares, squares +-1, (v+1)^2 - 1
    return np.array([v for v in ns if 0 <= v < 2 ** 63], dtype=np.int64)


def test_isqrt_adversarial_large():
    n = _adversarial_n(np.random.default_rng(0))
    want = np.array([math.isqrt(int(v)) for v in n])
    assert np.array_equal(isqrt_ref(n), want)
    assert np.array_equal(isqrt(n), want)


@given(st.lists(st.integers(0, 2 ** 63 - 1), min_size=1, max_size=50))
@FAST
def test_isqrt_random_int64(vals):
    n = np.array(vals, dtype=np.int64)
    want = np.array([math.isqrt(v) for v in vals])
    assert np.array_equal(isqrt_ref(n), want)
    assert np.array_equal(isqrt(n), want)


@given(st.integers(0, 2 ** 62 - 1))
@FAST
def test_bit_length(v):
    assert int(bit_length_ref(np.int64(v))) == v.bit_length()


def test_isqrt_scalar_and_negative():
    assert int(isqrt(0)) == 0 and int(isqrt(1)) == 1 and int(isqrt(15)) == 3 and int(isqrt(16)) == 4
    with pytest.raises(ArithSpecError, match="K4.1"):
        isqrt_ref(np.array([4, -1]))
    with pytest.raises(ArithSpecError, match="K4.1"):
        isqrt(-5)
    with pytest.raises(ArithSpecError, match="K4.1"):
        isqrt_ref(2 ** 63)


def test_isqrt_worst_case_divisions_on_normalised_range():
    """K4.1.3: for N in [2^60, 2^62) (start 2^31) isqrt needs at most 7 divisions, and 7 occurs."""
    rng = np.random.default_rng(1)
    ns = [1 << 60, (1 << 60) + 1, (1 << 62) - 1] + [int(v) for v in rng.integers(1 << 60, 1 << 62, 3000)]
    ns += [s * s - 1 for s in range((1 << 30) + 1, (1 << 30) + 300)]
    counts = [isqrt_divisions(n) for n in ns]
    assert max(counts) == 7 and isqrt_divisions((1 << 60) + (1 << 31)) == 7   # ((2^30+1)^2 - 1)


# --- K4.3.3 the I-ViT Newton window ---------------------------------------------------------------------

def test_ivit_newton_known_cases():
    V = np.array([0, 100, 2 ** 32 - 1, 428 ** 2 - 1, 142882, 142883, 142884, 2 ** 40], dtype=np.int64)
    assert ivit_std(V).tolist() == [64, 64, 65536, 428, 378, 378, 378, 2 ** 20]
    # isqrt:                        0, 10, 65535, 427, 377, 377, 378, 2^20
    # 142882 is the largest V below which failures are not only of the form s^2 - 1 (142883 = 378^2 - 1)


def test_ivit_newton_window():
    """K4.3.3: exact for 142883 <= V < 2^44 except V+1 a perfect square (then isqrt or isqrt+1);
    fails below the window, and increasingly from about 2^44.1."""
    rng = np.random.default_rng(2)
    V = np.concatenate([np.arange(142883, 400000), rng.integers(142883, 1 << 44, 100000),
                        rng.integers(1 << 43, 1 << 44, 100000), np.array([(1 << 44) - 1])]).astype(np.int64)
    std, root = ivit_std(V), isqrt_ref(V)
    sq1 = isqrt_ref(V + 1) ** 2 == V + 1
    assert np.all(std[~sq1] == root[~sq1])
    assert np.all((std[sq1] == root[sq1]) | (std[sq1] == root[sq1] + 1))
    assert np.any(std[sq1] == root[sq1] + 1)                   # the oscillation does happen
    low = np.arange(0, 142883, dtype=np.int64)
    assert np.sum(ivit_std(low) != isqrt_ref(low)) > 10000
    high = rng.integers(1 << 46, 1 << 50, 200).astype(np.int64)
    assert np.all(ivit_std(high) != isqrt_ref(high))
    assert ivit_std(np.int64(19410157244412)) == math.isqrt(19410157244412) + 1     # ~2^44.14, not s^2-1


# --- fast == reference == spec model, over the declared domain --------------------------------------------

PATTERNS = ["uniform", "all_min", "all_max", "constant", "outlier", "alternating", "small_var", "gaussian"]


@given(kernel=st.sampled_from(KERNELS), seed=st.integers(0, 2 ** 32 - 1),
       C=st.sampled_from([1, 2, 3, 7, 64, 384, 768]), bits=st.integers(2, 24),
       lead=st.sampled_from([(1,), (5,), (2, 3), (3, 1, 2)]), pattern=st.sampled_from(PATTERNS),
       log2_scale=st.floats(-30, 10), eps=st.sampled_from([0.0, 1e-12, 1e-6, 1e-5, 0.1]),
       gamma_bits=st.sampled_from([2, 8, 16, 24]), out_bits=st.sampled_from([8, 16, 32]),
       norm_bits=st.sampled_from([4, 16, 24]), offset=st.floats(0, 1))
@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fast_equals_reference_equals_model(kernel, seed, C, bits, lead, pattern, log2_scale, eps,
                                            gamma_bits, out_bits, norm_bits, offset):
    rng = np.random.default_rng(seed)
    fmt = IntFormat(bits)
    gamma, beta = ln_params(rng, C)
    try:
        plan = plan_for(kernel, 2.0 ** log2_scale, fmt, gamma, beta, eps, gamma_bits=gamma_bits,
                        out_bits=out_bits, norm_bits=norm_bits)
    except ArithSpecError as e:      # K4.2.1: only an eps term too wide for the 62-bit register
        assert kernel is isqrt_layernorm and "eps" in str(e) and C * C * eps * 4.0 ** -log2_scale > 2 ** 40
        return
    rows = int(np.prod(lead))
    q = make_rows(rng, pattern, rows, C, fmt, offset).reshape(lead + (C,)).astype(fmt.storage)
    ref = kernel.reference([q], plan)
    fast = kernel.fast([q], plan)
    assert ref.dtype == fast.dtype == plan.out_fmt.storage and ref.shape == q.shape
    assert np.array_equal(ref, fast)
    for row, got in zip(q.reshape(-1, C)[:3], ref.reshape(-1, C)[:3]):
        want = (model_ivit_ln(row, plan.consts) if kernel is ivit_layernorm
                else model_isqrt_ln(row, plan.consts, plan.info["n_max"]))
        assert got.tolist() == want


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
@pytest.mark.parametrize("bits,C", [(16, 4096), (24, 4096), (24, 768), (22, 768), (2, 4096), (24, 1)])
def test_declared_extremes_no_overflow(kernel, bits, C):
    """Every extreme pattern at the largest widths: fast == reference == Python-int model with its
    width assertions (K4.2.3/K4.3.4), and the output inside out_fmt."""
    rng = np.random.default_rng(bits * 10000 + C)
    fmt = IntFormat(bits)
    gamma, beta = ln_params(rng, C)
    for S, eps in [(2.0 ** -(bits - 5), 1e-6), (2.0 ** -bits, 1e-5), (1.0, 0.0)]:
        plan = plan_for(kernel, S, fmt, gamma, beta, eps, gamma_bits=24, norm_bits=24)
        for pattern in ["all_min", "all_max", "outlier", "alternating", "small_var", "uniform"]:
            q = make_rows(rng, pattern, 2, C, fmt, 0.99)
            q[1] = -q[1] - 1 if pattern == "outlier" else q[1]          # and the mirrored outlier
            ref = kernel.reference([q], plan)
            assert np.array_equal(ref, kernel.fast([q], plan))
            assert plan.out_fmt.lo <= int(ref.min()) and int(ref.max()) <= plan.out_fmt.hi
            for row, got in zip(q, ref):
                want = (model_ivit_ln(row, plan.consts) if kernel is ivit_layernorm
                        else model_isqrt_ln(row, plan.consts, plan.info["n_max"]))
                assert got.tolist() == want


def test_preshift_only_where_needed():
    """K4.2.1: p = 0 up to 16 bits at C = 4096 and for I-BERT's 22 bits at C = 768; 24 bits at C = 4096
    needs p = 4."""
    g = np.ones(4096)
    assert isqrt_layernorm.plan(1e-3, IntFormat(16), gamma=g, beta=0 * g).info["p"] == 0
    g7 = np.ones(768)
    assert isqrt_layernorm.plan(2.0 ** -17, IntFormat(22), gamma=g7, beta=0 * g7).info["p"] == 0
    assert isqrt_layernorm.plan(2.0 ** -17, IntFormat(24), gamma=g, beta=0 * g).info["p"] == 4


# --- constant rows, C = 1 -------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
@pytest.mark.parametrize("eps", [0.0, 1e-6])
def test_constant_rows_give_beta(kernel, eps):
    rng = np.random.default_rng(3)
    C = 384
    gamma, beta = ln_params(rng, C)
    plan = plan_for(kernel, 1e-3, IntFormat(16), gamma, beta, eps)
    q = np.array([[-32768] * C, [32767] * C, [0] * C, [123] * C], dtype=np.int16)
    for out in (kernel.reference([q], plan), kernel.fast([q], plan)):
        assert np.all(out == plan.consts["B"])
        assert np.max(np.abs(out * plan.out_scale - beta)) <= plan.out_scale / 2


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
def test_row_length_one(kernel):
    plan = plan_for(kernel, 0.01, IntFormat(8), [2.0], [0.75])
    q = np.array([[-128], [5], [127]], dtype=np.int8)
    assert np.array_equal(kernel.fast([q], plan), kernel.reference([q], plan))
    assert np.abs(kernel.fast([q], plan) * plan.out_scale - 0.75).max() <= plan.out_scale / 2


# --- accuracy against float LayerNorm ------------------------------------------------------------------

def _check_bound(kernel, q, S, gamma, beta, eps, plan):
    out = kernel.fast([q], plan).astype(np.float64) * plan.out_scale
    want = kernel.float_reference(np.asarray(q, dtype=np.float64) * S, plan)
    err = np.abs(out - want)
    bound = kernel.error_bound(plan, [q])
    slack = 1e-9 * (np.abs(want) + 1)                  # float64 evaluation of the reference
    assert np.all(err[np.isfinite(bound)] <= bound[np.isfinite(bound)] + slack[np.isfinite(bound)])
    return err, bound


@given(seed=st.integers(0, 2 ** 32 - 1), C=st.sampled_from([2, 3, 16, 384, 1000]),
       bits=st.integers(4, 20), pattern=st.sampled_from(["uniform", "outlier", "small_var", "gaussian",
                                                          "alternating"]),
       log2_scale=st.floats(-24, 4), eps=st.sampled_from([1e-12, 1e-6, 1e-3]),
       gamma_bits=st.sampled_from([8, 16]), norm_bits=st.sampled_from([8, 16, 24]), offset=st.floats(0, 1))
@FAST
def test_isqrt_layernorm_error_bound(seed, C, bits, pattern, log2_scale, eps, gamma_bits, norm_bits, offset):
    """K4.2.4 holds for every element (p = 0 in this domain)."""
    rng = np.random.default_rng(seed)
    fmt = IntFormat(bits)
    gamma, beta = ln_params(rng, C)
    S = 2.0 ** log2_scale
    plan = isqrt_layernorm.plan(S, fmt, gamma=gamma, beta=beta, eps=eps, gamma_bits=gamma_bits,
                                norm_bits=norm_bits)
    assert plan.info["p"] == 0
    q = make_rows(rng, pattern, 4, C, fmt, offset)
    _check_bound(isqrt_layernorm, q, S, gamma, beta, eps, plan)


def test_isqrt_layernorm_error_bound_with_preshift():
    """K4.2.4 with the pre-shift term (24-bit input, C = 4096 -> p = 4)."""
    rng = np.random.default_rng(4)
    C, fmt = 4096, IntFormat(24)
    gamma, beta = ln_params(rng, C)
    plan = isqrt_layernorm.plan(1e-5, fmt, gamma=gamma, beta=beta)
    assert plan.info["p"] == 4
    q = np.concatenate([make_rows(rng, p, 2, C, fmt, 0.3) for p in ("uniform", "gaussian", "outlier")])
    err, bound = _check_bound(isqrt_layernorm, q, 1e-5, gamma, beta, 1e-6, plan)
    assert np.all(np.isfinite(bound))


def test_bound_is_not_vacuous():
    """The stated bound is tight enough to catch a kernel whose output is off by 3 * 2^-F (real)."""
    rng = np.random.default_rng(5)
    q, S, fmt = residual_stream(rng)
    gamma, beta = ln_params(rng, q.shape[-1])
    plan = isqrt_layernorm.plan(S, fmt, gamma=gamma, beta=beta)
    bound = isqrt_layernorm.error_bound(plan, [q])
    assert bound.max() < 2e-3 and np.median(bound) < 1e-4      # about |gamma| * 2^-16 + S_g/2 * |z|
    wrong = isqrt_layernorm.fast([q], plan) + round(3 * 2.0 ** -plan.consts["F"] / plan.out_scale)
    want = isqrt_layernorm.float_reference(q * S, plan)
    assert np.any(np.abs(wrong * plan.out_scale - want) > bound)


@given(seed=st.integers(0, 2 ** 32 - 1), C=st.sampled_from([16, 384, 768]),
       pattern=st.sampled_from(["uniform", "outlier", "gaussian"]), eps=st.sampled_from([0.0, 1e-6]))
@FAST
def test_ivit_layernorm_error_bound_in_window(seed, C, pattern, eps):
    """K4.3.4 holds on rows where the 10-step Newton equals isqrt (16-bit inputs, as I-ViT assumes)."""
    rng = np.random.default_rng(seed)
    fmt = IntFormat(16)
    gamma, beta = ln_params(rng, C)
    plan = ivit_layernorm.plan(1e-3, fmt, gamma=gamma, beta=beta, eps=eps)
    q = make_rows(rng, pattern, 4, C, fmt)
    _, bound = _check_bound(ivit_layernorm, q, 1e-3, gamma, beta, eps, plan)
    assert np.isfinite(bound).mean() > 0.5


def test_ivit_inexact_for_small_variance():
    """Outside the window (V < 142883: 8-bit rows) I-ViT's std stays too large: outputs shrink, while
    isqrt-layernorm stays within its bound."""
    rng = np.random.default_rng(6)
    C, fmt, S = 384, IntFormat(8), 0.05
    gamma, beta = np.ones(C), np.zeros(C)
    q = np.clip(np.rint(rng.normal(0, 3, (8, C))), -128, 127).astype(np.int8)
    ok, V = ivit_layernorm.exact_rows(q, {"C": C})
    assert not ok.any() and V.max() < 142883
    want = floatfn.layer_norm(q * S, gamma, beta, 1e-6)
    pi = ivit_layernorm.plan(S, fmt, gamma=gamma, beta=beta)
    got_iv = ivit_layernorm.fast([q], pi) * pi.out_scale
    shrink = isqrt_ref(V) / ivit_std(V)                          # std ~ 77 where isqrt(V) ~ 58
    assert np.all(shrink < 0.8)
    assert np.allclose(got_iv.std(-1) / want.std(-1), shrink, rtol=0.02)
    po = isqrt_layernorm.plan(S, fmt, gamma=gamma, beta=beta)
    _check_bound(isqrt_layernorm, q, S, gamma, beta, 1e-6, po)


def test_realistic_residual_stream_accuracy():
    """16-bit residual stream with outlier channels: ours is within its bound and well below ivit."""
    rng = np.random.default_rng(7)
    q, S, fmt = residual_stream(rng)
    gamma, beta = ln_params(rng, q.shape[-1])
    errs = {}
    for k in KERNELS:
        plan = k.plan(S, fmt, gamma=gamma, beta=beta)
        err, bound = _check_bound(k, q, S, gamma, beta, 1e-6, plan)
        errs[k.name] = (err.max(), np.sqrt(np.mean(err ** 2)))
    assert errs["isqrt-layernorm"][0] < 1e-3 and errs["isqrt-layernorm"][1] < 5e-5
    assert errs["isqrt-layernorm"][1] < errs["ivit-layernorm"][1]


def test_float_reference():
    x = np.array([[1.0, 2.0, 3.0, 6.0]])
    z = (x - 3.0) / math.sqrt(3.5 + 1e-6)
    got = floatfn.layer_norm(x, np.array([1, 2, 1, 1]), np.array([0, 0, 1, 0]), 1e-6)
    assert np.allclose(got, z * [1, 2, 1, 1] + [0, 0, 1, 0], rtol=1e-14)


# --- the worked examples of the spec ---------------------------------------------------------------------

def test_spec_worked_example():
    """docs K4.2.6 / K4.3.6 numbers."""
    q = np.array([[300, -100, 50, 6], [7, 7, 7, 7]], dtype=np.int16)
    gamma, beta = np.array([1.0, 0.5, 2.0, -1.0]), np.array([0.0, 0.25, -1.0, 0.5])
    p = isqrt_layernorm.plan(2.0 ** -8, IntFormat(16), gamma=gamma, beta=beta)
    c = p.consts
    assert (c["p"], c["u"], c["E"], c["h"]) == (0, 14, 281474977, 2)
    assert c["g"].tolist() == [16384, 8192, 32767, -16384]
    assert c["B"].tolist() == [0, 67106816, -268427264, 134213632]
    assert isqrt_layernorm.reference([q], p).tolist() == [[431665152, -82880512, -319642085, 240304128],
                                                        [0, 67106816, -268427264, 134213632]]
    assert p.out_scale == 2.0 / 32767 * 2.0 ** (2 - 16)         # S_g * 2^(h - F)
    v = ivit_layernorm.plan(2.0 ** -8, IntFormat(16), gamma=gamma, beta=beta)
    assert v.consts["h"] == 15
    assert ivit_layernorm.reference([q], v)[0].tolist() == [432428405, -83143731, -319730763, 240488410]


# --- plans, cost, registry --------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
def test_plan_consts_are_integers(kernel):
    plan = plan_for(kernel, 1e-3, IntFormat(16), np.linspace(-1, 2, 384), np.linspace(0, 1, 384))
    for name, v in plan.consts.items():
        assert isinstance(v, int) or (isinstance(v, np.ndarray) and v.dtype == np.int64), name
    assert plan.out_fmt.signed and plan.out_fmt.bits <= 32
    assert plan.info["out_max"] <= plan.out_fmt.hi
    assert get_kernel("layernorm", kernel.name) is kernel
    assert kernel.spec_section in ("K4.2", "K4.3") and kernel.family == "layernorm"


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
def test_cost(kernel):
    c384, c1 = kernel.cost((197, 384)), kernel.cost((1,))
    assert set(c384) == {"mul", "shift", "add", "div", "cmp"}
    assert 0 < c384["div"] < 0.05 and c1["div"] >= 8          # row divisions amortised over C
    assert all(c1[k] >= c384[k] for k in c384)
    assert kernel.cost((384,))["mul"] >= 3
    with pytest.raises(ArithSpecError):
        kernel.cost((0,))


def test_cost_counts_the_preshift():
    g = np.ones(4096)
    p4 = isqrt_layernorm.plan(2.0 ** -17, IntFormat(24), gamma=g, beta=0 * g)
    p0 = isqrt_layernorm.plan(2.0 ** -17, IntFormat(16), gamma=g, beta=0 * g)
    assert isqrt_layernorm.cost((4096,), plan=p4)["shift"] == isqrt_layernorm.cost((4096,), plan=p0)["shift"] + 1


# --- bad parameters -------------------------------------------------------------------------------------------

G = np.ones(8)
Z = np.zeros(8)


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
@pytest.mark.parametrize("kw,match", [
    (dict(in_fmt=0), "bits"), (dict(in_fmt=33), "bits"), (dict(in_fmt=IntFormat(32)), "in_fmt width"),
    (dict(in_fmt=IntFormat(8, signed=False)), "signed"), (dict(in_fmt=IntFormat(25)), "in_fmt width"),
    (dict(in_scale=0.0), "in_scale"), (dict(in_scale=-1.0), "in_scale"),
    (dict(in_scale=float("nan")), "in_scale"), (dict(in_scale=float("inf")), "in_scale"),
    (dict(gamma=np.ones(7)), "gamma has 7"), (dict(gamma=np.r_[G[:-1], np.nan]), "gamma has 1 NaN"),
    (dict(beta=np.r_[Z[:-1], np.inf]), "beta has 1 NaN"), (dict(gamma=np.ones(4097), beta=np.ones(4097)), "1..4096"),
    (dict(gamma=np.ones(0), beta=np.ones(0)), "1..4096"), (dict(gamma=np.ones((2, 4))), "1-D"),
    (dict(gamma=None), "gamma and beta"), (dict(eps=-1e-6), "eps"), (dict(eps=float("nan")), "eps"),
    (dict(gamma_bits=1), "gamma_bits"), (dict(gamma_bits=25), "gamma_bits"),
    (dict(out_bits=33), "out_bits"), (dict(out_bits=0), "out_bits"),
])
def test_bad_plan_parameters(kernel, kw, match):
    args = dict(in_scale=1e-3, in_fmt=IntFormat(16), gamma=G, beta=Z, eps=1e-6)
    args.update(kw)
    with pytest.raises(ArithSpecError, match=match):
        kernel.plan(args.pop("in_scale"), args.pop("in_fmt"), **args)


@pytest.mark.parametrize("F", [0, 3, 25, 33])
def test_bad_norm_bits(F):
    with pytest.raises(ArithSpecError, match="norm_bits"):
        isqrt_layernorm.plan(1e-3, IntFormat(16), gamma=G, beta=Z, norm_bits=F)


def test_eps_too_large_for_the_register():
    with pytest.raises(ArithSpecError, match="eps"):
        isqrt_layernorm.plan(1e-30, IntFormat(16), gamma=np.ones(4096), beta=np.zeros(4096), eps=1e30)


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
@pytest.mark.parametrize("path", ["reference", "fast"])
def test_bad_inputs(kernel, path):
    plan = plan_for(kernel, 1e-3, IntFormat(12), G, Z)
    fn = getattr(kernel, path)
    with pytest.raises(ArithSpecError, match="empty"):
        fn([np.zeros((0, 8), dtype=np.int16)], plan)
    with pytest.raises(ArithSpecError, match="last axis"):
        fn([np.zeros((2, 7), dtype=np.int16)], plan)
    with pytest.raises(ArithSpecError, match="integer"):
        fn([np.zeros((2, 8))], plan)
    with pytest.raises(ArithSpecError, match="at least one axis"):
        fn([np.int16(3)], plan)
    bad = np.zeros((3, 8), dtype=np.int16)
    bad[1, 2] = 2048                                      # 12-bit range is [-2048, 2047]
    with pytest.raises(IntOverflowError, match="1 value"):
        fn([bad], plan)
    with pytest.raises(IntOverflowError):
        fn([np.full((1, 8), 2 ** 64 - 1, dtype=np.uint64)], plan)
