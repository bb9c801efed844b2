"""Post-training quantization: the configuration, streaming observers, weight quantizers."""
import numpy as np
import pytest

from intsim.arith import ArithSpecError, IntFormat
from intsim.quantize import RESERVOIR, Observer, QuantConfig, quantize_bias, quantize_weight


@pytest.mark.parametrize("bad", [{"wbits": 1}, {"abits": 9}, {"residual_bits": 25}, {"act_calib": "max"},
                                 {"weight_calib": "pct"}, {"equalize": 1.5}, {"percentile": 40}])
def test_config_is_validated(bad):
    with pytest.raises(ArithSpecError):
        QuantConfig(**bad)


def test_config_round_trips_and_refuses_unknown_settings():
    c = QuantConfig(wbits=4, overrides={"a": "poly-gelu"})
    assert QuantConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ArithSpecError, match="unknown quantization settings"):
        QuantConfig.from_dict({"wbitz": 4})


def test_observer_streams_exact_extremes_and_a_bounded_sample():
    r = np.random.default_rng(0)
    batches = [r.standard_normal((8, 50, 4)).astype(np.float32) * (i + 1) for i in range(5)]
    obs = Observer("t")
    for b in batches:
        obs.update(b)
    allv = np.concatenate([b.ravel() for b in batches])
    assert obs.lo == float(allv.min()) and obs.hi == float(allv.max()) and obs.count == allv.size
    np.testing.assert_array_equal(obs.chan_absmax, np.abs(np.concatenate(batches).reshape(-1, 4)).max(0))
    assert obs.sample.size == min(allv.size, RESERVOIR) and not obs.nonnegative
    again = Observer("t")
    for b in batches:
        again.update(b)
    np.testing.assert_array_equal(again.sample, obs.sample)          # seeded: reproducible


def test_scales_by_method():
    obs = Observer("t")
    obs.update(np.concatenate([np.linspace(-1, 1, 10001), [8.0]]).astype(np.float32))
    fmt = IntFormat(8)
    assert obs.scale(fmt, "minmax") == 8.0 / 127
    assert obs.scale(fmt, "percentile", 99.0) < 1.0 / 127 * 1.01
    mse = obs.scale(fmt, "mse")
    assert mse < 8.0 / 127 and obs.scale(fmt, "mse") is mse          # searched once, remembered
    zero = Observer("z")
    zero.update(np.zeros(10))
    assert zero.scale(fmt, "mse") == 1.0 and zero.nonnegative
    with pytest.raises(ArithSpecError, match="never observed"):
        Observer("n").scale(fmt)
    with pytest.raises(ArithSpecError, match="NaN"):
        Observer("x").update(np.array([1.0, np.nan]))


def test_weights_per_output_channel_in_the_narrow_range():
    w = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [100.0, 1.0, -3.0]])
    q, s = quantize_weight(w, 8, "minmax")
    assert q.dtype == np.int8 and q.min() >= -127 and q[0, 1] == -127 and q[2, 0] == 127
    np.testing.assert_allclose(s, [1.0 / 127, 1.0, 100.0 / 127])
    assert np.all(q[1] == 0)
    q4, _ = quantize_weight(w, 4, "mse")
    assert q4.min() >= -7 and q4.max() <= 7
    np.testing.assert_array_equal(quantize_bias(np.array([0.5, -1.5]), np.array([1.0, 1.0])), [0, -2])
    with pytest.raises(ArithSpecError, match="int32"):
        quantize_bias(np.array([1e10]), np.array([1.0]))


# --- the numba clip searches are the written definition: each candidate's squared errors of
# clip(rint(x * (1 / s)), lo, hi) * s - x summed in index order (a cumulative sum's last value) --------

def sequential_sum(v):
    return float(np.cumsum(v)[-1]) if np.size(v) else 0.0


def mse_clip_numpy(sample, amax, fmt, steps=100):
    """The search written out in NumPy (the definition the numba pass computes)."""
    x = np.asarray(sample, dtype=np.float64)
    best, best_err = amax, np.inf
    for i in range(steps, 0, -1):
        clip = amax * i / steps
        s = clip / fmt.hi if clip > 0 else 1.0
        d = np.clip(np.rint(x * (1.0 / s)), fmt.lo, fmt.hi) * s - x
        err = sequential_sum(d * d) / x.size
        if err < best_err:
            best, best_err = clip, err
    return best


def weight_clips_numpy(w, fmt):
    flat = np.asarray(w, dtype=np.float64).reshape(w.shape[0], -1)
    amax = np.abs(flat).max(axis=1)
    clip = amax.copy()
    for r in range(flat.shape[0]):
        best_err = np.inf
        for i in range(100, 30, -1):
            c = amax[r] * i / 100
            s = c / fmt.hi if c > 0 else 1.0
            d = np.clip(np.rint(flat[r] * (1.0 / s)), fmt.lo, fmt.hi) * s - flat[r]
            err = sequential_sum(d * d) / flat.shape[1]
            if err < best_err:
                best_err, clip[r] = err, c
    return np.where(clip > 0, clip / fmt.hi, 1.0)


@pytest.mark.parametrize("n", [1, 7, 8, 127, 128, 129, 1000, 8193, 32768])
@pytest.mark.parametrize("fmt", [IntFormat(8), IntFormat(4, signed=False), IntFormat(16)])
def test_mse_clip_equals_the_numpy_search(n, fmt):
    from intsim.quantize import mse_clip
    rng = np.random.default_rng(n)
    for scale in (1e-3, 1.0, 40.0):
        x = (rng.standard_normal(n) * scale).astype(np.float32)
        x = np.abs(x) if not fmt.signed else x
        amax = float(np.abs(x).max())
        assert mse_clip(x, amax, fmt) == mse_clip_numpy(x, amax, fmt)


@pytest.mark.parametrize("shape", [(1, 3), (16, 192), (7, 768), (3, 1536), (4, 2, 3, 3)])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_weight_clip_search_equals_the_numpy_search(shape, bits):
    from intsim.quantize import weight_format
    rng = np.random.default_rng(bits)
    w = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    w[0] = 0                                     # a zero channel keeps scale 1
    q, s = quantize_weight(w, bits)
    assert np.array_equal(s, weight_clips_numpy(w, weight_format(bits)))


def test_observer_statistics_are_exact():
    rng = np.random.default_rng(0)
    o = Observer("t")
    xs = [(rng.standard_normal((2, 9, 5)) * 3).astype(np.float32) for _ in range(3)]
    for x in xs:
        o.update(x)
    allx = np.concatenate([x.reshape(-1, 5) for x in xs])
    assert (o.lo, o.hi) == (float(allx.min()), float(allx.max()))
    assert np.array_equal(o.chan_absmax, np.abs(allx).max(axis=0))
    with pytest.raises(ArithSpecError, match="NaN/Inf"):
        o.update(np.array([1.0, np.inf], np.float32))


@pytest.mark.parametrize("sizes, kind", [((100, 700, 2000), "normal"), ((5000, 3), "normal"),
                                         ((3000, 3000), "ties"), ((4000,), "heavy"), ((1500, 1500), "zeros")])
def test_observer_top_values_over_batches_of_any_size(sizes, kind):
    """The kept top values are exactly the TOP largest |x| (as a multiset) whatever the batches:
    smaller than TOP, ties at the edge, a heavy tail, zeros."""
    from intsim.quantize import TOP
    rng = np.random.default_rng(len(sizes))
    make = {"normal": lambda n: rng.standard_normal(n),
            "ties": lambda n: rng.integers(-3, 4, n).astype(float),
            "heavy": lambda n: rng.standard_cauchy(n),
            "zeros": lambda n: np.where(rng.random(n) < 0.9, 0.0, rng.standard_normal(n))}[kind]
    xs = [make(n).astype(np.float32) for n in sizes]
    o = Observer("t")
    for x in xs:
        o.update(x)
    allx = np.abs(np.concatenate(xs))
    k = min(TOP, allx.size)
    assert np.array_equal(np.sort(np.abs(o.top)), np.sort(allx)[allx.size - k:])


def test_observer_keeps_the_largest_values_exactly():
    from intsim.quantize import TOP
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((64, 300)).astype(np.float32) for _ in range(3)]
    xs[1][5, 7] = 90.0                                  # one outlier among 57600 values
    o = Observer("t")
    for x in xs:
        o.update(x)
    allx = np.concatenate([x.ravel() for x in xs])
    assert o.top.size == TOP
    assert np.array_equal(np.sort(np.abs(o.top)), np.sort(np.abs(allx))[-TOP:])
    assert np.array_equal(o.top_chan[np.argmax(o.top)], 7)
    top, rest, weight = o.split_sample()
    assert np.abs(rest).max() < np.abs(top).min() and weight * rest.size == pytest.approx(allx.size - TOP)
    # a clip that cuts the one outlier: mse-top weighs it as one value, not as a missed one
    fmt = IntFormat(8)
    assert o.scale(fmt, "mse-top") * fmt.hi <= 90.0


def mse_top_clip_numpy(top, rest, weight, amax, fmt, steps=100):
    t, r = np.asarray(top, dtype=np.float64), np.asarray(rest, dtype=np.float64)
    best, best_err = amax, np.inf
    for i in range(steps, 0, -1):
        clip = amax * i / steps
        s = clip / fmt.hi

        def sq(v):
            d = np.clip(np.rint(v * (1.0 / s)), fmt.lo, fmt.hi) * s - v
            return sequential_sum(d * d)
        err = sq(t) + weight * sq(r)
        if err < best_err:
            best, best_err = clip, err
    return best


@pytest.mark.parametrize("n", [0, 5, 1024, 9000])
def test_mse_top_clip_equals_the_numpy_search(n):
    from intsim.quantize import mse_top_clip
    rng = np.random.default_rng(n)
    for fmt in (IntFormat(8), IntFormat(12), IntFormat(4, signed=False)):
        rest = rng.standard_normal(n).astype(np.float32)
        top = (rng.standard_normal(100) * 30).astype(np.float32)
        if not fmt.signed:
            rest, top = np.abs(rest), np.abs(top)
        amax = float(np.abs(top).max())
        assert mse_top_clip(top, rest, 37.5, amax, fmt) == mse_top_clip_numpy(top, rest, 37.5, amax, fmt)


def test_wide_and_smooth_are_validated():
    with pytest.raises(ArithSpecError, match="wide operand"):
        QuantConfig(wide={"fc2": 17})
    with pytest.raises(ArithSpecError, match="pattern"):
        QuantConfig(wide={"fc2(": 12})
    with pytest.raises(ArithSpecError, match="smooth"):
        QuantConfig(smooth=2.0)


def test_threads_change_no_set_up_result():
    """The row-parallel set-up loops (intsim.parallel) give the serial loop's results: weight
    clip searches and the float GELU on one thread and on numba's threads."""
    import numba
    from intsim import parallel
    from intsim.floatfn import gelu
    from intsim.quantize import quantize_weight
    rng = np.random.default_rng(5)
    w = rng.standard_normal((301, 384))                 # 301 rows: uneven chunks
    x = rng.standard_normal(1 << 17).astype(np.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        serial = quantize_weight(w, 4), gelu(x)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        threaded = quantize_weight(w, 4), gelu(x)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(serial[0][0], threaded[0][0])
    np.testing.assert_array_equal(serial[0][1], threaded[0][1])
    np.testing.assert_array_equal(serial[1], threaded[1])
    assert parallel.chunks(10, 3) == [(0, 4), (4, 8), (8, 10)]


def _clips_in_child(w, q):
    from intsim.quantize import quantize_weight
    q.put(quantize_weight(w, 8)[1])


def test_set_up_threads_survive_a_fork():
    """A process forked after the row-parallel pool exists (multiprocessing's default on Linux)
    gets a pool of its own: it inherits the pool object, not its threads (it used to hang)."""
    import multiprocessing as mp
    import queue
    from intsim.quantize import quantize_weight
    w = np.random.default_rng(0).standard_normal((400, 400))
    want = quantize_weight(w, 8)[1]             # the parent's pool now exists
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_clips_in_child, args=(w, q))
    p.start()
    try:
        got = q.get(timeout=60)
    except queue.Empty:
        pytest.fail("the forked child hung in the row-parallel pool")
    finally:
        p.join(5)
        if p.is_alive():
            p.kill()
    np.testing.assert_array_equal(got, want)


def test_grouped_weight_scales_are_integer_multiples_of_the_rows_base():
    """quantize_weight_grouped (docs/quantization.md Q13): q in the narrow format, multipliers in
    [1, 2^M - 1] with the row's largest group at 2^M - 1, a shorter last group, an all-zero group
    at the smallest multiple; on rows whose groups differ in range the error is below one scale
    per row."""
    from intsim.kernels.matmul import grouped_weight
    from intsim.quantize import quantize_weight_grouped
    rng = np.random.default_rng(5)
    w = rng.normal(size=(8, 40)) * np.repeat(rng.gamma(1.0, size=(8, 4)), 10, axis=1)[:, :40]
    w[3, 10:20] = 0.0
    q, base, mult = quantize_weight_grouped(w, 4, 12, scale_bits=5)
    assert q.shape == w.shape and np.abs(q).max() <= 7 and mult.shape == (8, 4)
    assert mult.min() >= 1 and (mult.max(axis=1) == 31).all() and mult[3, 0] >= 1
    assert not q[3, 10:20].any()
    real = grouped_weight(q, mult, 12) * base[:, None]
    q1, s1 = quantize_weight(w, 4)
    assert np.sum((real - w) ** 2) < np.sum((q1 * s1[:, None] - w) ** 2)
