"""Sigmoid and QuickGELU kernels (spec K8): fast = reference bit for bit, the stated error bound over
every input code, symmetry and monotonicity, the gain folded into the exponential, the worked
example of docs/arithmetic.md (K8.1.6), parameter and input errors."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from intsim.arith import ArithSpecError, IntFormat, IntOverflowError
from intsim.kernels import candidates, get_kernel
from intsim.kernels.sigmoid import bitshift_quickgelu, bitshift_sigmoid, quickgelu_out_fmt

FAST = settings(max_examples=80, deadline=None)
KERNELS = (bitshift_sigmoid, bitshift_quickgelu)


@st.composite
def plans(draw, kernel=None):
    kernel = kernel or draw(st.sampled_from(KERNELS))
    signed = draw(st.booleans())
    bits = draw(st.integers(2 if signed else 1, 16))
    fmt = IntFormat(bits, signed=signed, narrow=signed and draw(st.booleans()))
    # scales from "every code saturates" to "every code is near 1/2"
    s = 2.0 ** draw(st.floats(-bits - 12, 6 - bits / 2))
    gain = draw(st.sampled_from([1.0, 1.702, 0.37, 4.0]))
    out_bits = draw(st.integers(2, 16))
    if kernel is bitshift_quickgelu and bits + out_bits + (not signed) > 32:
        out_bits = 32 - bits - 1             # an unsigned 16-bit input with O = 16 needs 33 bits
    return kernel, kernel.plan(s, fmt, out_bits, gain=gain), fmt


def codes(fmt):
    return np.arange(fmt.lo, fmt.hi + 1, dtype=np.int64)


def real_out(kernel, plan, out):
    return out.astype(np.float64) * plan.out_scale


@given(plans(), st.integers(0, 2 ** 32 - 1), st.sampled_from(["all", "random"]))
@FAST
def test_fast_equals_reference(kp, seed, kind):
    kernel, plan, fmt = kp
    q = codes(fmt) if kind == "all" else \
        np.random.default_rng(seed).integers(fmt.lo, fmt.hi + 1, (3, 5, 7))
    q = q.astype(fmt.storage)
    ref, fast = kernel.reference([q], plan), kernel.fast([q], plan)
    assert ref.dtype == fast.dtype == plan.out_fmt.storage and ref.shape == q.shape
    np.testing.assert_array_equal(ref, fast)


@given(plans())
@FAST
def test_error_within_stated_bound_on_every_code(kp):
    kernel, plan, fmt = kp
    q = codes(fmt)
    out = kernel.fast([q], plan)
    err = np.abs(real_out(kernel, plan, out) - kernel.float_reference(q * plan.in_scale, plan))
    bound = kernel.error_bound(plan, [q])
    assert np.all(err <= bound), float(np.max(err - bound))
    if kernel is bitshift_sigmoid:
        o = plan.out_fmt.bits
        assert np.max(bound) <= max(2.0 ** -o, 2.0 ** -(o + 1) + 1e-4) + 1e-9


@given(plans(bitshift_sigmoid))
@FAST
def test_sigmoid_is_monotone_symmetric_and_exact_at_zero(kp):
    kernel, plan, fmt = kp
    q = codes(fmt)
    out = kernel.fast([q], plan).astype(np.int64)
    o = plan.out_fmt.bits
    assert np.all(np.diff(out) >= 0)
    if fmt.lo <= 0 <= fmt.hi:
        assert out[q == 0][0] == 1 << (o - 1)
    both = q[(q > 0) & (-q >= fmt.lo)]
    if both.size:
        up, down = (kernel.fast([v], plan).astype(np.int64) for v in (both, -both))
        # out(q) + out(-q) = 2^O except where the upper half saturates at 2^O - 1
        np.testing.assert_array_equal(np.where(down == 0, (1 << o) - 1, (1 << o) - down), up)


@given(plans(bitshift_quickgelu))
@FAST
def test_quickgelu_is_the_exact_product_of_input_and_sigmoid(kp):
    kernel, plan, fmt = kp
    q = codes(fmt)
    sig = bitshift_sigmoid.plan(plan.in_scale, fmt, plan.consts["out_bits"],
                                gain=plan.info["gain"])
    np.testing.assert_array_equal(kernel.fast([q], plan).astype(np.int64),
                                  q * bitshift_sigmoid.fast([q], sig).astype(np.int64))
    assert plan.out_fmt == quickgelu_out_fmt(fmt, plan.consts["out_bits"])


def test_gain_is_folded_into_the_exponential_constant():
    fmt = IntFormat(8)
    a = bitshift_sigmoid.plan(0.25, fmt, 16, gain=2.0)
    b = bitshift_sigmoid.plan(0.5, fmt, 16)
    assert a.consts["K"] == b.consts["K"] and a.consts["G"] == b.consts["G"]
    clip = bitshift_quickgelu.plan(0.05, fmt)
    assert clip.info["gain"] == 1.702 and math.isclose(clip.info["exp_scale"], 0.05 * 1.702)
    assert abs(clip.info["K_rel_error"]) <= 2.0 ** -17


def test_worked_example():
    """docs/arithmetic.md K8.1.6: int8, S = 0.125, O = 8."""
    plan = bitshift_sigmoid.plan(0.125, IntFormat(8), 8)
    assert (plan.consts["K"], plan.consts["G"]) == (189096, 0)
    q = np.array([-20, -7, 0, 7, 20])
    np.testing.assert_array_equal(bitshift_sigmoid.reference([q], plan), [19, 75, 128, 181, 237])
    qg = bitshift_quickgelu.plan(0.125, IntFormat(8), 8)
    np.testing.assert_array_equal(bitshift_quickgelu.reference([q], qg), [-80, -329, 0, 1463, 5040])


def test_quickgelu_output_wider_than_32_bits_is_refused():
    with pytest.raises(ArithSpecError, match="33 bits"):
        bitshift_quickgelu.plan(0.1, IntFormat(16, signed=False), 16)


def test_saturation_at_the_top_is_one_lsb():
    plan = bitshift_sigmoid.plan(0.5, IntFormat(8), 8)
    out = bitshift_sigmoid.fast([np.array([127, -128])], plan)
    np.testing.assert_array_equal(out, [255, 0])


def test_registered_as_families_and_in_the_config():
    from intsim.quantize import QuantConfig
    assert get_kernel("sigmoid", "bitshift-sigmoid") is bitshift_sigmoid
    assert list(candidates("quickgelu")) == ["bitshift-quickgelu"]
    cfg = QuantConfig()
    assert (cfg.sigmoid, cfg.quickgelu) == ("bitshift-sigmoid", "bitshift-quickgelu")


@pytest.mark.parametrize("kernel", KERNELS)
def test_plan_holds_integer_constants_only(kernel):
    plan = kernel.plan(0.03, IntFormat(8), 16)
    for v in plan.consts.values():
        assert isinstance(v, (int, np.integer)) or v.dtype.kind == "i"


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("bad", [dict(in_scale=0.0), dict(in_scale=float("nan")), dict(gain=-1.0),
                                 dict(out_bits=1), dict(out_bits=17), dict(in_fmt=IntFormat(17)),
                                 dict(in_fmt=8), dict(in_scale=1e-30), dict(in_scale=1e12)])
def test_bad_plan_parameters(kernel, bad):
    args = dict(in_scale=0.1, in_fmt=IntFormat(8), out_bits=16, gain=1.0) | bad
    with pytest.raises(ArithSpecError):
        kernel.plan(args["in_scale"], args["in_fmt"], args["out_bits"], gain=args["gain"])


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("path", ["reference", "fast"])
def test_bad_inputs(kernel, path):
    plan = kernel.plan(0.1, IntFormat(6), 8)
    run = getattr(kernel, path)
    with pytest.raises(IntOverflowError, match="outside"):
        run([np.array([0, 40])], plan)
    with pytest.raises(ArithSpecError, match="integer"):
        run([np.array([0.5])], plan)
    with pytest.raises(ArithSpecError, match="empty"):
        run([np.zeros(0, np.int8)], plan)


def test_cost_counts_one_division_and_the_product():
    plan = bitshift_sigmoid.plan(0.125, IntFormat(8), 8)
    c = bitshift_sigmoid.cost((4, 4), plan)
    assert c["div"] == 1 and c["mul"] == 0
    assert bitshift_quickgelu.cost((4,), bitshift_quickgelu.plan(0.125, IntFormat(8)))["mul"] == 1
