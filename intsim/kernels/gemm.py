"""Exact integer matrix product engines (spec K1).

    acc = a @ b (+ bias), exact, checked against the accumulator format (int32 by default)

One entry point, `gemm`, and interchangeable engines that all return the same integers:

    reference  int64 np.matmul (K1.1): plainly exact, slow (NumPy's integer matmul has no BLAS).
    blas       float BLAS on integer-valued operands, K split into blocks small enough that no
               float operation rounds (K1.2).
    ort        ONNX Runtime MatMulInteger, uint8 x int8 on the CPU's integer dot-product units
               (K1.5): the left operand is offset to unsigned and both are split into 8-bit digits;
               the int32 digit products are recombined in int64.
    numba      a plain int64 triple loop (an independent exact engine; 'auto' does not pick it: it
               never won in benchmarks/gemm.py --tiny).
    auto       the fastest exact engine available for the shape (`choose_engine`), or the engine of
               the enclosing `use_engine` scope.

A constant right operand (a weight) is prepared once with `prepare_weight`, which returns a
`PreparedWeight`: the operand in int8/float32 layout, its column sums and, for ort, an ONNX Runtime
session holding it as a constant (ONNX Runtime packs it once). Nothing is cached anywhere else except
the ort sessions for products of two run-time operands (`_pair_session`), one per thread count.

All engines share one epilogue (`_combine`): partial products (float blocks or int32 digit products)
are weighted, summed with the bias row in int64, checked against the accumulator format and stored.
"""
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import numba
import numpy as np

from .. import arith
from ..arith import IntFormat

ACC32 = IntFormat(32)
FLOAT32_EXACT = 1 << 24
FLOAT64_EXACT = 1 << 53
MAX_FLOAT32_BLOCKS = 4
INT32_MAX = (1 << 31) - 1
INT64_MAX = (1 << 63) - 1
ENGINES = ("auto", "ort", "blas", "numba", "reference")
# auto: below this many multiply-adds per call ONNX Runtime's fixed cost (about 40 us a call) makes
# the float BLAS engine faster (measured with benchmarks/gemm.py --tiny)
ORT_MIN_MACS = 1 << 22
_SCOPED_ENGINE = ContextVar("intsim_gemm_engine", default="auto")


def magnitude(fmt: IntFormat):
    return max(abs(fmt.lo), abs(fmt.hi))


def block_size(a_fmt: IntFormat, b_fmt: IntFormat):
    """Largest K_block with K_block * max|a| * max|b| <= 2^24 (spec K1.2)."""
    return max(1, FLOAT32_EXACT // (magnitude(a_fmt) * magnitude(b_fmt)))


# --- operands and the reference --------------------------------------------------------------------

def check_operands(a, b, bias):
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim < 2 or b.ndim < 2:
        raise arith.ArithSpecError(f"matmul needs operands of rank >= 2, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2]:
        raise arith.ArithSpecError(f"matmul: inner dimensions differ: {a.shape} @ {b.shape}")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise arith.ArithSpecError(f"matmul: batch dimensions do not broadcast: {a.shape} @ {b.shape}") from None
    arith.check_nonempty("matmul operand a", a)
    arith.check_nonempty("matmul operand b", b)
    if a.dtype.kind not in "iu" or b.dtype.kind not in "iu":
        raise arith.ArithSpecError(f"matmul operands must be integer arrays, got {a.dtype} and {b.dtype}")
    if bias is not None:
        if np.shape(bias) != (b.shape[-1],):
            raise arith.ArithSpecError(f"matmul: bias of shape {np.shape(bias)} for {b.shape[-1]} outputs")
        arith.check_fits("matmul bias", arith.int_const("matmul bias", np.asarray(bias)), ACC32)   # K1: int32
    return a, b


def finish(acc, bias, acc_fmt, what):
    acc = acc.astype(np.int64) if acc.dtype != np.int64 else acc
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.int64)
    arith.check_fits(what, acc, acc_fmt)
    return acc.astype(acc_fmt.storage)


def gemm_reference(a, b, bias=None, acc_fmt: IntFormat = ACC32):
    """acc = a @ b (+ bias) in exact int64, checked against acc_fmt. Spec K1.1."""
    a, b = check_operands(a, b, bias)
    return finish(np.matmul(a.astype(np.int64), b.astype(np.int64)), bias, acc_fmt, "matmul accumulator")


def dtype_within(dtype, fmt: IntFormat):
    """True when no value of this storage dtype can lie outside fmt (no range pass needed)."""
    if dtype.kind not in "iu":
        return False
    info = np.iinfo(dtype)
    return fmt.lo <= info.min and info.max <= fmt.hi


def _check_within(what, x, fmt):
    if not dtype_within(x.dtype, fmt):
        arith.check_fits(what, x, fmt)


# --- the prepared weight -----------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class PreparedWeight:
    """A constant right operand b (K, N), checked against b_fmt and laid out once for `engine`.

    b:       (K, N) C-contiguous, in b_fmt's storage dtype (every engine can use it).
    colsum:  int64 (N,) column sums of b (the ort engine's offset correction, K1.5).
    b_float: float32 copy of b (blas engine), else None.
    session: ONNX Runtime session computing the digit products of a uint8 operand with b (ort
             engine), else None; `b_digit_weights` are the weights of its output column groups."""
    b: np.ndarray
    b_fmt: IntFormat
    engine: str
    colsum: np.ndarray
    b_float: np.ndarray = None
    session: object = field(default=None, repr=False)
    b_digit_weights: tuple = ()

    @property
    def shape(self):
        return self.b.shape

    def __reduce__(self):
        # pickled as its operand: a session cannot cross processes, so the receiver prepares again
        return prepare_weight, (self.b, self.b_fmt, self.engine)


def prepare_weight(b, b_fmt: IntFormat, engine="auto", b_float=None):
    """Check a constant right operand against b_fmt once and lay it out for `engine` ('auto': the
    use_engine scope's engine, else the one `choose_engine` takes for large products).
    b_float: an existing float32 copy to reuse."""
    b = np.asarray(b)
    if b.ndim != 2:
        raise arith.ArithSpecError(f"prepare_weight: a weight is (K, N), got shape {b.shape}")
    if b.dtype.kind not in "iu":
        raise arith.ArithSpecError(f"prepare_weight: weight must be an integer array, got {b.dtype}")
    arith.check_nonempty("matmul weight", b)
    arith.check_fits("matmul weight", b, b_fmt)
    engine = _check_engine_name(engine)
    if engine == "auto":
        engine = _SCOPED_ENGINE.get()
    if engine == "auto":
        engine = _large_engine(b.shape[0], None, b_fmt)
    b = np.ascontiguousarray(b, dtype=b_fmt.storage)
    colsum = b.sum(axis=0, dtype=np.int64)
    if engine == "blas":
        bf = np.ascontiguousarray(b_float if b_float is not None else b, dtype=np.float32)
        return PreparedWeight(b, b_fmt, engine, colsum, b_float=bf)
    if engine == "ort":
        runtime = _ort_runtime(required=True)
        if not _ort_applicable(b.shape[0], runtime):
            raise arith.ArithSpecError(f"engine 'ort': K={b.shape[0]} exceeds the int32 digit-product "
                                       f"bound (spec K1.5); use engine 'auto' or 'blas'")
        digits, weights = _signed_digits(b, b_fmt)
        # the digits side by side along N: one product gives every digit's partial (K1.5)
        stacked = np.ascontiguousarray(np.concatenate(list(digits), axis=1))
        return PreparedWeight(b, b_fmt, engine, colsum, session=_weight_session(runtime, stacked),
                              b_digit_weights=weights)
    return PreparedWeight(b, b_fmt, engine, colsum)


# --- the entry point -----------------------------------------------------------------------------------

def gemm(a, b, a_fmt: IntFormat, b_fmt: IntFormat, bias=None, acc_fmt: IntFormat = ACC32, engine="auto",
         b_prepared: PreparedWeight = None):
    """acc = a @ b (+ bias), exact, in acc_fmt's storage; any accumulator outside acc_fmt raises.

    a: (..., M, K) integers within a_fmt; b: (..., K, N) within b_fmt (batch axes broadcast like
    np.matmul), or None with b_prepared (from prepare_weight). bias: (N,) integers or None.
    engine: one of ENGINES; 'auto' runs the engine of the enclosing `use_engine` scope, if any, else
    the fastest exact one (`choose_engine`). Every engine returns the same integers (K1.1-K1.5)."""
    engine = _check_engine_name(engine)
    if engine == "auto":
        engine = _SCOPED_ENGINE.get()
    if b_prepared is not None:
        if b is not None and np.shape(b) != b_prepared.shape:
            raise arith.ArithSpecError(f"matmul: b of shape {np.shape(b)} and a prepared weight of "
                                       f"shape {b_prepared.shape}")
        if b_fmt is not None and b_fmt != b_prepared.b_fmt:
            raise arith.ArithSpecError(f"matmul: b_fmt {b_fmt.describe()} but the weight was prepared "
                                       f"for {b_prepared.b_fmt.describe()}")
        b, b_fmt = b_prepared.b, b_prepared.b_fmt
    a, b = check_operands(a, b, bias)
    if engine == "reference":
        _check_within("matmul operand a", a, a_fmt)
        _check_within("matmul operand b", b, b_fmt)
        return gemm_reference(a, b, bias, acc_fmt)
    if a.ndim > 2 and b.ndim == 2:
        # one large GEMM instead of a batch of small ones
        out = gemm(a.reshape(-1, a.shape[-1]), None if b_prepared else b, a_fmt, b_fmt, bias, acc_fmt,
                   engine, b_prepared)
        return out.reshape(a.shape[:-1] + (b.shape[-1],))
    _check_within("matmul operand a", a, a_fmt)
    if b_prepared is None:
        _check_within("matmul operand b", b, b_fmt)      # a prepared weight was checked once
    k = a.shape[-1]
    if k * magnitude(a_fmt) * magnitude(b_fmt) >= FLOAT64_EXACT:
        raise arith.IntOverflowError(f"matmul: K={k} with |a|<={magnitude(a_fmt)}, |b|<={magnitude(b_fmt)} "
                                     f"exceeds the exact range of the fast engines (spec K1.2)")
    out_batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    m, n = a.shape[-2], b.shape[-1]
    if engine == "auto":
        engine = choose_engine(m, k, n, a_fmt, b_fmt, int(np.prod(out_batch, dtype=np.int64)))
    partials, weights, row_bias = ENGINE_FUNCTIONS[engine](a, b, a_fmt, b_fmt, bias, b_prepared, out_batch)
    return _finish_partials(partials, weights, row_bias, acc_fmt, out_batch + (m, n))


def available_engines():
    """The engines that run here (ort needs onnxruntime and a CPU on which its products are exact)."""
    return [e for e in ENGINES if e != "ort" or _ort_runtime() is not None]


@contextmanager
def use_engine(engine):
    """Within this scope (this thread / task), gemm(engine='auto') runs `engine`: how a whole
    program run is pinned to one engine without threading a parameter through every op.

        with use_engine("blas"):
            execute.run(program, images)"""
    token = _SCOPED_ENGINE.set(_check_engine_name(engine))
    try:
        yield
    finally:
        _SCOPED_ENGINE.reset(token)


def scoped_engine():
    """The engine of the enclosing use_engine scope, 'auto' outside any."""
    return _SCOPED_ENGINE.get()


def choose_engine(m, k, n, a_fmt, b_fmt, batch=1):
    """The engine 'auto' runs for a (batch x) M x K x N product: ort when it is available and exact
    for these formats and the product is large enough to amortise its call, else blas. (numba never
    won in benchmarks/gemm.py --tiny: every engine's fixed Python cost is about the same.)"""
    if batch * m * k * n < ORT_MIN_MACS:
        return "blas"
    return _large_engine(k, a_fmt, b_fmt)


def _large_engine(k, a_fmt, b_fmt):
    runtime = _ort_runtime()
    if runtime is None or (k is not None and not _ort_applicable(k, runtime, a_fmt, b_fmt)):
        return "blas"
    return "ort"


def _check_engine_name(engine):
    if engine not in ENGINES:
        raise arith.ArithSpecError(f"unknown matmul engine {engine!r}; engines: {', '.join(ENGINES)}")
    return engine


def _batched(x, batch_shape):
    """x (..., R, C) broadcast to batch_shape and flattened to (G, R, C) (a view unless broadcast)."""
    return np.broadcast_to(x, batch_shape + x.shape[-2:]).reshape((-1,) + x.shape[-2:])


def _bias_row(bias, n):
    return np.zeros((1, n), dtype=np.int64) if bias is None else np.asarray(bias, dtype=np.int64).reshape(1, n)


# --- the shared epilogue -----------------------------------------------------------------------------

def _finish_partials(partials, weights, row_bias, acc_fmt, out_shape):
    """acc = row_bias + sum_p weights[p] * partials[p] in int64 (spec K1.2, K1.5), checked
    against acc_fmt. partials: (P, G, M, N) exact integers (float or int); row_bias (1 or G, N)."""
    p, g, m, n = partials.shape
    if p == 1 and partials.dtype == acc_fmt.storage and partials[0].flags.c_contiguous:
        out = partials[0]                    # in place: each element is read before it is written
    else:
        out = np.empty((g, m, n), dtype=acc_fmt.storage)
    smallest, largest = _combine(partials, np.asarray(weights, dtype=np.int64), row_bias, out)
    # the extremes of the exact int64 sums: one outside acc_fmt is an overflow (K1.3, A4)
    arith.check_fits("matmul accumulator", np.array([smallest, largest]), acc_fmt)
    return out.reshape(out_shape)


@numba.njit(cache=True, nogil=True)
def _combine(partials, weights, bias, out):
    """out[g, r, j] = bias[g or 0, j] + sum_p weights[p] * partials[p, g, r, j] in int64, stored in
    out's dtype. Every partial is an exact integer (float blocks of K1.2 convert exactly). Returns
    the smallest and largest sum (out is valid only if both fit its dtype).
    A row is summed into an int64 buffer first and then stored: the loops vectorise, and out may
    be partials[0] (each row is read whole before it is written)."""
    n_parts, n_groups, n_rows, n = partials.shape
    row = np.empty(n, dtype=np.int64)
    smallest, largest = np.int64(INT64_MAX), np.int64(-INT64_MAX)
    for g in range(n_groups):
        brow = bias[g if bias.shape[0] > 1 else 0]
        for r in range(n_rows):
            src, w = partials[0, g, r], weights[0]
            for j in range(n):
                row[j] = brow[j] + w * np.int64(src[j])
            for p in range(1, n_parts):
                src, w = partials[p, g, r], weights[p]
                for j in range(n):
                    row[j] += w * np.int64(src[j])
            dst = out[g, r]
            for j in range(n):
                smallest = min(smallest, row[j])
                largest = max(largest, row[j])
                dst[j] = row[j]
    return smallest, largest


# --- blas (K1.2) ----------------------------------------------------------------------------------------

def _blas_partials(a, b, a_fmt, b_fmt, bias, prepared, out_batch):
    k = a.shape[-1]
    kb = block_size(a_fmt, b_fmt)
    m, n = a.shape[-2], b.shape[-1]
    if magnitude(a_fmt) * magnitude(b_fmt) <= FLOAT32_EXACT and k <= kb * MAX_FLOAT32_BLOCKS:
        af = a.astype(np.float32)
        bf = prepared.b_float if prepared is not None and prepared.b_float is not None else b.astype(np.float32)
        starts = range(0, k, kb)
        blocks = np.empty((len(starts),) + out_batch + (m, n), dtype=np.float32)
        for i, s in enumerate(starts):
            np.matmul(af[..., s:s + kb], bf[..., s:s + kb, :], out=blocks[i])
    else:
        # many small blocks (wide operands, e.g. 16-bit probabilities) cost more than one float64
        # product, which is exact below 2^53; and a single product beyond 2^24 (16 x 16 bits) is
        # not exact in float32 at all
        blocks = np.matmul(a.astype(np.float64), b.astype(np.float64))[None]
    return blocks.reshape(blocks.shape[0], -1, m, n), np.ones(blocks.shape[0]), _bias_row(bias, n)


# --- numba and reference (int64) ---------------------------------------------------------------------------

def _numba_partials(a, b, a_fmt, b_fmt, bias, prepared, out_batch):
    a3, b3 = _batched(a, out_batch), _batched(b, out_batch)
    acc = np.zeros((1,) + (a3.shape[0], a3.shape[1], b3.shape[2]), dtype=np.int64)
    _int64_product(a3, b3, acc[0])
    return acc, np.ones(1), _bias_row(bias, b.shape[-1])


@numba.njit(cache=True, nogil=True)
def _int64_product(a, b, out):
    """out[g] += a[g] @ b[g] in int64 (exact: |sum| < 2^53 by the caller's check)."""
    for g in range(a.shape[0]):
        for i in range(a.shape[1]):
            for t in range(a.shape[2]):
                av = np.int64(a[g, i, t])
                for j in range(b.shape[2]):
                    out[g, i, j] += av * np.int64(b[g, t, j])


# --- ort (K1.5) ----------------------------------------------------------------------------------------------

_ORT_RUNTIME = {}            # "runtime": (onnxruntime module, digit bits) or None, probed once
_PAIR_SESSIONS = {}          # threads -> session for two run-time operands
ORT_OPSET = 13
ORT_IR_VERSION = 8


def engine_threads():
    """Threads for ONNX Runtime: numba's thread count, the one knob intsim already sets for numba
    and BLAS (intsim.sweep pins it per worker), so the three never oversubscribe the cores."""
    return max(1, numba.get_num_threads())


def _ort_runtime(required=False):
    """(onnxruntime, digit bits) when ONNX Runtime is installed and exact here, else None."""
    if "runtime" not in _ORT_RUNTIME:
        _ORT_RUNTIME["runtime"], _ORT_RUNTIME["why"] = _probe_ort()
    if required and _ORT_RUNTIME["runtime"] is None:
        raise arith.ArithSpecError(f"matmul engine 'ort' is not available: {_ORT_RUNTIME['why']}")
    return _ORT_RUNTIME["runtime"]


def _probe_ort():
    """Find the widest unsigned digit (8 or 7 bits) whose uint8 x int8 products ONNX Runtime
    computes exactly here (K1.5: CPUs without VNNI pair products in saturating int16)."""
    try:
        import onnxruntime
    except ImportError:
        return None, "onnxruntime is not installed (pip install onnxruntime)"
    for digit_bits in (8, 7):
        runtime = (onnxruntime, digit_bits)
        if _probe_exact(runtime):
            return runtime, ""
    return None, "ONNX Runtime's uint8 x int8 products are not exact on this CPU"


def _probe_exact(runtime):
    """The extreme digit products that a saturating int16 pair sum would get wrong, through both
    kinds of session (a constant weight is packed differently), GEMV and GEMM shapes."""
    top = (1 << runtime[1]) - 1
    for m, k, n in ((1, 64, 16), (33, 67, 5)):
        a = np.full((m, k), top, dtype=np.uint8)
        for bv in (127, -128):
            b = np.full((k, n), bv, dtype=np.int8)
            b[::3, 1] = -bv - (bv < 0)
            want = a.astype(np.int64) @ b.astype(np.int64)
            got_pair = _pair_session(runtime).run(None, {"a": a[None, None, None], "b": b[None, None, None]})[0][0, 0, 0]
            got_weight = _weight_session(runtime, b).run(None, {"a": a})[0]
            if not (np.array_equal(got_pair, want) and np.array_equal(got_weight, want)):
                return False
    return True


def _ort_applicable(k, runtime, a_fmt=None, b_fmt=None):
    """The ort engine is exact for this product (K1.5): every int32 digit product is proven not to
    wrap, K (2^D - 1) 128 <= 2^31 - 1, and (given the formats) the int64 recombination cannot
    overflow either. Without a_fmt only the first condition is checked (a weight being prepared)."""
    digit_max = (1 << runtime[1]) - 1
    if k * digit_max * 128 > INT32_MAX:
        return False
    if a_fmt is None:
        return True
    n_a = -(-a_fmt.bits // runtime[1])
    n_b = len(_signed_digit_range(b_fmt))
    offset = 1 << (a_fmt.bits - 1) if a_fmt.signed else 0
    # sum over digit pairs of weight x |product| + offset x |colsum| + |bias|
    bound = (k * 128 * ((1 << (runtime[1] * n_a)) - 1) * sum(1 << (8 * j) for j in range(n_b))
             + offset * k * magnitude(b_fmt) + INT32_MAX + 1)
    return bound <= INT64_MAX


def _signed_digit_range(b_fmt):
    """The ranges covered by 1, 2, ... balanced base-256 digits, up to the first that holds b_fmt."""
    ranges = [(-128, 127)]
    while b_fmt.lo < ranges[-1][0] or b_fmt.hi > ranges[-1][1]:
        lo, hi = ranges[-1]
        ranges.append((lo * 256 - 128, hi * 256 + 127))
    return ranges


def _session_options(ort, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # idle pool threads sleep instead of spinning: numba and BLAS run right after each product
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


def _session(runtime, graph_inputs, initializers):
    from onnx import TensorProto, helper
    ort = runtime[0]
    y = helper.make_tensor_value_info("y", TensorProto.INT32, None)
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "gemm",
                              graph_inputs, [y], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ORT_OPSET)])
    model.ir_version = ORT_IR_VERSION
    return ort.InferenceSession(model.SerializeToString(), _session_options(ort, engine_threads()),
                                providers=["CPUExecutionProvider"])


def _weight_session(runtime, b_digits):
    """a (M, K) uint8 @ the constant b_digits (K, N') int8 -> (M, N') int32."""
    from onnx import TensorProto, helper, numpy_helper
    a = helper.make_tensor_value_info("a", TensorProto.UINT8, ["m", b_digits.shape[0]])
    return _session(runtime, [a], [numpy_helper.from_array(b_digits, "b")])


def _pair_session(runtime):
    """a (Da, 1, G, M, K) uint8 @ b (1, Db, G, K, N) int8 -> (Da, Db, G, M, N) int32: every digit
    pair of every batch in one call."""
    key = (runtime[1], engine_threads())
    if key not in _PAIR_SESSIONS:
        from onnx import TensorProto, helper
        a = helper.make_tensor_value_info("a", TensorProto.UINT8, ["da", 1, "g", "m", "k"])
        b = helper.make_tensor_value_info("b", TensorProto.INT8, [1, "db", "g", "k", "n"])
        _PAIR_SESSIONS[key] = _session(runtime, [a, b], [])
    return _PAIR_SESSIONS[key]


def _unsigned_digits(a, a_fmt, digit_bits):
    """u = a + offset >= 0 (offset 2^(bits-1) for a signed format, else 0) as digits of digit_bits
    bits, least significant first: (uint8 (D, *a.shape), digit weights, offset). K1.5."""
    offset = 1 << (a_fmt.bits - 1) if a_fmt.signed else 0
    n_digits = -(-a_fmt.bits // digit_bits)
    weights = tuple(1 << (digit_bits * i) for i in range(n_digits))
    if n_digits == 1 and a.dtype == np.uint8 and offset == 0:
        return a[None], weights, offset
    if n_digits == 1 and a.dtype == np.int8 and offset == 128:
        return (a.view(np.uint8) ^ np.uint8(128))[None], weights, offset   # a + 128 mod 256 = a + 128
    u = a.astype(np.int64) + offset if offset else a
    mask = (1 << digit_bits) - 1
    digits = np.empty((n_digits,) + a.shape, dtype=np.uint8)
    for i in range(n_digits):
        np.bitwise_and(u >> (digit_bits * i), mask, out=digits[i], casting="unsafe")
    return digits, weights, offset


def _signed_digits(b, b_fmt):
    """b as balanced base-256 digits in [-128, 127], least significant first: (int8 (D, *b.shape),
    digit weights). One digit when b_fmt lies within int8. K1.5."""
    n_digits = len(_signed_digit_range(b_fmt))
    weights = tuple(1 << (8 * j) for j in range(n_digits))
    if n_digits == 1:
        return (b if b.dtype == np.int8 else b.astype(np.int8))[None], weights
    x = b.astype(np.int64)
    digits = np.empty((n_digits,) + b.shape, dtype=np.int8)
    for j in range(n_digits):
        low = ((x + 128) & 255) - 128
        digits[j] = low
        x = (x - low) >> 8                 # exact: x - low is a multiple of 256
    return digits, weights


def _ort_partials(a, b, a_fmt, b_fmt, bias, prepared, out_batch):
    runtime = _ort_runtime(required=True)
    k, m, n = a.shape[-1], a.shape[-2], b.shape[-1]
    if not _ort_applicable(k, runtime, a_fmt, b_fmt):
        raise arith.ArithSpecError(f"engine 'ort': K={k} with {a_fmt.describe()} x {b_fmt.describe()} "
                                   f"exceeds its int32/int64 bounds (spec K1.5); use engine 'auto' or 'blas'")
    a_digits, a_weights, offset = _unsigned_digits(a, a_fmt, runtime[1])
    if prepared is not None and prepared.engine == "ort":
        b_weights, colsum = prepared.b_digit_weights, prepared.colsum[None]
        # (Da M, K) @ (K, Db N) -> (Da, M, Db, N) -> (Da, Db, M, N)
        y = prepared.session.run(None, {"a": a_digits.reshape(-1, k)})[0]
        parts = y.reshape(len(a_weights), m, len(b_weights), n).transpose(0, 2, 1, 3)
        parts = parts.reshape(-1, 1, m, n) if parts.shape[:2] != (1, 1) else y.reshape(1, 1, m, n)
    else:
        b_digits, b_weights = _signed_digits(b, b_fmt)
        ua = np.stack([_batched(d, out_batch) for d in a_digits])[:, None]
        sb = np.stack([_batched(d, out_batch) for d in b_digits])[None]
        y = _pair_session(runtime).run(None, {"a": ua, "b": sb})[0]         # (Da, Db, G, M, N)
        parts = y.reshape((-1,) + y.shape[2:])
        colsum = _column_sums(sb[0], np.asarray(b_weights, dtype=np.int64)) if offset else None
    weights = [wa * wb for wa in a_weights for wb in b_weights]
    row_bias = _bias_row(bias, n)
    if offset:
        row_bias = row_bias - offset * colsum          # (a + offset) b - offset colsum(b) = a b
    return parts, weights, row_bias


@numba.njit(cache=True, nogil=True)
def _column_sums(digits, weights):
    """sum_t b[g, t, j] for b = sum_d weights[d] digits[d] (D, G, K, N): (G, N) int64."""
    out = np.zeros((digits.shape[1], digits.shape[3]), dtype=np.int64)
    for d in range(digits.shape[0]):
        w = np.int64(weights[d])
        for g in range(digits.shape[1]):
            row = out[g]
            for t in range(digits.shape[2]):
                src = digits[d, g, t]
                for j in range(digits.shape[3]):
                    row[j] += w * np.int64(src[j])
    return out


ENGINE_FUNCTIONS = {"blas": _blas_partials, "numba": _numba_partials, "ort": _ort_partials}
