"""Float arithmetic whose bits do not depend on the machine (docs/quantization.md Q18).

Calibration and compilation take integer decisions (scales, multipliers, GPTQ roundings, kernel
fits) from float computations. Each of those computes only with operations whose result IEEE-754
defines bit for bit (+ - * / sqrt, rint, comparisons, exact scaling by powers of two) in an order
fixed by this code, never by a library's kernel, thread count, SIMD width or use of fused
multiply-add:

- products (`matmul`, `gram`) are *exact on grids*: each row of the left operand is rounded to the
  grid 2^(e - GRID_BITS), e the binary exponent of the row's largest |value| (max < 2^e), and each
  column of the right operand likewise. The inner dimension is cut into chunks of at most CHUNK,
  so every product and every partial sum of a chunk is an integer below CHUNK * 2^(2 GRID_BITS) =
  2^53 in units of the two grid steps: float64 BLAS computes it exactly, in whatever order and with
  whatever instructions it likes. The chunk sums are added in chunk order, then scaled back
  (powers of two). `slices` > 1 adds the rounding rests as further grids (GRID_BITS more bits
  each), every pair of slices one exact product, added in a fixed order.
- sums (`row_sums`, `total`, `dot`) are sequential float64 accumulations in index order (numba,
  no fastmath: LLVM neither reassociates nor contracts them).
- exp, log, erf are intsim.elementary's.
- the factorisations GPTQ needs (`inverse_upper_cholesky`) are blocked: numba loops in a fixed order
  within a block, the blocks' products by `matmul`.

Rounding an operand to GRID_BITS = 21 significant bits of its row's largest value changes a
float32 product by about as much as float32 accumulation does (docs/quantization.md Q18 has the
measurements); the interpreter's float64 mode takes two slices (42 bits).
"""
import contextlib
import math
import threading

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from .parallel import map_rows

GRID_BITS = 21
CHUNK = 1 << (53 - 2 * GRID_BITS)      # 2048: CHUNK * 2^21 * 2^21 = 2^53
PARALLEL_ELEMENTS = 1 << 20            # a grid of fewer values is rounded on one thread (a hand-off costs more)


def one_blas_thread():
    """A context with BLAS on one thread. No result here depends on the thread count; on a busy
    machine, BLAS threads that wait on each other make set-up several times slower."""
    return threadpool_limits(limits=1, user_api="blas")


def _row_steps(absmax, bits):
    """The grid step 2^(e - bits) of each row from its largest |value| (max < 2^e; 2^-bits for a
    row of zeros). Exact: frexp and ldexp only move the exponent."""
    _, e = np.frexp(absmax)
    return np.ldexp(np.ones_like(absmax, dtype=np.float64), e.astype(np.int64) - bits)


@numba.njit(cache=True, nogil=True)
def _row_grid(x2, as_int, sign_mask, bits, out, steps):
    """Each row of x2 on its grid: steps[r] = 2^(e - bits) (max |x2[r]| < 2^e), out = rint(x / step)
    (multiplying by the power of two 2^(bits - e) is exact). The largest |x| is found on the bit
    patterns (`as_int`: x2 viewed as integers of its width; |x| orders as its pattern without the
    sign bit), an integer maximum that vectorises."""
    top = np.empty(1, as_int.dtype)
    for r in range(x2.shape[0]):
        m = as_int[r, 0] & sign_mask
        for j in range(1, x2.shape[1]):
            m = max(m, as_int[r, j] & sign_mask)
        top[0] = m
        e = math.frexp(np.float64(top.view(x2.dtype)[0]))[1]
        steps[r] = math.ldexp(1.0, e - bits)
        inv = math.ldexp(1.0, bits - e)
        for j in range(x2.shape[1]):
            out[r, j] = np.rint(np.float64(x2[r, j]) * inv)


@numba.njit(cache=True, nogil=True)
def _col_absmax(x2, out):
    out[:] = 0.0
    for r in range(x2.shape[0]):
        for c in range(x2.shape[1]):
            out[c] = max(out[c], abs(np.float64(x2[r, c])))


@numba.njit(cache=True, nogil=True)
def _col_round(x2, inv, out):
    for r in range(x2.shape[0]):
        for c in range(x2.shape[1]):
            out[r, c] = np.rint(np.float64(x2[r, c]) * inv[c])


def _col_grid(x2, bits):
    """A 2-D array's columns on their grids (as _row_grid does rows), in its own layout."""
    x2 = np.ascontiguousarray(x2)
    parts = map_rows(lambda a, b: _col_absmax_of(x2[a:b]), x2.shape[0], x2.size, PARALLEL_ELEMENTS)
    steps = _row_steps(np.max(parts, axis=0), bits)
    inv = 1.0 / steps                        # exact: powers of two
    n = np.empty(x2.shape)
    map_rows(lambda a, b: _col_round(x2[a:b], inv, n[a:b]), x2.shape[0], x2.size, PARALLEL_ELEMENTS)
    return n, steps[None, :]


def _col_absmax_of(x2):
    out = np.empty(x2.shape[1])
    _col_absmax(x2, out)
    return out


def grid_slices(x, axis, slices=1, bits=GRID_BITS):
    """x (any float dtype) as `slices` integer-valued float64 arrays n_0, n_1, ... and the grid step
    of every line along `axis` (kept as an axis of length 1): x ~= sum_s n_s * step * 2^(-bits s),
    each |n_s| <= 2^bits. The first slice rounds x to the grid (rint: ties to even), each further
    one rounds what is left on a grid 2^bits finer."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    if slices == 1 and x.size and x.ndim == 2 and axis % 2 == 0:
        n, steps = _col_grid(x, bits)
        return [n], steps
    if slices == 1 and x.size:
        lines = np.ascontiguousarray(np.moveaxis(x, axis, -1))
        x2 = lines.reshape(-1, lines.shape[-1])
        n, steps = np.empty(x2.shape), np.empty(x2.shape[0])
        as_int, sign_mask = (x2.view(np.int32), 0x7FFFFFFF) if x2.dtype == np.float32 else \
            (x2.view(np.int64), 0x7FFFFFFFFFFFFFFF)
        map_rows(lambda a, b: _row_grid(x2[a:b], as_int[a:b], sign_mask, bits, n[a:b], steps[a:b]),
                 x2.shape[0], x2.size, PARALLEL_ELEMENTS)
        return ([np.moveaxis(n.reshape(lines.shape), -1, axis)],
                np.moveaxis(steps.reshape(lines.shape[:-1] + (1,)), -1, axis))
    x = x.astype(np.float64, copy=False)
    step = _row_steps(np.max(np.abs(x), axis=axis, keepdims=True, initial=0.0), bits)
    rest = x / step                          # exact: a power of two
    out = []
    for s in range(slices):
        n = np.rint(rest)
        out.append(n)
        if s + 1 < slices:
            rest = (rest - n) * float(1 << bits)   # exact: |rest - n| <= 1/2 on a finer grid
    return out, step


def matmul(a, b, slices=1):
    """a (..., M, K) @ b (..., K, N) in float64, the same bits on every machine: both operands on
    grids (rows of a, columns of b; `grid_slices`), the inner dimension in chunks of CHUNK, each
    chunk's product exact in float64 BLAS, the chunks and slice pairs added in a fixed order. Leading
    axes broadcast as in np.matmul; b may be 2-D (a weight)."""
    total, step_a, step_b = _grid_product(a, b, slices)
    total *= step_a                          # exact: powers of two
    total *= step_b
    return total


def _grid_product(a, b, slices):
    """(sum of the exact products of the grid slices, in units of the steps; the steps of a's rows
    and b's columns): matmul before its scaling."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: operands {a.shape} @ {b.shape} do not fit")
    sa, step_a = grid_slices(a, -1, slices)
    sb, step_b = grid_slices(b, -2, slices)
    k = a.shape[-1]
    total = None
    # slice pairs by significance (i + j), the larger terms first; within one, i ascending
    for order in range(2 * slices - 1):
        for i in range(max(0, order - slices + 1), min(order, slices - 1) + 1):
            part = _chunked(sa[i], sb[order - i], k)
            if order:
                part *= 2.0 ** (-GRID_BITS * order)
            total = part if total is None else np.add(total, part, out=total)
    return total, step_a, step_b


def _chunked(a, b, k):
    """sum over inner chunks of a[..., c] @ b[..., c, :], chunk by chunk in order (each exact)."""
    if k <= CHUNK:
        return _rows_matmul(a, b)
    out = _rows_matmul(a[..., :CHUNK], b[..., :CHUNK, :])
    for c in range(CHUNK, k, CHUNK):
        out += _rows_matmul(a[..., c:c + CHUNK], b[..., c:c + CHUNK, :])
    return out


_split = threading.local()


@contextlib.contextmanager
def products_over_threads():
    """Within it, this thread's 2-D products split their rows over parallel.map_rows' threads (BLAS
    itself stays on one thread, one_blas_thread): every element is exact, so the split changes no
    bit. For work that leaves cores idle (compile); calibration's float graph shares the cores
    with the observers' thread instead."""
    before = getattr(_split, "on", False)
    _split.on = True
    try:
        yield
    finally:
        _split.on = before


def _rows_matmul(a, b):
    """np.matmul, the rows of a 2-D left operand over threads inside products_over_threads."""
    if a.ndim != 2 or b.ndim != 2 or not getattr(_split, "on", False):
        return np.matmul(a, b)
    out = np.empty((a.shape[0], b.shape[1]))
    map_rows(lambda r0, r1: np.matmul(a[r0:r1], b, out=out[r0:r1]), a.shape[0],
             a.shape[0] * a.shape[1] * b.shape[1] // 64)
    return out


GRAM_BITS = 20
GRAM_CHUNK = 1 << (53 - 2 * GRAM_BITS)   # 8192 rows: 8192 * 2^20 * 2^20 = 2^53


def gram(x):
    """X^T X (C, C) in float64 of the rows of x (..., C), the same bits on every machine: each
    channel (column) on its grid of GRAM_BITS bits, rows in chunks of GRAM_CHUNK (a calibration
    batch of DeiT's 197-token images in one or two), each chunk's X^T X exact (BLAS syrk where
    NumPy finds it), chunks added in order."""
    x2 = np.asarray(x).reshape(-1, np.shape(x)[-1])
    (n,), step = grid_slices(x2, 0, bits=GRAM_BITS)
    out = None
    for r in range(0, max(len(n), 1), GRAM_CHUNK):
        c = n[r:r + GRAM_CHUNK]
        part = c.T @ c
        out = part if out is None else np.add(out, part, out=out)
    out *= step.T
    out *= step
    return out


def linear(x, weight, bias=None, dtype=np.float32):
    """x (..., In) @ weight(Out, In)^T + bias in `dtype`: the product by `matmul` (two slices for
    float64), scaled, the bias added in float64 and the result rounded once to dtype in one pass."""
    x2 = np.asarray(x).reshape(-1, np.shape(x)[-1])
    total, step_rows, step_cols = _grid_product(x2, np.asarray(weight).T, slices_for(dtype))
    b = np.zeros(total.shape[1]) if bias is None else np.asarray(bias, dtype=np.float64)
    out = np.empty(total.shape, dtype=dtype)
    with np.errstate(over="ignore"):
        map_rows(lambda r0, r1: _finish(total[r0:r1], step_rows[r0:r1, 0], step_cols[0], b, out[r0:r1]),
                 total.shape[0], total.size, PARALLEL_ELEMENTS)
    return out.reshape(np.shape(x)[:-1] + (np.shape(weight)[0],))


@numba.njit(cache=True, nogil=True)
def _finish(total, step_rows, step_cols, bias, out):
    """out = total * step_row * step_col + bias, rounded once to out's dtype (the scalings are exact)."""
    for r in range(total.shape[0]):
        for c in range(total.shape[1]):
            out[r, c] = total[r, c] * step_rows[r] * step_cols[c] + bias[c]


def product(a, b, dtype):
    """The float interpreter's a @ b in `dtype`: `matmul` (two slices for float64), scaled and
    rounded once to dtype in one pass."""
    total, step_a, step_b = _grid_product(a, b, slices_for(dtype))
    m, n = total.shape[-2:]
    out = np.empty(total.shape, dtype=dtype)
    t3, o3 = total.reshape(-1, m, n), out.reshape(-1, m, n)
    sa = np.ascontiguousarray(np.broadcast_to(step_a, total.shape[:-1] + (1,))).reshape(-1, m)
    sb = np.ascontiguousarray(np.broadcast_to(step_b, total.shape[:-2] + (1, n))).reshape(-1, n)
    with np.errstate(over="ignore"):
        map_rows(lambda g0, g1: _scale_round(t3[g0:g1], sa[g0:g1], sb[g0:g1], o3[g0:g1]), len(t3),
                 total.size, PARALLEL_ELEMENTS)
    return out


@numba.njit(cache=True, nogil=True)
def _scale_round(total, step_rows, step_cols, out):
    """out[g] = total[g] * step_row * step_col, rounded once to out's dtype (the scalings are exact)."""
    for g in range(total.shape[0]):
        for r in range(total.shape[1]):
            for c in range(total.shape[2]):
                out[g, r, c] = total[g, r, c] * step_rows[g, r] * step_cols[g, c]


def slices_for(dtype):
    """The interpreter's grid slices: one for float32 (21 bits per operand), two for float64."""
    return 2 if np.dtype(dtype) == np.float64 else 1


# --- sums -----------------------------------------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _row_sums(x2, out):
    for r in range(x2.shape[0]):
        s = 0.0
        for j in range(x2.shape[1]):
            s += x2[r, j]
        out[r] = s


def row_sums(x, axes=-1):
    """Sums of x over `axes` (an int or a tuple) in float64, each a sequential accumulation in the
    index order of the summed axes (C order); the other axes keep their order (keepdims)."""
    x = np.asarray(x, dtype=np.float64)
    axes = tuple(a % x.ndim for a in ((axes,) if np.ndim(axes) == 0 else axes))
    keep = [a for a in range(x.ndim) if a not in axes]
    moved = np.ascontiguousarray(np.transpose(x, keep + list(axes)))
    lead = moved.shape[:len(keep)]
    x2 = moved.reshape(int(np.prod(lead, dtype=np.int64)), -1)
    out = np.empty(x2.shape[0])
    _row_sums(x2, out)
    shape = [1 if a in axes else x.shape[a] for a in range(x.ndim)]
    return out.reshape(shape)


def total(x):
    """The sum of every value of x in float64, in C order, one sequential accumulation."""
    flat = np.ascontiguousarray(x, dtype=np.float64).reshape(1, -1)
    out = np.empty(1)
    _row_sums(flat, out)
    return float(out[0])


def mean(x):
    """total(x) / count."""
    x = np.asarray(x)
    return total(x) / max(x.size, 1)


def linspace(lo, hi, n):
    """n >= 2 points from lo to hi: lo + i * ((hi - lo) / (n - 1)), the last exactly hi."""
    out = lo + np.arange(n) * ((hi - lo) / (n - 1))
    out[-1] = hi
    return out


def dot(a, b):
    """sum(a * b) of two vectors: each product rounded to float64 once, summed in order."""
    return total(np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64))


# --- GPTQ's factor ----------------------------------------------------------------------------------

BLOCK = 128


def inverse_upper_cholesky(h):
    """The upper Cholesky factor U of H^-1 (H^-1 = U^T U), H symmetric positive definite, without
    forming H^-1: with J the reversal of the index order and J H J = M M^T (M lower), U = J M^-1 J.
    `cholesky` and `lower_inverse` below, both blocked with `matmul` products."""
    m = cholesky(np.ascontiguousarray(h[::-1, ::-1]))
    return np.ascontiguousarray(lower_inverse(m)[::-1, ::-1])


def cholesky(h):
    """The lower Cholesky factor L of H (H = L L^T): right-looking by blocks of BLOCK columns, each
    diagonal block by the unblocked algorithm (numba), the panel below it as A21 (L11^-1)^T and the
    trailing update by `matmul`."""
    a = np.array(h, dtype=np.float64)
    n = len(a)
    for k0 in range(0, n, BLOCK):
        k1 = min(k0 + BLOCK, n)
        if not _cholesky_block(a, k0, k1):
            raise np.linalg.LinAlgError("matrix is not positive definite")
        if k1 < n:
            a[k1:, k0:k1] = matmul(a[k1:, k0:k1], lower_inverse(np.tril(a[k0:k1, k0:k1])).T)
            subtract_outer_lower(a[k1:, k1:], a[k1:, k0:k1])
    return np.tril(a)


def subtract_outer_lower(a, p):
    """a -= p @ p^T on and below the diagonal (what a Cholesky reads; the values above it are left
    stale), the product like `matmul` (rows and columns on the same grids, the inner dimension at
    most BLOCK). In two row bands - the first, rows below m / sqrt(2), one symmetric product
    (BLAS syrk), the rest against every earlier row - which products_over_threads runs on two
    threads (about the same work each); every element is exact, so the split changes no bit."""
    (n,), step = grid_slices(p, -1)
    m = len(n)
    cut = int(m / math.sqrt(2.0))

    def band(r0, r1):
        rows = n[r0:r1] @ n[:r1].T          # the first band: one buffer against itself, syrk
        rows *= step[r0:r1]
        rows *= step[:r1].T
        a[r0:r1, :r1] -= rows

    if getattr(_split, "on", False) and 0 < cut < m and m * m * n.shape[1] >= 1 << 22:
        bands = [(0, cut), (cut, m)]
        # map_rows hands each thread a range of bands: both bands in one call on one thread
        map_rows(lambda i, j: [band(*bands[k]) for k in range(i, j)], 2, 1 << 30)
    else:
        band(0, m)


@numba.njit(cache=True, nogil=True)
def _cholesky_block(a, k0, k1):
    """The diagonal block a[k0:k1, k0:k1] factored in place (its lower triangle), each inner sum in
    index order; False if it is not positive definite."""
    for j in range(k0, k1):
        d = a[j, j]
        for p in range(k0, j):
            d -= a[j, p] * a[j, p]
        if not d > 0.0:
            return False
        d = np.sqrt(d)
        a[j, j] = d
        for i in range(j + 1, k1):
            s = a[i, j]
            for p in range(k0, j):
                s -= a[i, p] * a[j, p]
            a[i, j] = s / d
    return True


def lower_inverse(m):
    """The inverse of a lower-triangular matrix, by halves: [[A, 0], [C, D]]^-1 =
    [[A^-1, 0], [-D^-1 C A^-1, D^-1]], the products by `matmul`, blocks of at most BLOCK by
    forward substitution (numba)."""
    n = len(m)
    if n <= BLOCK:
        out = np.zeros((n, n))
        _lower_inverse_small(np.ascontiguousarray(m, dtype=np.float64), out)
        return out
    k = n // 2
    a_inv, d_inv = lower_inverse(m[:k, :k]), lower_inverse(m[k:, k:])
    out = np.zeros_like(m, dtype=np.float64)
    out[:k, :k], out[k:, k:] = a_inv, d_inv
    out[k:, :k] = -matmul(matmul(d_inv, m[k:, :k]), a_inv)
    return out


@numba.njit(cache=True, nogil=True)
def _lower_inverse_small(m, out):
    """Column j of L^-1 by forward substitution on e_j, each sum in index order."""
    n = m.shape[0]
    for j in range(n):
        out[j, j] = 1.0 / m[j, j]
        for i in range(j + 1, n):
            s = 0.0
            for p in range(j, i):
                s -= m[i, p] * out[p, j]
            out[i, j] = s / m[i, i]
