"""GELU kernels, spec K3: poly-gelu (K3.1) with its fitter (K3.1.1), ibert-gelu (K3.2),
ivit-shiftgelu (K3.3)."""
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st
from scipy.special import erf

from intsim import reproducible
from intsim.arith import ArithSpecError, IntFormat, IntOverflowError
from intsim.kernels import gelu as G
from intsim.kernels.gelu import CANDIDATES, IBERT_GELU, IVIT_SHIFTGELU, POLY_GELU, fit_poly_gelu

SETTINGS = settings(max_examples=60, deadline=None)
NAMES = sorted(CANDIDATES)


def gelu(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def plan_of(name, scale, fmt, **kw):
    return CANDIDATES[name].plan(scale, fmt, **kw)


def codes(fmt):
    return np.arange(fmt.lo, fmt.hi + 1, dtype=np.int64)


def with_extremes(q, fmt):
    return np.concatenate([q.ravel(), [fmt.lo, fmt.hi, 0, 1, -1]]).astype(np.int64)


# --- fast == reference ---------------------------------------------------------------------------------

@st.composite
def planned_input(draw):
    name = draw(st.sampled_from(NAMES + ["ivit-elementwise"]))
    bits = draw(st.integers(2, 16))
    fmt = IntFormat(bits, narrow=draw(st.booleans()))
    scale = 2.0 ** draw(st.floats(-16, 6)) / 2 ** (bits - 1)
    kw = {}
    if name == "ivit-elementwise":
        name, kw = "ivit-shiftgelu", {"rowmax": False}
    try:
        plan = plan_of(name, scale, fmt, **kw)
    except ArithSpecError:
        assume(False)
    shape = draw(st.lists(st.integers(1, 7), min_size=0, max_size=3))
    n = int(np.prod(shape)) if shape else 1
    vals = draw(st.lists(st.one_of(st.integers(fmt.lo, fmt.hi),
                                   st.sampled_from([fmt.lo, fmt.hi, 0, 1, -1])),
                         min_size=n, max_size=n))
    q = np.array(vals, dtype=draw(st.sampled_from([fmt.storage, np.int64]))).reshape(shape)
    return CANDIDATES[name], plan, q


@pytest.mark.slow
@given(planned_input())
@settings(max_examples=200, deadline=None)
def test_fast_equals_reference(case):
    kernel, plan, q = case
    ref = kernel.reference([q], plan)
    fast = kernel.fast([q], plan)
    assert ref.shape == fast.shape == q.shape
    assert ref.dtype == fast.dtype == plan.out_fmt.storage
    np.testing.assert_array_equal(ref, fast)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bits", [8, 16])
def test_fast_equals_reference_every_code(name, bits):
    fmt = IntFormat(bits)
    for scale in (8 / 2 ** (bits - 1), 0.37 / 2 ** (bits - 1), 0.5):
        plan = plan_of(name, scale, fmt)
        q = codes(fmt)
        if name == "ivit-shiftgelu":   # rows of 2: every (x, row max) pair through one table-free row
            q = np.stack([q, np.roll(q, 7)], axis=1)
        np.testing.assert_array_equal(CANDIDATES[name].reference([q], plan),
                                      CANDIDATES[name].fast([q], plan))


def test_ivit_table_paths_match_reference():
    """fast() tabulates e1 (over m - v) and per-row outputs when the tensor is large enough; small
    tensors take the direct path. All must equal the reference."""
    rng = np.random.default_rng(3)
    for bits, scale, shape in ((8, 1 / 16, (5, 1536)), (8, 1 / 16, (3, 40)), (16, 8 / 2 ** 15, (90, 1536))):
        fmt = IntFormat(bits)
        q = rng.integers(fmt.lo, fmt.hi + 1, size=shape)
        q[0, :] = rng.integers(-3, 4, size=shape[1])          # a row of few values: row table
        for rowmax in (True, False):
            plan = IVIT_SHIFTGELU.plan(scale, fmt, rowmax=rowmax)
            np.testing.assert_array_equal(IVIT_SHIFTGELU.fast([q], plan),
                                          IVIT_SHIFTGELU.reference([q], plan))


@pytest.mark.parametrize("name", NAMES + ["ivit-elementwise"])
@pytest.mark.parametrize("bits", [4, 8, 12])
def test_a_bound_plan_looks_its_table_up_and_equals_the_reference(name, bits):
    """bind() turns an elementwise plan on an input of <= 12 bits into a table of its outputs
    (kernels.base.ElementTable); the table equals the reference on every code, in any input
    dtype, and an input outside the format is refused exactly as without the table."""
    kw = {}
    if name == "ivit-elementwise":
        name, kw = "ivit-shiftgelu", {"rowmax": False}
    kernel, fmt = CANDIDATES[name], IntFormat(bits)
    plan = plan_of(name, 1.5 / 2 ** (bits - 1), fmt, **kw)
    bound = kernel.bind(plan_of(name, 1.5 / 2 ** (bits - 1), fmt, **kw))
    assert (bound.runtime is not None) == kernel.elementwise(plan)
    rng = np.random.default_rng(bits)
    q = rng.permutation(np.tile(codes(fmt), 3)).reshape(3, -1)
    for dtype in (fmt.storage, np.int64, np.int32):
        np.testing.assert_array_equal(kernel.fast([q.astype(dtype)], bound), kernel.reference([q], plan))
    bad = q.copy()
    bad[1, 2] = fmt.hi + 1
    with pytest.raises(IntOverflowError) as without:
        kernel.fast([bad], plan)
    with pytest.raises(IntOverflowError) as with_table:
        kernel.fast([bad], bound)
    assert str(with_table.value) == str(without.value)


# --- accuracy: stated bounds (K3.1.4, K3.2.3, K3.3.4) -------------------------------------------------

SCALES8 = [16 / 128, 8 / 128, 4 / 128, 1 / 128, 0.3 / 128, 0.6]


@pytest.mark.parametrize("name", ["poly-gelu", "ibert-gelu"])
@pytest.mark.parametrize("scale", SCALES8)
def test_error_within_bound_exhaustive_8bit(name, scale):
    fmt = IntFormat(8)
    plan = plan_of(name, scale, fmt)
    q = codes(fmt)
    x = q * scale
    err = np.abs(CANDIDATES[name].fast([q], plan) * plan.out_scale - gelu(x))
    bound = CANDIDATES[name].bound_at(plan, x)
    assert np.all(err <= bound), (x[err > bound], err[err > bound], bound[err > bound])
    if name == "poly-gelu":
        assert bound.max() <= 0.0108          # K3.1.4 stated bound, any accepted scale


@pytest.mark.parametrize("scale", SCALES8)
def test_ivit_error_within_bound_exhaustive_8bit(scale):
    """Every (x, row max m) pair with m >= max(x, 0), and the elementwise variant."""
    fmt = IntFormat(8)
    q = codes(fmt)
    xs, ms = np.meshgrid(q, q[q >= 0], indexing="ij")
    keep = xs <= ms
    rows = np.stack([xs[keep], ms[keep]], axis=1)
    plan = IVIT_SHIFTGELU.plan(scale, fmt)
    out = IVIT_SHIFTGELU.fast([rows], plan)[:, 0] * plan.out_scale
    x = rows[:, 0] * scale
    bound = IVIT_SHIFTGELU.bound_at(plan, x, m=rows[:, 1] * scale)
    if plan.info["clamp_free_for_m_ge_0"]:
        assert np.all(np.isfinite(bound))
    err = np.abs(out - gelu(x))
    assert np.all(err <= bound)
    plan = IVIT_SHIFTGELU.plan(scale, fmt, rowmax=False)
    err = np.abs(IVIT_SHIFTGELU.fast([q], plan) * plan.out_scale - gelu(q * scale))
    bound = IVIT_SHIFTGELU.error_bound(plan, [q])
    assert np.all(np.isfinite(bound)) and np.all(err <= bound)


@pytest.mark.parametrize("name", NAMES + ["ivit-elementwise"])
@pytest.mark.parametrize("rng_x", [1.0, 4.0, 8.0, 16.0])
def test_error_within_bound_sampled_16bit(name, rng_x):
    fmt = IntFormat(16)
    scale = rng_x / 2 ** 15
    kw = {}
    if name == "ivit-elementwise":
        name, kw = "ivit-shiftgelu", {"rowmax": False}
    plan = plan_of(name, scale, fmt, **kw)
    q = with_extremes(np.random.default_rng(1).integers(fmt.lo, fmt.hi + 1, 6000), fmt)
    if name == "ivit-shiftgelu" and not kw:
        q = q[q <= 0]               # rows whose max is 0: m >= max(x, 0)
        q2 = np.stack([q, np.zeros_like(q)], axis=1)
        out = IVIT_SHIFTGELU.fast([q2], plan)[:, 0]
        bound = IVIT_SHIFTGELU.bound_at(plan, q * scale, m=np.zeros(q.shape))
    else:
        out = CANDIDATES[name].fast([q], plan)
        bound = CANDIDATES[name].error_bound(plan, [q])
    err = np.abs(out * plan.out_scale - gelu(q * scale))
    assert np.all(err <= bound)
    if name == "poly-gelu":
        assert bound.max() <= 0.0108


# Headline numbers of the K3 summary table (max |error| over all codes, scale = range / 2^(bits-1))
STATED_MAX = {("poly-gelu", 8): 0.0107, ("poly-gelu", 4): 0.0108,
              ("ibert-gelu", 8): 0.0239, ("ibert-gelu", 4): 0.0183}


@pytest.mark.parametrize("name,rng_x", sorted(STATED_MAX))
@pytest.mark.parametrize("bits", [8, 16])
def test_stated_summary_bounds(name, rng_x, bits):
    fmt = IntFormat(bits)
    scale = rng_x / 2 ** (bits - 1)
    plan = plan_of(name, scale, fmt)
    q = codes(fmt)
    err = np.abs(CANDIDATES[name].fast([q], plan) * plan.out_scale - gelu(q * scale))
    assert err.max() <= STATED_MAX[name, rng_x]


def test_poly_beats_ibert_on_4():
    """K3 summary: the default Poly-GELU has a lower max error than i-GELU on [-4, 4]."""
    fmt = IntFormat(16)
    scale = 4 / 2 ** 15
    q = codes(fmt)
    errs = {}
    for name in ("poly-gelu", "ibert-gelu"):
        plan = plan_of(name, scale, fmt)
        errs[name] = np.abs(CANDIDATES[name].fast([q], plan) * plan.out_scale - gelu(q * scale)).max()
    assert errs["poly-gelu"] < 0.65 * errs["ibert-gelu"]


def test_ibert_float_figure():
    """I-BERT's published i-GELU max error on [-4, 4] (float analysis) is about 0.018."""
    x = np.linspace(-4, 4, 80001)
    assert abs(np.abs(G.ibert_gelu_float(x) - gelu(x)).max() - 0.018) < 0.001


# --- output width: extremes fit, extreme scales plan or raise ------------------------------------------

@given(st.sampled_from(NAMES), st.integers(2, 16), st.floats(-40, 40), st.booleans())
@settings(max_examples=150, deadline=None)
def test_extreme_scales_plan_or_raise(name, bits, log2s, narrow):
    fmt = IntFormat(bits, narrow=narrow)
    scale = 2.0 ** log2s
    try:
        plan = plan_of(name, scale, fmt)
    except ArithSpecError as e:
        assert "in_scale" in str(e) or "n=" in str(e)
        return
    assert plan.out_fmt.bits <= 32 and plan.out_scale > 0
    for k, v in plan.consts.items():
        assert isinstance(v, int), (k, v)
    q = np.array([fmt.lo, fmt.lo + 1, -1, 0, 1, fmt.hi - 1, fmt.hi], dtype=np.int64)
    out = CANDIDATES[name].reference([q], plan)      # checks the output width itself
    np.testing.assert_array_equal(out, CANDIDATES[name].fast([q], plan))
    assert out.min() >= plan.out_fmt.lo and out.max() <= plan.out_fmt.hi
    assert out[3] == 0


@pytest.mark.parametrize("name", NAMES)
def test_output_format_is_tight_enough(name):
    """The declared format is the narrowest holding the proven bound: at 16-bit input the extremes
    use more than half of it."""
    fmt = IntFormat(16)
    plan = plan_of(name, 8 / 2 ** 15, fmt)
    out = CANDIDATES[name].fast([np.array([fmt.lo, fmt.hi])], plan)
    assert np.abs(out).max() > 2 ** (plan.out_fmt.bits - 3)


# --- bad parameters ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bits", [0, 1, 17, 33, 2.5, True])
def test_bad_in_fmt_raises(name, bits):
    with pytest.raises(ArithSpecError, match="in_fmt|bits"):
        plan_of(name, 0.1, bits)


@pytest.mark.parametrize("name", NAMES)
def test_bad_in_fmt_objects_raise(name):
    with pytest.raises(ArithSpecError):
        plan_of(name, 0.1, IntFormat(8, signed=False))
    with pytest.raises(ArithSpecError):
        plan_of(name, 0.1, IntFormat(24))
    with pytest.raises(ArithSpecError, match="bits"):
        plan_of(name, 0.1, IntFormat(33))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", [0, 0.0, -1, -1e-3, float("nan"), float("inf"), None, "x"])
def test_bad_scale_raises(name, scale):
    with pytest.raises(ArithSpecError, match="in_scale"):
        plan_of(name, scale, 8)


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise(name):
    plan = plan_of(name, 0.05, 8)
    k = CANDIDATES[name]
    for f in (k.reference, k.fast):
        with pytest.raises(ArithSpecError, match="empty"):
            f([np.zeros((0, 3), dtype=np.int8)], plan)
        with pytest.raises(ArithSpecError, match="integer"):
            f([np.array([0.5, 1.0])], plan)
        with pytest.raises(IntOverflowError):
            f([np.array([3, 128], dtype=np.int64)], plan)
        with pytest.raises(IntOverflowError):
            f([np.array([-129, 0], dtype=np.int16)], plan)
        with pytest.raises(IntOverflowError):
            f([np.array([2 ** 64 - 1], dtype=np.uint64)], plan)
    narrow = plan_of(name, 0.05, IntFormat(8, narrow=True))
    for f in (k.reference, k.fast):
        with pytest.raises(IntOverflowError, match="-127"):
            f([np.array([5, -128], dtype=np.int8)], narrow)


def test_poly_bad_ab_raise():
    for a, b in [(0.01, -2.7), (-0.02, 2.7), (0.0, -2.7), (float("nan"), -2.7), (-0.02, float("inf"))]:
        with pytest.raises(ArithSpecError, match="Poly-GELU"):
            POLY_GELU.plan(0.05, 8, a=a, b=b)
    with pytest.raises(ArithSpecError, match="both"):
        POLY_GELU.plan(0.05, 8, a=-0.02)
    with pytest.raises(ArithSpecError, match="output|bits"):       # |a| b^4 = 81: 1 + L way above 2
        POLY_GELU.plan(2 ** -15, 16, a=-1.0, b=-3.0)


def test_lost_function_and_overflow_raise():
    with pytest.raises(ArithSpecError, match="function is lost"):
        IBERT_GELU.plan(1 / 16, 8, n=14)            # I-BERT's n=14 at an 8-bit scale: 1.0 -> -1
    with pytest.raises(ArithSpecError, match="sigmoid would overflow"):
        IVIT_SHIFTGELU.plan(8 / 2 ** 15, 16, n=23)  # I-ViT's n=23 at a 16-bit scale
    with pytest.raises(ArithSpecError, match="too fine"):
        POLY_GELU.plan(1e-12, 8)
    with pytest.raises(ArithSpecError, match="too coarse"):
        POLY_GELU.plan(1e30, 8)


# --- plans and their documented choices -------------------------------------------------------------

def test_ibert_n_and_ivit_n_rules():
    for scale, bits in ((4 / 2 ** 15, 16), (8 / 2 ** 15, 16), (1e-6, 16), (1 / 16, 8)):
        p = IBERT_GELU.plan(scale, bits)         # n keeps 1.0 at 14 bits (I-BERT: n = 14 always)
        assert p.consts["n"] == max(0, abs(p.consts["c_int"]).bit_length() - 14)
        assert abs(p.consts["one"]).bit_length() == min(14, abs(p.consts["c_int"]).bit_length())
    assert IBERT_GELU.plan(1 / 16, 8).consts["n"] == 0
    assert IVIT_SHIFTGELU.plan(1 / 16, 8).consts["n"] == 23         # I-ViT's n at 8-bit scales
    p = IVIT_SHIFTGELU.plan(8 / 2 ** 15, 16)
    assert p.consts["n"] == 30 - (-p.consts["x0"]).bit_length()
    assert IVIT_SHIFTGELU.plan(8 / 2 ** 15, 16, rowmax=False).consts["n"] == 9


def test_poly_constants_worked_example():
    """The worked example of K3.1.5 (in_scale = 1/16, int8, default a, b)."""
    p = POLY_GELU.plan(1 / 16, 8)
    c = p.consts
    assert (c["GL"], c["GR"], c["B"], c["S2"], c["TWO_ONE"]) == (8, 0, 15750, 4, 65536)
    assert (c["mA"], c["kA"]) == (10031, 46) and p.out_fmt.bits == 24
    q = np.array([-128, -20, -1, 0, 1, 20, 127])
    np.testing.assert_array_equal(POLY_GELU.reference([q], p),
                                  [0, -142180, -32090, 0, 33446, 1168540, 8323072])


def test_ibert_matches_ibert_float_code():
    """Bit-exact against a float64 transcription of I-BERT's IntGELU (our output is its negation)."""
    for scale, bits in ((1 / 16, 8), (4 / 2 ** 15, 16), (2e-5, 16)):
        plan = IBERT_GELU.plan(scale, bits)
        fmt = IntFormat(bits)
        q = codes(fmt).astype(np.float64)
        S1 = scale / 1.4142
        b_int = np.floor(-1.769 / S1)
        c_int = np.floor((1 / -0.2888) / S1 ** 2)
        y = np.sign(q) * ((np.minimum(np.abs(q), -b_int) + b_int) ** 2 + c_int)
        s_erf = S1 ** 2 * -0.2888
        n = plan.consts["n"]
        y = np.floor(y / 2 ** n)
        s_erf = s_erf * 2 ** n
        out = q * (y + np.floor(1.0 / s_erf))
        np.testing.assert_array_equal(IBERT_GELU.fast([codes(fmt)], plan), -out)
        assert math.isclose(plan.out_scale, -scale * s_erf / 2, rel_tol=1e-15)


def ivit_float_code(q, scale, n):
    """float64 transcription of I-ViT's IntGELU.forward (PyTorch): exact here, all values < 2^53
    except e2 for positive arguments, which the clamp removes anyway."""
    pre = q.astype(np.float64)
    s_sig = scale * 1.702

    def int_exp_shift(x):
        x = x + np.floor(x / 2) - np.floor(x / 2 ** 4)
        x0 = np.floor(-1.0 / s_sig)
        x = np.maximum(x, n * x0)
        z = np.floor(x / x0)
        r = x - x0 * z
        e = r / 2 - x0
        return np.maximum(np.floor(e * 2.0 ** (n - z)), 0)

    m = pre.max(axis=-1, keepdims=True)
    e1 = int_exp_shift(pre - m)
    e2 = int_exp_shift(-m)
    total = np.minimum(e1 + e2, 2 ** 31 - 1)
    factor = np.floor((2 ** 31 - 1) / total)
    sig = np.floor(e1 * factor / 2 ** (31 - 8 + 1))
    return pre * sig


@pytest.mark.parametrize("scale", [1 / 16, 1 / 64, 0.005, 0.9])
def test_ivit_matches_ivit_float_code(scale):
    """Bit-exact against a float64 transcription of I-ViT's PyTorch ShiftGELU, including rows whose
    max is negative (positive exponent input, sum clamp) and I-ViT's n = 23."""
    rng = np.random.default_rng(7)
    q = rng.integers(-128, 128, size=(300, 9))
    q[:40] = -(np.abs(q[:40]) % 128) - 1            # all-negative rows
    plan = IVIT_SHIFTGELU.plan(scale, 8)
    assert plan.consts["n"] == 23
    np.testing.assert_array_equal(IVIT_SHIFTGELU.fast([q], plan), ivit_float_code(q, scale, 23))


def test_float_reference_and_cost():
    x = np.array([-3.0, -1.0, 0.0, 1.0, 2.0])
    for k in CANDIDATES.values():
        np.testing.assert_allclose(k.float_reference(x),
                                   [-0.0040496, -0.1586553, 0.0, 0.8413447, 1.9544997], atol=1e-7)
        c = k.cost((197, 1536), plan=k.plan(0.05, 8))
        assert set(c) == {"mul", "shift", "add", "div", "cmp"} and all(v >= 0 for v in c.values())
        assert k.family == "gelu" and k.spec_section.startswith("K3.")
    elementwise = IVIT_SHIFTGELU.plan(0.05, 8, rowmax=False)
    assert IVIT_SHIFTGELU.cost((1536,))["div"] == pytest.approx(2 + 1 / 1536)
    assert IVIT_SHIFTGELU.cost((1536,), elementwise)["div"] == 3
    assert POLY_GELU.cost((1536,)) == {"mul": 4, "shift": 3, "add": 3, "div": 0, "cmp": 3}
    assert IBERT_GELU.cost((1536,))["div"] == 0


# --- K3.1.1 the fitter --------------------------------------------------------------------------------

def vit_like(seed, n=50000):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(-0.8, 1.0, n), rng.normal(2.0, 1.5, n // 10)])


def test_uniform_fit_reproduces_paper():
    a, b = fit_poly_gelu()
    assert a < 0 and b < 0
    assert abs(a - (-0.0191)) < 1e-4 and abs(b - (-2.719)) < 1e-3
    assert G.default_poly_ab() == (a, b)
    p = POLY_GELU.plan(0.05, 8)
    assert (p.info["a"], p.info["b"], p.info["fit"]) == (a, b, "uniform")


def test_fit_is_deterministic_and_order_free():
    d = vit_like(0)
    ab = fit_poly_gelu(d)
    assert fit_poly_gelu(d.copy()) == ab
    assert fit_poly_gelu(np.random.default_rng(5).permutation(d)) == ab
    assert ab[0] < 0 and ab[1] < 0


@given(st.integers(0, 10 ** 6), st.floats(-2, 1), st.floats(0.2, 3))
@settings(max_examples=15, deadline=None)
def test_data_aware_fit_beats_uniform_on_its_data(seed, mu, sigma):
    d = np.random.default_rng(seed).normal(mu, sigma, 20000)
    a, b = fit_poly_gelu(d)
    a0, b0 = fit_poly_gelu()
    assert a < 0 and b < 0

    def mse(a_, b_):
        return np.mean((G.poly_gelu_float(d, a_, b_) - gelu(d)) ** 2)
    assert mse(a, b) <= mse(a0, b0) * (1 + 1e-3)


def test_data_aware_fit_gains_on_vit_like_data():
    d = vit_like(1)
    a, b = fit_poly_gelu(d)
    a0, b0 = fit_poly_gelu()

    def mse(a_, b_):
        return np.mean((G.poly_gelu_float(d, a_, b_) - gelu(d)) ** 2)
    assert mse(a, b) < 0.5 * mse(a0, b0)
    p = POLY_GELU.plan(0.05, 8, sample=d)
    assert (p.info["a"], p.info["b"], p.info["fit"]) == (a, b, "fit_data")
    p = POLY_GELU.plan(0.05, 8, a=-0.02, b=-2.6)
    assert (p.info["a"], p.info["b"], p.info["fit"]) == (-0.02, -2.6, "given")


def test_fit_range_restricts_samples():
    d = vit_like(2)
    assert fit_poly_gelu(d, lo=-3, hi=3) == fit_poly_gelu(d[(d >= -3) & (d <= 3)], lo=-3, hi=3)
    assert fit_poly_gelu(d, lo=-3, hi=3) != fit_poly_gelu(d)


@pytest.mark.parametrize("bad", [[1.0, float("nan"), 2.0], [0.5, float("inf")], [], [1.5],
                                 [2.0, 2.0, 2.0], np.full(100, -0.3)])
def test_fit_bad_data_raises(bad):
    with pytest.raises(ArithSpecError, match="fit data"):
        fit_poly_gelu(np.array(bad, dtype=np.float64))


def test_fit_bad_range_raises():
    with pytest.raises(ArithSpecError, match="fit range"):
        fit_poly_gelu(lo=2.0, hi=-2.0)
    with pytest.raises(ArithSpecError, match="fit data"):
        fit_poly_gelu([50.0, 60.0, 70.0])           # nothing inside the erf ramp


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 2500), st.floats(0.1, 6.0), st.integers(0, 2 ** 32 - 1))
def test_fit_grid_costs_equal_the_one_b_profile(n, spread, seed):
    """K3.1.1's profile is evaluated 64 values of b at a time: the same costs, bit for bit, as the
    profile of one b written out (the same element operations and sequential row sums), inside a
    grid or alone."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n) * spread
    w = rng.uniform(0.0, 1.0, size=n) * (x * x / 4.0)
    u = x / G.SQRT2
    sgn, au = np.sign(u), np.abs(u)
    r0 = sgn - erf(u)

    def one(b):
        t = np.minimum(au, -b) + b
        t = t * t
        h = sgn * (t * t)
        shh, shr = reproducible.total(w * h * h), reproducible.total(w * h * r0)
        return math.inf if shh <= 0.0 else reproducible.total(w * r0 * r0) - shr * shr / shh

    grid = reproducible.linspace(G.FIT_B_RANGE[0], G.FIT_B_RANGE[1], G.FIT_B_GRID)
    assert [cost for cost, _ in G._profiles(grid, au, sgn, r0, w)] == [one(b) for b in grid]
    assert [G._profiles([b], au, sgn, r0, w)[0][0] for b in grid[::50]] == [one(b) for b in grid[::50]]
