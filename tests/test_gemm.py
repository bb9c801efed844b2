"""The exact GEMM engines (spec K1.1-K1.5): every engine returns the int64 reference's integers, or
every engine raises the same overflow."""
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from intsim import execute, golden
from intsim.cli import main
from intsim.arith import ArithSpecError, IntFormat, IntOverflowError
from intsim.kernels import gemm as G
from intsim.kernels.matmul import matmul

REPO = Path(__file__).resolve().parents[1]
ORT = G._ort_runtime() is not None
ENGINES = [e for e in ("ort", "blas", "numba", "reference") if e != "ort" or ORT]
needs_ort = pytest.mark.skipif(not ORT, reason="onnxruntime not installed or not exact here")

# activation-side formats: 2..8 bits signed and unsigned, 16-bit probabilities and activations
A_FORMATS = ([IntFormat(b) for b in range(2, 9)] + [IntFormat(b, signed=False) for b in range(1, 9)]
             + [IntFormat(16, signed=False), IntFormat(16), IntFormat(12)])
# weight / second-operand formats: narrow weights, full signed activations, unsigned, 16-bit
B_FORMATS = ([IntFormat(b, narrow=True) for b in range(2, 9)] + [IntFormat(b) for b in (2, 5, 8)]
             + [IntFormat(b, signed=False) for b in (1, 8)] + [IntFormat(16), IntFormat(16, signed=False)])


def outcome(fn):
    """The integers, or the overflow every engine must raise alike."""
    try:
        return fn()
    except IntOverflowError:
        return "overflow"


def same(x, y):
    if isinstance(x, str) or isinstance(y, str):
        return x == y
    return x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)


def values(rng, fmt, shape, kind):
    """Random codes of fmt; or every code at one end of the range (the adversarial cases)."""
    if kind == "lo":
        return np.full(shape, fmt.lo, dtype=fmt.storage)
    if kind == "hi":
        return np.full(shape, fmt.hi, dtype=fmt.storage)
    return rng.integers(fmt.lo, fmt.hi + 1, size=shape).astype(fmt.storage)


@st.composite
def products(draw):
    a_fmt, b_fmt = draw(st.sampled_from(A_FORMATS)), draw(st.sampled_from(B_FORMATS))
    m, k, n = draw(st.integers(1, 24)), draw(st.sampled_from([1, 2, 3, 7, 64, 65, 197, 385])), draw(st.integers(1, 19))
    a_batch, b_batch = draw(st.sampled_from([((), ()), ((2,), ()), ((2, 3), (2, 3)), ((3,), (3,)),
                                             ((2, 1), (1, 3)), ((), (2,))]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    a = values(rng, a_fmt, a_batch + (m, k), draw(st.sampled_from(["rand", "rand", "lo", "hi"])))
    b = values(rng, b_fmt, b_batch + (k, n), draw(st.sampled_from(["rand", "rand", "lo", "hi"])))
    bias = draw(st.sampled_from([None, "rand", "max"]))
    if bias == "rand":
        bias = rng.integers(-(1 << 30), 1 << 30, size=n).astype(np.int32)
    elif bias == "max":
        bias = np.full(n, (1 << 31) - 1, dtype=np.int64)
    return a, b, a_fmt, b_fmt, bias


@pytest.mark.slow
@given(products())
@settings(max_examples=80, deadline=None)
def test_every_engine_equals_the_reference(case):
    a, b, a_fmt, b_fmt, bias = case
    want = outcome(lambda: G.gemm_reference(a, b, bias))
    for engine in ENGINES + ["auto"]:
        got = outcome(lambda: G.gemm(a, b, a_fmt, b_fmt, bias, engine=engine))
        assert same(got, want), (engine, a_fmt.describe(), b_fmt.describe(), a.shape, b.shape)


@given(products())
@settings(max_examples=40, deadline=None)
def test_prepared_weights_equal_the_reference(case):
    a, b, a_fmt, b_fmt, bias = case
    b = b[(0,) * (b.ndim - 2)]                       # a weight is (K, N)
    want = outcome(lambda: G.gemm_reference(a, b, bias))
    for engine in ENGINES[:-1]:
        w = G.prepare_weight(b, b_fmt, engine)
        got = outcome(lambda: G.gemm(a, None, a_fmt, None, bias, b_prepared=w))
        assert same(got, want), (engine, a_fmt.describe(), b_fmt.describe())


@needs_ort
@given(products())
@settings(max_examples=40, deadline=None)
def test_ort_with_7_bit_digits_equals_the_reference(case):
    """The digit width CPUs without VNNI get (K1.5): exercised here, where it is exact too."""
    a, b, a_fmt, b_fmt, bias = case
    saved = dict(G._ORT_RUNTIME)
    G._ORT_RUNTIME["runtime"] = (saved["runtime"][0], 7)
    try:
        want = outcome(lambda: G.gemm_reference(a, b, bias))
        assert same(outcome(lambda: G.gemm(a, b, a_fmt, b_fmt, bias, engine="ort")), want)
        if b.ndim == 2:
            w = G.prepare_weight(b, b_fmt, "ort")
            assert same(outcome(lambda: G.gemm(a, None, a_fmt, None, bias, b_prepared=w)), want)
    finally:
        G._ORT_RUNTIME.clear()
        G._ORT_RUNTIME.update(saved)


@pytest.mark.parametrize("fmt,n_digits", [(IntFormat(8), 1), (IntFormat(8, narrow=True), 1), (IntFormat(2), 1),
                                           (IntFormat(8, signed=False), 2), (IntFormat(15), 2),
                                           (IntFormat(14, signed=False), 2), (IntFormat(16), 3),
                                           (IntFormat(15, signed=False), 3), (IntFormat(16, signed=False), 3)])
def test_balanced_digits_recombine_every_code(fmt, n_digits):
    codes = np.arange(fmt.lo, fmt.hi + 1).reshape(1, -1)                 # (K, N) = (1, codes)
    side_by_side, weights = G._signed_digits(codes, fmt)                 # (1, Db N)
    digits = side_by_side.reshape(len(weights), -1)
    assert len(weights) == n_digits and digits.dtype == np.int8
    assert np.array_equal(sum(w * d.astype(np.int64) for w, d in zip(weights, digits)), codes[0])


@pytest.mark.parametrize("digit_bits", [8, 7])
@pytest.mark.parametrize("fmt", [IntFormat(8), IntFormat(3), IntFormat(16), IntFormat(12),
                                 IntFormat(16, signed=False), IntFormat(8, signed=False), IntFormat(1, signed=False)])
def test_unsigned_digits_recombine_every_code(fmt, digit_bits):
    codes = np.arange(fmt.lo, fmt.hi + 1).astype(fmt.storage).reshape(1, 1, -1)   # (G, M, K)
    stacked, weights, offset = G._unsigned_digits(codes, fmt, digit_bits)         # (G, Da M, K)
    digits = stacked.reshape(len(weights), -1)
    assert digits.dtype == np.uint8 and int(digits.max()) < 1 << digit_bits
    assert len(weights) == -(-fmt.bits // digit_bits)
    assert offset == (1 << (fmt.bits - 1) if fmt.signed else 0)
    assert np.array_equal(sum(w * d.astype(np.int64) for w, d in zip(weights, digits)) - offset, codes[0, 0])


def python_product(a, b):
    return [[sum(int(a[i, t]) * int(b[t, j]) for t in range(a.shape[1])) for j in range(b.shape[1])]
            for i in range(a.shape[0])]


@pytest.mark.parametrize("av,bv", [(-128, -128), (127, -128), (-128, 127), (127, 127), (-128, 0)])
@pytest.mark.parametrize("engine", ENGINES)
def test_extremes_at_large_k(engine, av, bv):
    # every product at the extreme: 3072 x 2^14 > 2^24 (one float32 sum would round) and
    # (a + 128) b = 255 x 127 per term, the products a saturating int16 pair would get wrong
    a = np.full((3, 3072), av, dtype=np.int8)
    b = np.full((3072, 4), bv, dtype=np.int8)
    b[::7, 1] = 127 if bv < 0 else -128
    got = G.gemm(a, b, IntFormat(8), IntFormat(8), engine=engine)
    assert got.tolist() == python_product(a, b)


@pytest.mark.parametrize("engine", ENGINES)
def test_16_bit_probabilities_at_their_extremes(engine):
    p = np.full((2, 1, 5, 197), 65535, dtype=np.uint16)
    p[0, 0, 1] = 0
    p[1, 0, 2, ::3] = 256                       # a digit boundary: hi = 1, lo = 0
    v = np.full((2, 1, 197, 3), -128, dtype=np.int8)
    v[..., 1] = 127
    want = G.gemm_reference(p, v)
    assert same(G.gemm(p, v, IntFormat(16, signed=False), IntFormat(8), engine=engine), want)
    assert want[0, 0, 0, 0] == 65535 * -128 * 197


@pytest.mark.parametrize("engine", ENGINES)
def test_accumulator_overflow_is_detected_never_wrapped(engine):
    a, b = np.full((2, 4), 127, dtype=np.int8), np.full((4, 3), 127, dtype=np.int8)
    with pytest.raises(IntOverflowError, match="accumulator"):
        G.gemm(a, b, IntFormat(8), IntFormat(8), bias=[(1 << 31) - 10, 0, 0], engine=engine)
    with pytest.raises(IntOverflowError, match="accumulator"):       # below: -2^31 - 1
        G.gemm(-a, b, IntFormat(8), IntFormat(8), bias=[0, -(1 << 31) + 4 * 127 * 127 - 1, 0], engine=engine)
    # exactly at the edge: fits
    edge = G.gemm(a, b, IntFormat(8), IntFormat(8), bias=[(1 << 31) - 1 - 4 * 127 * 127, 0, 0], engine=engine)
    assert edge[0, 0] == (1 << 31) - 1
    # 16 x 16 bits: the exact sum leaves int32 without any bias
    big = np.full((1, 3), 32767, dtype=np.int16)
    with pytest.raises(IntOverflowError, match="accumulator"):
        G.gemm(big, big.T.copy(), IntFormat(16), IntFormat(16), engine=engine)


@needs_ort
def test_ort_int32_bound_falls_back_or_refuses():
    """K (2^8 - 1) 128 <= 2^31 - 1 bounds K at 65793 for the int32 digit products (K1.5)."""
    k_ok, k_over = 65793, 65794
    assert G._ort_applicable(k_ok, G._ort_runtime(), IntFormat(8), IntFormat(8))
    assert not G._ort_applicable(k_over, G._ort_runtime(), IntFormat(8), IntFormat(8))
    a = np.full((1, k_over), -128, dtype=np.int8)
    b = np.full((k_over, 1), -128, dtype=np.int8)
    with pytest.raises(ArithSpecError, match="engine 'ort'.*K=65794"):
        G.gemm(a, b, IntFormat(8), IntFormat(8), engine="ort")
    with pytest.raises(ArithSpecError, match="engine 'ort'.*K=65794"):
        G.prepare_weight(b, IntFormat(8), "ort")
    assert G.choose_engine(64, k_over, 64, IntFormat(8), IntFormat(8)) == "blas"
    assert G.gemm(a, b, IntFormat(8), IntFormat(8))[0, 0] == k_over * 128 * 128
    assert G.gemm(a[:, :k_ok], b[:k_ok], IntFormat(8), IntFormat(8), engine="ort")[0, 0] == k_ok * 128 * 128


def test_without_onnxruntime_everything_runs_on_blas(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)       # import onnxruntime -> ImportError
    monkeypatch.setattr(G, "_ORT_RUNTIME", {})
    assert "ort" not in G.available_engines()
    assert G.choose_engine(6304, 384, 1152, IntFormat(8), IntFormat(8)) == "blas"
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (300, 384)).astype(np.int8)
    w = rng.integers(-127, 128, (384, 100)).astype(np.int8)
    prepared = G.prepare_weight(w, IntFormat(8, narrow=True))
    assert prepared.engine == "blas"
    assert same(G.gemm(a, None, IntFormat(8), None, b_prepared=prepared), G.gemm_reference(a, w))
    with pytest.raises(ArithSpecError, match="'ort' is not available: onnxruntime is not installed"):
        G.gemm(a, w, IntFormat(8), IntFormat(8, narrow=True), engine="ort")


def test_no_exact_digit_width_means_no_ort(monkeypatch):
    monkeypatch.setattr(G, "_ORT_RUNTIME", {})
    monkeypatch.setattr(G, "_probe_exact", lambda runtime: False)
    assert G._ort_runtime() is None and "not exact on this CPU" in G._ORT_RUNTIME["why"]
    monkeypatch.setattr(G, "_ORT_RUNTIME", {})
    monkeypatch.setattr(G, "_probe_exact", lambda runtime: runtime[1] == 7)
    if ORT:
        assert G._ort_runtime()[1] == 7


def test_operands_are_checked_against_their_formats():
    a = np.full((2, 3), 200, dtype=np.int16)
    b = np.ones((3, 2), dtype=np.int8)
    for engine in ENGINES:
        with pytest.raises(IntOverflowError, match="operand a: value 200"):
            G.gemm(a, b, IntFormat(8), IntFormat(8), engine=engine)
        with pytest.raises(IntOverflowError, match="operand b: value 200"):
            G.gemm(b.T.copy(), a.T.copy(), IntFormat(8), IntFormat(8), engine=engine)
    with pytest.raises(IntOverflowError, match="weight: value -128"):
        G.prepare_weight(np.full((3, 2), -128, dtype=np.int8), IntFormat(8, narrow=True))


def test_bad_calls_name_what_is_wrong():
    i8 = IntFormat(8)
    a, b = np.zeros((2, 3), np.int8), np.zeros((3, 4), np.int8)
    with pytest.raises(ArithSpecError, match="unknown matmul engine 'gpu'"):
        G.gemm(a, b, i8, i8, engine="gpu")
    with pytest.raises(ArithSpecError, match="batch dimensions do not broadcast"):
        G.gemm(np.zeros((2, 2, 3), np.int8), np.zeros((3, 3, 4), np.int8), i8, i8)
    with pytest.raises(ArithSpecError, match="integer input required"):
        G.gemm(a.astype(np.float32), b, i8, i8)
    with pytest.raises(IntOverflowError, match="bias: value 2147483648"):
        G.gemm(a, b, i8, i8, bias=np.full(4, 1 << 31))
    w = G.prepare_weight(b, i8)
    with pytest.raises(ArithSpecError, match="prepared for s8"):
        G.gemm(a, None, i8, IntFormat(4), b_prepared=w)
    with pytest.raises(ArithSpecError, match="weight is \\(K, N\\)"):
        G.prepare_weight(np.zeros((2, 3, 4), np.int8), i8)


def test_prepared_weight_pickles_as_its_operand():
    w = np.arange(-6, 6, dtype=np.int8).reshape(4, 3)
    prepared = G.prepare_weight(w, IntFormat(8))
    again = pickle.loads(pickle.dumps(prepared))
    assert again.engine == prepared.engine and np.array_equal(again.b, w)
    a = np.arange(8, dtype=np.int8).reshape(2, 4)
    assert same(G.gemm(a, None, IntFormat(8), None, b_prepared=again), G.gemm_reference(a, w))


def test_use_engine_scopes_auto(monkeypatch):
    ran = []
    for name, fn in list(G.ENGINE_FUNCTIONS.items()):
        monkeypatch.setitem(G.ENGINE_FUNCTIONS, name, lambda *args, _n=name, _f=fn: ran.append(_n) or _f(*args))
    a, b = np.ones((2, 3), np.int8), np.ones((3, 2), np.int8)
    with G.use_engine("numba"):
        assert G.scoped_engine() == "numba"
        matmul(a, b, IntFormat(8), IntFormat(8))
        G.gemm(a, b, IntFormat(8), IntFormat(8), engine="blas")     # an explicit engine wins
    matmul(a, b, IntFormat(8), IntFormat(8))                          # tiny: auto takes blas
    assert ran == ["numba", "blas", "blas"] and G.scoped_engine() == "auto"
    with pytest.raises(ArithSpecError, match="unknown matmul engine"):
        with G.use_engine("fast"):
            pass


# --- the committed golden sets: every K1 op through the executor, on every engine ------------------

K1_KINDS = ("patch_embed", "linear", "attn_scores", "attn_context")


@pytest.mark.parametrize("name", ["fmnist_w8a8", "fmnist_w4a8"])
def test_committed_golden_sets_every_k1_op_on_every_engine(name):
    """The committed program, run by the executor on every engine: each matrix product's integers
    equal the golden tensors."""
    g = golden.load(REPO / "golden" / name)
    program = golden.load_program(REPO / "golden" / name)
    want = {v.name: v.outputs[0] for v in g.ops if v.kind in K1_KINDS}
    assert len(want) >= 10
    for engine in ENGINES:
        path = "reference" if engine == "reference" else "fast"
        got = {}
        exe = execute.Executable(program, path, engine if path == "fast" else "auto")
        exe.run(g.input.astype(program.input.fmt.storage),
                observe=lambda op, ins, outs: got.update({op.name: outs[0]}) if op.kind in K1_KINDS else None)
        for op_name, w in want.items():
            assert np.array_equal(got[op_name], w), (name, op_name, engine)


@pytest.mark.slow
def test_cli_run_engine_is_selectable_and_changes_no_integer(capsys):
    reports = {}
    for engine in ENGINES[:2]:
        assert main(["run", "--limit", "24", "--calib", "16", "--json", "--engine", engine]) == 0
        reports[engine] = json.loads(capsys.readouterr().out)
    first, second = reports.values()
    for key in ("int_top1", "agreement", "logit_sqnr_db"):
        assert first[key] == second[key]
    assert [r["engine"].split(":")[0].split(" ")[0] for r in reports.values()] == ENGINES[:2]


@pytest.mark.slow
@given(products(), st.sampled_from(["tensor", "column"]), st.integers(0, 2 ** 32 - 1))
@settings(max_examples=60, deadline=None)
def test_a_requantized_product_equals_requantize_of_the_product(case, per, seed):
    """Product(..., requant=r) computes r(acc) in the epilogue's pass (spec K1 then A6): the same
    integers as requantizing the stored accumulator, or the same overflow."""
    from intsim.kernels.requantize import Requantizer, requantize_ref
    a, b, a_fmt, b_fmt, bias = case
    rng = np.random.default_rng(seed)
    n = b.shape[-1]
    shape = () if per == "tensor" else (n,)
    m = rng.integers(1, 1 << 31, size=shape)
    k = rng.integers(-2, 45, size=shape)
    out_fmt = IntFormat(int(rng.choice([4, 8, 16])), signed=bool(rng.integers(2)))
    want = outcome(lambda: requantize_ref(G.gemm_reference(a, b, bias), m, k, out_fmt,
                                          None if per == "tensor" else -1))
    requant = Requantizer(m, k, out_fmt, None if per == "tensor" else -1)
    for engine in ENGINES + ["auto"]:
        got = outcome(lambda: G.Product(a_fmt, b_fmt, bias, engine=engine)(a, b, None, requant))
        assert same(got, want), (engine, per, a_fmt.describe(), b_fmt.describe(), a.shape, b.shape)


def test_threads_and_engine_records_are_scoped(monkeypatch):
    monkeypatch.delenv("INTSIM_THREADS", raising=False)
    assert G.engine_threads() == G.DEFAULT_THREADS == 1
    monkeypatch.setenv("INTSIM_THREADS", "2")
    assert G.engine_threads() == 2
    with G.use_threads(3):
        assert G.engine_threads() == 3
    monkeypatch.setenv("INTSIM_THREADS", "two")
    with pytest.raises(ArithSpecError, match="INTSIM_THREADS='two'"):
        G.engine_threads()
    with pytest.raises(ArithSpecError, match="threads must be an integer"):
        with G.use_threads(0):
            pass
    a, b = np.ones((2, 3), np.int8), np.ones((3, 4), np.int8)
    with G.record_engines() as ran:
        G.gemm(a, b, IntFormat(8), IntFormat(8), engine="numba")
        G.gemm(a, b, IntFormat(8), IntFormat(8))                    # tiny: auto runs blas
    assert ran == {"numba": 1, "blas": 1}
