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
import collections
from contextlib import contextmanager
import functools
import os
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
_SCOPED_THREADS = ContextVar("intsim_gemm_threads", default=None)
_RECORD = ContextVar("intsim_gemm_record", default=None)
DEFAULT_THREADS = 1


def magnitude(fmt: IntFormat):
    return max(abs(fmt.lo), abs(fmt.hi))


def block_size(a_fmt: IntFormat, b_fmt: IntFormat):
    """Largest K_block with K_block * max|a| * max|b| <= 2^24 (spec K1.2)."""
    return max(1, FLOAT32_EXACT // (magnitude(a_fmt) * magnitude(b_fmt)))


# --- operands and the reference --------------------------------------------------------------------

def check_operands(a, b, bias):
    """a, b as integer arrays (within int64) of rank >= 2 whose shapes multiply; the bias, if
    any, one int32 per output column."""
    a, b = check_shapes(a, b)
    if bias is not None:
        check_bias_shape(bias, b.shape[-1])
        arith.check_fits("matmul bias", arith.int_const("matmul bias", np.asarray(bias)), ACC32)   # K1: int32
    return a, b


def check_shapes(a, b):
    a = arith.integer_input("matmul operand a", a)        # no float, no uint64 beyond int64
    b = arith.integer_input("matmul operand b", b)
    if a.ndim < 2 or b.ndim < 2:
        raise arith.ArithSpecError(f"matmul needs operands of rank >= 2, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2]:
        raise arith.ArithSpecError(f"matmul: inner dimensions differ: {a.shape} @ {b.shape}")
    if b.ndim > 2 or a.ndim > 2:
        try:
            np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise arith.ArithSpecError(f"matmul: batch dimensions do not broadcast: {a.shape} @ {b.shape}") from None
    if a.size == 0 or b.size == 0:
        arith.check_nonempty("matmul operand a", a)
        arith.check_nonempty("matmul operand b", b)
    return a, b


def check_bias_shape(bias, n):
    if np.shape(bias) != (n,):
        raise arith.ArithSpecError(f"matmul: bias of shape {np.shape(bias)} for {n} outputs")


def gemm_reference(a, b, bias=None, acc_fmt: IntFormat = ACC32):
    """acc = a @ b (+ bias) in exact int64, checked against acc_fmt. Spec K1.1."""
    a, b = check_operands(a, b, bias)
    acc = np.matmul(a.astype(np.int64), b.astype(np.int64))
    if bias is not None:
        acc += np.asarray(bias, dtype=np.int64)
    arith.check_fits("matmul accumulator", acc, acc_fmt)
    return acc.astype(acc_fmt.storage)


def _check_within(what, x, fmt):
    arith.check_fits(what, x, fmt)        # no pass when x's dtype cannot leave fmt


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


def prepare_weight(b, b_fmt: IntFormat, engine="auto"):
    """Check a constant right operand against b_fmt once and lay it out for `engine` ('auto': the
    use_engine scope's engine, else the one `choose_engine` takes for large products)."""
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
        engine = _large_engine(b.shape[0], None, b_fmt)      # any a_fmt: checked again per call
    b = np.ascontiguousarray(b, dtype=b_fmt.storage)
    colsum = b.sum(axis=0, dtype=np.int64)
    if engine == "blas":
        return PreparedWeight(b, b_fmt, engine, colsum, b_float=b.astype(np.float32))
    if engine == "ort":
        runtime = _ort_runtime(required=True)
        if not _ort_applicable(b.shape[0], runtime):
            raise arith.ArithSpecError(f"engine 'ort': K={b.shape[0]} exceeds the int32 digit-product "
                                       f"bound (spec K1.5); use engine 'auto' or 'blas'")
        digits, weights = _signed_digits(b, b_fmt)       # side by side along N (K1.5.2)
        return PreparedWeight(b, b_fmt, engine, colsum, session=_weight_session(runtime, digits),
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
    _check_engine_name(engine)
    if b_prepared is not None:
        if b is not None and np.shape(b) != b_prepared.shape:
            raise arith.ArithSpecError(f"matmul: b of shape {np.shape(b)} and a prepared weight of "
                                       f"shape {b_prepared.shape}")
        if b_fmt is not None and b_fmt != b_prepared.b_fmt:
            raise arith.ArithSpecError(f"matmul: b_fmt {b_fmt.describe()} but the weight was prepared "
                                       f"for {b_prepared.b_fmt.describe()}")
        b, b_fmt = None, b_prepared.b_fmt
    return Product(a_fmt, b_fmt, bias, acc_fmt, engine)(a, b, b_prepared)


class Product:
    """acc = a @ b (+ bias) for fixed operand formats, bias and accumulator: what depends on
    them alone (the bias register, the engine name, each engine's exactness bounds per K) is
    checked once here, so that a program op bound once pays only for its operands' checks per call.
    `gemm` is Product(...)(a, b).

    Calling it with `requant` (a requantize.Requantizer with one (m, k) per tensor or per output
    column) returns requant(acc) instead of acc, computed in the epilogue's pass: acc is never
    stored, and is still checked against acc_fmt (K1.3) before it is requantized (A6)."""

    def __init__(self, a_fmt: IntFormat, b_fmt: IntFormat, bias=None, acc_fmt: IntFormat = ACC32, engine="auto"):
        self.engine = _check_engine_name(engine)
        self.a_fmt, self.b_fmt, self.acc_fmt = a_fmt, b_fmt, acc_fmt
        self.bias_shape, self.bias = np.shape(bias), None
        if bias is not None:
            bias = arith.int_const("matmul bias", np.asarray(bias))
            arith.check_fits("matmul bias", bias, ACC32)                   # K1: an int32 register
            self.bias = bias.reshape(1, -1)                                # the epilogue's int64 row
        self.magnitude = magnitude(a_fmt) * magnitude(b_fmt)
        self._large = {}              # K -> the engine for large products (ort when exact)

    def __call__(self, a, b=None, b_prepared: PreparedWeight = None, requant=None):
        engine = self.engine if self.engine != "auto" else _SCOPED_ENGINE.get()
        if b_prepared is not None:
            if b_prepared.b_fmt != self.b_fmt:
                raise arith.ArithSpecError(f"matmul: b_fmt {self.b_fmt.describe()} but the weight was "
                                           f"prepared for {b_prepared.b_fmt.describe()}")
            b = b_prepared.b
        a, b = check_shapes(a, b)
        if self.bias is not None and self.bias_shape != (b.shape[-1],):
            check_bias_shape(np.empty(self.bias_shape), b.shape[-1])
        if engine == "reference":
            _check_within("matmul operand a", a, self.a_fmt)
            _check_within("matmul operand b", b, self.b_fmt)
            acc = gemm_reference(a, b, None if self.bias is None else self.bias[0], self.acc_fmt)
            _count(engine)
            return acc if requant is None else requant(acc)
        if a.ndim > 2 and b.ndim == 2:
            # one large GEMM instead of a batch of small ones
            out = self(a.reshape(-1, a.shape[-1]), None if b_prepared else b, b_prepared, requant)
            return out.reshape(a.shape[:-1] + (b.shape[-1],))
        _check_within("matmul operand a", a, self.a_fmt)
        if b_prepared is None:
            _check_within("matmul operand b", b, self.b_fmt)      # a prepared weight was checked once
        k = a.shape[-1]
        if k * self.magnitude >= FLOAT64_EXACT:
            raise arith.IntOverflowError(f"matmul: K={k} with |a|<={magnitude(self.a_fmt)}, "
                                         f"|b|<={magnitude(self.b_fmt)} exceeds the exact range of the "
                                         f"fast engines (spec K1.2)")
        out_batch = a.shape[:-2] if b.ndim == 2 else np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        m, n = a.shape[-2], b.shape[-1]
        g = int(np.prod(out_batch, dtype=np.int64))
        if engine == "auto":
            engine = "blas" if g * m * k * n < ORT_MIN_MACS else self._large_engine(k)
        elif engine == "ort":
            self._check_ort(k)
        _count(engine)
        partials, a_weights, b_weights, row_bias = ENGINE_FUNCTIONS[engine](a, b, self.a_fmt, self.b_fmt, self.bias,
                                                                            b_prepared, out_batch)
        return _finish_partials(partials, a_weights, b_weights, row_bias, self.acc_fmt, out_batch + (m, n),
                                k * self.magnitude, requant)

    def _large_engine(self, k):
        if k not in self._large:
            self._large[k] = _large_engine(k, self.a_fmt, self.b_fmt)
        return self._large[k]

    def _check_ort(self, k):
        if not _ort_applicable(k, _ort_runtime(required=True), self.a_fmt, self.b_fmt):
            raise arith.ArithSpecError(f"engine 'ort': K={k} with {self.a_fmt.describe()} x "
                                       f"{self.b_fmt.describe()} exceeds its int32/int64 bounds (spec K1.5); "
                                       f"use engine 'auto' or 'blas'")


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


@contextmanager
def record_engines():
    """Count the engine each product runs on within this scope (for reports):

        with record_engines() as ran:
            exe.run(q)
        ran  # Counter({'ort': 73, 'blas': 1})"""
    ran = collections.Counter()
    token = _RECORD.set(ran)
    try:
        yield ran
    finally:
        _RECORD.reset(token)


def _count(engine):
    record = _RECORD.get()
    if record is not None:
        record[engine] += 1


def scoped_engine():
    """The engine of the enclosing use_engine scope, 'auto' outside any."""
    return _SCOPED_ENGINE.get()


def describe_engine(engine="auto"):
    """What `engine` runs here, for reports: e.g. 'auto (ort: onnxruntime 1.32.0, 8-bit digits)'."""
    runtime = _ort_runtime()
    ort = (f"ort: onnxruntime {runtime[0].__version__}, {runtime[1]}-bit digits" if runtime is not None
           else f"blas; ort unavailable: {_ORT_RUNTIME['why']}")
    if engine == "auto":
        return f"auto ({ort}; blas below {ORT_MIN_MACS} multiply-adds)"
    return ort if engine == "ort" else engine


def choose_engine(m, k, n, a_fmt, b_fmt, batch=1):
    """The engine 'auto' runs for a (batch x) M x K x N product: ort when it is available and exact
    for these formats and the product is large enough to amortise its call, else blas. (numba never
    won in benchmarks/gemm.py --tiny: every engine's fixed Python cost is about the same.)"""
    if batch * m * k * n < ORT_MIN_MACS:
        return "blas"
    return _large_engine(k, a_fmt, b_fmt)


def _large_engine(k, a_fmt, b_fmt):
    runtime = _ort_runtime()
    return "ort" if runtime is not None and _ort_applicable(k, runtime, a_fmt, b_fmt) else "blas"


def _check_engine_name(engine):
    if engine not in ENGINES:
        raise arith.ArithSpecError(f"unknown matmul engine {engine!r}; engines: {', '.join(ENGINES)}")
    return engine


def _batched(x, batch_shape):
    """x (..., R, C) broadcast to batch_shape and flattened to (G, R, C) (a view unless broadcast)."""
    if x.shape[:-2] != tuple(batch_shape):
        x = np.broadcast_to(x, tuple(batch_shape) + x.shape[-2:])
    return x.reshape((-1,) + x.shape[-2:])


# --- the shared epilogue -----------------------------------------------------------------------------

def _finish_partials(partials, a_weights, b_weights, row_bias, acc_fmt, out_shape, bound, requant=None):
    """acc = row_bias + sum_pq a_weights[p] b_weights[q] partials[:, p, :, q] in int64 (spec K1.2,
    K1.5), checked against acc_fmt; with `requant` (a Requantizer), requant(acc) instead, in the
    same pass. partials: (G, Pa, M, Pb, N) C-contiguous exact integers (float or int), the layout in
    which ONNX Runtime returns digit products (K1.5.2); row_bias: (1 or G, N) or None; bound: a
    proven bound on |a @ b| (K A Bm)."""
    g, pa, m, pb, n = partials.shape
    single = (pa, pb) == (1, 1) and a_weights[0] == b_weights[0] == 1 and partials.dtype == acc_fmt.storage
    if requant is None and single and row_bias is None and acc_fmt.lo <= -bound and bound <= acc_fmt.hi:
        return partials.reshape(out_shape)    # already the accumulator, proven in range (K1.3)
    if row_bias is None:
        row_bias = np.zeros((1, n), dtype=np.int64)
    weights = _pair_weights(tuple(a_weights), tuple(b_weights))
    if requant is None:
        out = partials.reshape(g, m, n) if single else np.empty((g, m, n), dtype=acc_fmt.storage)  # see _combine
        smallest, largest = _combine(partials, weights, row_bias, out)
    else:
        out = np.empty((g, m, n), dtype=requant.out_fmt.storage)
        smallest, largest, outside = _combine_requant(partials, weights, row_bias, *requant.columns(n),
                                                      requant.lo, requant.hi, out)
    # the extremes of the exact int64 sums: one outside acc_fmt is an overflow (K1.3, A4)
    if smallest < acc_fmt.lo or largest > acc_fmt.hi:
        arith.check_fits("matmul accumulator", np.array([smallest, largest]), acc_fmt)
    if requant is not None:
        requant.raise_outside(outside)
    return out.reshape(out_shape)


@functools.lru_cache(maxsize=None)
def _pair_weights(a_weights, b_weights):
    """(Pa, Pb) int64 weight of each digit product: a_weights[p] * b_weights[q]."""
    return np.multiply.outer(np.array(a_weights, dtype=np.int64), np.array(b_weights, dtype=np.int64))


@numba.njit(cache=True, nogil=True, inline="always")
def _row_sum(partials, weights, bias, g, r, row):
    """row[j] = bias[g or 0, j] + sum_pq weights[p, q] partials[g, p, r, q, j] in int64."""
    brow = bias[g if bias.shape[0] > 1 else 0]
    for j in range(row.size):
        row[j] = brow[j]
    for p in range(partials.shape[1]):
        for q in range(partials.shape[3]):
            src, w = partials[g, p, r, q], weights[p, q]
            for j in range(row.size):
                row[j] += w * np.int64(src[j])


@numba.njit(cache=True, nogil=True)
def _combine(partials, weights, bias, out):
    """out[g, r, j] = bias[g or 0, j] + sum_pq weights[p, q] partials[g, p, r, q, j] in int64,
    stored in out's dtype. Every partial is an exact integer (float blocks of K1.2 convert
    exactly). Returns the smallest and largest sum (out is valid only if both fit).
    A row is summed into an int64 buffer first and then stored: the loops vectorise, and out may
    be partials itself (each row is read whole before it is written)."""
    n_groups, n_rows, n = partials.shape[0], partials.shape[2], partials.shape[4]
    row = np.empty(n, dtype=np.int64)
    smallest, largest = np.int64(INT64_MAX), np.int64(-INT64_MAX)
    for g in range(n_groups):
        for r in range(n_rows):
            _row_sum(partials, weights, bias, g, r, row)
            dst = out[g, r]
            for j in range(n):
                smallest = min(smallest, row[j])
                largest = max(largest, row[j])
                dst[j] = row[j]
    return smallest, largest


@numba.njit(cache=True, nogil=True)
def _combine_requant(partials, weights, bias, m, k, lim, lo, hi, out):
    """_combine's sums requantized in the same pass (spec A6, per output column j: m[j], k[j]):
    out[g, r, j] = sat(round_shift(sum * m[j], k[j])). Returns the smallest and largest sum, and the
    first sum whose product with m would leave int64 (|sum| > lim[j], A4; 0 for none). Only an
    accumulator inside its format (checked by the caller) reaches the requantization as valid.
    Each row is summed, checked and requantized in three loops that vectorise; one (m, k) for every
    column (per tensor) or positive shifts throughout take the branch-free forms."""
    n_groups, n_rows, n = partials.shape[0], partials.shape[2], partials.shape[4]
    row = np.empty(n, dtype=np.int64)
    smallest, largest = np.int64(INT64_MAX), np.int64(-INT64_MAX)
    outside = False
    uniform = (m == m[0]).all() and (k == k[0]).all()
    m0, k0, lim0 = m[0], k[0], lim[0]
    rounding = np.where(k > 0, np.left_shift(np.int64(1), np.maximum(k - 1, 0)), 0)
    right = (k > 0).all()
    for g in range(n_groups):
        for r in range(n_rows):
            _row_sum(partials, weights, bias, g, r, row)
            dst = out[g, r]
            for j in range(n):
                smallest = min(smallest, row[j])
                largest = max(largest, row[j])
            if uniform:
                for j in range(n):
                    outside |= (row[j] > lim0) | (row[j] < -lim0)
                    dst[j] = arith.saturate1(arith.round_shift1(row[j] * m0, k0), lo, hi)
            elif right:
                for j in range(n):
                    outside |= (row[j] > lim[j]) | (row[j] < -lim[j])
                    dst[j] = arith.saturate1((row[j] * m[j] + rounding[j]) >> k[j], lo, hi)
            else:
                for j in range(n):
                    outside |= (row[j] > lim[j]) | (row[j] < -lim[j])
                    dst[j] = arith.saturate1(arith.round_shift1(row[j] * m[j], k[j]), lo, hi)
    first = np.int64(0)
    if outside:
        for g in range(n_groups):
            for r in range(n_rows):
                _row_sum(partials, weights, bias, g, r, row)
                for j in range(n):
                    if first == 0 and (row[j] > lim[j] or row[j] < -lim[j]):
                        first = row[j]
    return smallest, largest, first


# --- blas (K1.2) ----------------------------------------------------------------------------------------

def _blas_partials(a, b, a_fmt, b_fmt, row_bias, prepared, out_batch):
    k = a.shape[-1]
    kb = block_size(a_fmt, b_fmt)
    m, n = a.shape[-2], b.shape[-1]
    g = int(np.prod(out_batch, dtype=np.int64))
    if magnitude(a_fmt) * magnitude(b_fmt) <= FLOAT32_EXACT and k <= kb * MAX_FLOAT32_BLOCKS:
        af = a.astype(np.float32)
        bf = prepared.b_float if prepared is not None and prepared.b_float is not None else b.astype(np.float32)
        starts = range(0, k, kb)
        blocks = np.empty(out_batch + (len(starts), m, n), dtype=np.float32)
        for i, s in enumerate(starts):
            np.matmul(af[..., s:s + kb], bf[..., s:s + kb, :], out=blocks[..., i, :, :])
        blocks = blocks.reshape(g, len(starts), m, 1, n)                    # the epilogue's layout
    else:
        # many small blocks (wide operands, e.g. 16-bit probabilities) cost more than one float64
        # product, which is exact below 2^53; and a single product beyond 2^24 (16 x 16 bits) is
        # not exact in float32 at all
        blocks = np.matmul(a.astype(np.float64), b.astype(np.float64)).reshape(g, 1, m, 1, n)
    return blocks, (1,) * blocks.shape[1], (1,), row_bias


# --- numba (int64) ---------------------------------------------------------------------------------------------

def _numba_partials(a, b, a_fmt, b_fmt, row_bias, prepared, out_batch):
    a3, b3 = _batched(a, out_batch), _batched(b, out_batch)
    acc = np.zeros((a3.shape[0], a3.shape[1], b3.shape[2]), dtype=np.int64)
    _int64_product(a3, b3, acc)
    return acc.reshape(acc.shape[0], 1, acc.shape[1], 1, acc.shape[2]), (1,), (1,), row_bias


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
    """Threads of the ONNX Runtime products: the enclosing `use_threads` scope's (an Executable's),
    else $INTSIM_THREADS, else DEFAULT_THREADS. One by default: intsim's numba kernels are serial
    and the products are short, and on a shared 2-core machine a second thread cost more in
    hand-offs than it gave (docs/results.md, "Speed": benchmarks/latency.py --threads 1,2)."""
    threads = _SCOPED_THREADS.get()
    return threads if threads is not None else default_threads()


def default_threads():
    text = os.environ.get("INTSIM_THREADS", "").strip()
    if not text:
        return DEFAULT_THREADS
    if not text.isdigit() or int(text) < 1:
        raise arith.ArithSpecError(f"INTSIM_THREADS={text!r}: a thread count >= 1 expected")
    return int(text)


@contextmanager
def use_threads(threads):
    """Within this scope, ONNX Runtime products use `threads` threads (None: the default)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise arith.ArithSpecError(f"threads must be an integer >= 1, got {threads!r}")
    token = _SCOPED_THREADS.set(threads)
    try:
        yield
    finally:
        _SCOPED_THREADS.reset(token)


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
    kinds of session (a constant weight is packed differently), GEMV and GEMM shapes, with and
    without a zero point."""
    top = (1 << runtime[1]) - 1
    for m, k, n in ((1, 64, 16), (33, 67, 5)):
        a = np.full((m, k), top, dtype=np.uint8)
        for bv in (127, -128):
            b = np.full((k, n), bv, dtype=np.int8)
            b[::3, 1] = -bv - (bv < 0)
            for zp in (0, (top + 1) // 2):
                want = (a.astype(np.int64) - zp) @ b.astype(np.int64)
                zero_point = np.array(zp, dtype=np.uint8)
                got_pair = _pair_session(runtime).run(None, {"a": a[None], "b": b[None],
                                                             "a_zero_point": zero_point})[0][0]
                got_weight = _weight_session(runtime, b).run(None, {"a": a, "a_zero_point": zero_point})[0]
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
    """One MatMulInteger y = (a - a_zero_point) @ b, int32; a_zero_point is a uint8 scalar input."""
    from onnx import TensorProto, helper
    ort = runtime[0]
    zero_point = helper.make_tensor_value_info("a_zero_point", TensorProto.UINT8, [])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, None)
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b", "a_zero_point"], ["y"])],
                              "gemm", graph_inputs + [zero_point], [y], initializers)
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
    """a (G, M, K) uint8 @ b (G, K, N) int8 -> (G, M, N) int32: a batch of products of two run-time
    operands (every digit pair of every batch entry) in one call."""
    key = (runtime[1], engine_threads())
    if key not in _PAIR_SESSIONS:
        from onnx import TensorProto, helper
        a = helper.make_tensor_value_info("a", TensorProto.UINT8, ["g", "m", "k"])
        b = helper.make_tensor_value_info("b", TensorProto.INT8, ["g", "k", "n"])
        _PAIR_SESSIONS[key] = _session(runtime, [a, b], [])
    return _PAIR_SESSIONS[key]


def _unsigned_digits(a, a_fmt, digit_bits):
    """u = a + offset >= 0 (offset 2^(bits-1) for a signed format, else 0) as Da digits of
    digit_bits bits, least significant first, stacked along M: a (G, M, K) -> (uint8 (G, Da M, K),
    digit weights, offset). K1.5.1-2."""
    offset = 1 << (a_fmt.bits - 1) if a_fmt.signed else 0
    n_digits = -(-a_fmt.bits // digit_bits)
    weights = tuple(1 << (digit_bits * i) for i in range(n_digits))
    if n_digits == 1 and a.dtype == np.uint8 and offset == 0:
        return a, weights, offset
    if n_digits == 1 and a.dtype == np.int8 and offset == 128:
        return a.view(np.uint8) ^ np.uint8(128), weights, offset     # a + 128 mod 256 = a + 128
    g, m, k = a.shape
    digits = np.empty((g, n_digits, m * k), dtype=np.uint8)
    _split_digits(np.ascontiguousarray(a).reshape(g, m * k), offset, digit_bits, digits)
    return digits.reshape(g, n_digits * m, k), weights, offset


@numba.njit(cache=True, nogil=True)
def _split_digits(a, offset, digit_bits, out):
    """out[g, i, t] = floor((a[g, t] + offset) / 2^(digit_bits i)) mod 2^digit_bits."""
    mask = (1 << digit_bits) - 1
    for g in range(a.shape[0]):
        for i in range(out.shape[1]):
            shift = digit_bits * i
            src, dst = a[g], out[g, i]
            for t in range(src.size):
                dst[t] = ((np.int64(src[t]) + offset) >> shift) & mask


def _signed_digits(b, b_fmt):
    """b (..., K, N) as Db balanced base-256 digits in [-128, 127], least significant first, side by
    side along N: (int8 (..., K, Db N) C-contiguous, digit weights). K1.5.2."""
    n_digits = len(_signed_digit_range(b_fmt))
    weights = tuple(1 << (8 * j) for j in range(n_digits))
    if n_digits == 1:
        return np.ascontiguousarray(b, dtype=np.int8), weights
    x = b.astype(np.int64)
    digits = []
    for _ in range(n_digits):
        low = ((x + 128) & 255) - 128
        digits.append(low.astype(np.int8))
        x = (x - low) >> 8                 # exact: x - low is a multiple of 256
    return np.concatenate(digits, axis=-1), weights


def _ort_partials(a, b, a_fmt, b_fmt, row_bias, prepared, out_batch):
    """Every digit pair in one call (K1.5.2): a's digits stacked along M, b's side by side along N,
    so (G, Da M, K) @ (G, K, Db N) -> (G, Da M, Db N) holds partial (i, j) in block (i, j). The
    caller has checked that the engine is exact for K and the formats (`_ort_applicable`)."""
    runtime = _ort_runtime(required=True)
    k, m, n = a.shape[-1], a.shape[-2], b.shape[-1]
    u, a_weights, offset = _unsigned_digits(_batched(a, out_batch), a_fmt, runtime[1])
    # one digit: ONNX Runtime subtracts the offset itself (a_zero_point, K1.5.1); several: the
    # epilogue subtracts offset x colsum(b)
    zero_point = np.array(offset if len(a_weights) == 1 else 0, dtype=np.uint8)
    if prepared is not None and prepared.engine == "ort":
        b_weights, colsum = prepared.b_digit_weights, prepared.colsum[None]
        y = prepared.session.run(None, {"a": u.reshape(-1, k), "a_zero_point": zero_point})[0][None]
    else:
        b3 = _batched(b, out_batch)
        sb, b_weights = _signed_digits(b3, b_fmt)
        y = _pair_session(runtime).run(None, {"a": u, "b": sb, "a_zero_point": zero_point})[0]
        colsum = _column_sums(b3) if offset and not zero_point else None
    parts = y.reshape(y.shape[0], len(a_weights), m, len(b_weights), n)     # a view: no copy
    if offset and not zero_point:
        # (a + offset) b - offset colsum(b) = a b
        row_bias = (0 if row_bias is None else row_bias) - offset * colsum
    return parts, a_weights, b_weights, row_bias


@numba.njit(cache=True, nogil=True)
def _column_sums(b):
    """sum_t b[g, t, j]: (G, N) int64."""
    out = np.zeros((b.shape[0], b.shape[2]), dtype=np.int64)
    for g in range(b.shape[0]):
        row = out[g]
        for t in range(b.shape[1]):
            src = b[g, t]
            for j in range(b.shape[2]):
                row[j] += src[j]
    return out


ENGINE_FUNCTIONS = {"blas": _blas_partials, "numba": _numba_partials, "ort": _ort_partials}
