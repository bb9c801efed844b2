"""The float functions the integer kernels approximate, defined once: the float interpreter
evaluates the semantic graph with them, and the kernels use them as their float references (the
Poly-GELU fitter, the error bounds, the accuracy tables).

Each is computed in float64 with intsim.elementary's exp and erf and sequential sums (numba loops,
no fastmath), then rounded once to the input's dtype (float32 or float64; other inputs give
float64): the same bits on every machine (docs/quantization.md Q18), which calibration needs since
its statistics decide the program's integers."""
import math

import numba
import numpy as np

from . import elementary
from .parallel import map_rows

RSQRT2 = 1.0 / math.sqrt(2.0)       # sqrt and / are correctly rounded: the same float everywhere


def _as_float(x):
    """x as a C-contiguous float32 or float64 array (anything else as float64)."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    return np.ascontiguousarray(x)


def _by_rows(kernel, x, *args):
    """kernel(x2[a:b], out2[a:b], *args) over the rows of x's last axis, split over threads
    (parallel.map_rows: each row computed as a serial loop computes it)."""
    x = _as_float(x)
    out = np.empty_like(x)
    if x.size == 0:
        return out
    x2, out2 = x.reshape(-1, x.shape[-1] if x.ndim else 1), out.reshape(-1, x.shape[-1] if x.ndim else 1)
    map_rows(lambda a, b: kernel(x2[a:b], out2[a:b], *args), x2.shape[0], x.size)
    return out


def erf(x):
    """Element-wise erf in float64 (intsim.elementary)."""
    return elementary.erf(x)


@numba.njit(cache=True, nogil=True)
def _gelu_rows(x2, out2):
    # Not a numba parallel region: its OpenMP threads spin and slow the BLAS products around it
    # several-fold on a busy 2-core machine; parallel.map_rows splits it over sleeping threads.
    for r in range(x2.shape[0]):
        for j in range(x2.shape[1]):
            v = np.float64(x2[r, j])
            out2[r, j] = 0.5 * v * (1.0 + elementary.erf1(v * RSQRT2))


def gelu(x):
    """Exact GELU, x/2 * (1 + erf(x/sqrt 2)), in x's dtype (float32 or float64; others as float64)."""
    return _by_rows(_gelu_rows, x)


@numba.njit(cache=True, nogil=True)
def _softmax_rows(x2, out2):
    e = np.empty(x2.shape[1])
    for r in range(x2.shape[0]):
        m = -np.inf
        for j in range(x2.shape[1]):
            m = max(m, np.float64(x2[r, j]))
        for j in range(x2.shape[1]):          # its own loop: it vectorises, the sum would not
            e[j] = elementary.exp1(np.float64(x2[r, j]) - m)
        s = 0.0
        for j in range(x2.shape[1]):
            s += e[j]
        for j in range(x2.shape[1]):
            out2[r, j] = e[j] / s


def softmax(x):
    """Softmax over the last axis (max subtracted first), in x's dtype."""
    return _by_rows(_softmax_rows, x)


@numba.njit(cache=True, nogil=True)
def _layer_norm_rows(x2, out2, gamma, beta, eps):
    c = x2.shape[1]
    for r in range(x2.shape[0]):
        s = 0.0
        for j in range(c):
            s += np.float64(x2[r, j])
        mean = s / c
        v = 0.0
        for j in range(c):
            d = np.float64(x2[r, j]) - mean
            v += d * d
        inv = 1.0 / np.sqrt(v / c + eps)
        for j in range(c):
            out2[r, j] = (np.float64(x2[r, j]) - mean) * inv * gamma[j] + beta[j]


def layer_norm(x, gamma, beta, eps):
    """(x - mean) * (1 / sqrt(var + eps)) * gamma + beta over the last axis, in x's dtype (gamma
    and beta: arrays over the last axis or scalars)."""
    x = _as_float(x)
    c = x.shape[-1]
    g = np.ascontiguousarray(np.broadcast_to(np.asarray(gamma, dtype=np.float64), (c,)))
    b = np.ascontiguousarray(np.broadcast_to(np.asarray(beta, dtype=np.float64), (c,)))
    return _by_rows(_layer_norm_rows, x, g, b, float(eps))


@numba.njit(cache=True, nogil=True)
def _sigmoid1(v):
    """1 / (1 + exp(-v)) without overflow: exp of -|v| only."""
    e = elementary.exp1(-abs(v))
    return 1.0 / (1.0 + e) if v >= 0 else e / (1.0 + e)


@numba.njit(cache=True, nogil=True)
def _sigmoid_rows(x2, out2, alpha, times_x):
    for r in range(x2.shape[0]):
        for j in range(x2.shape[1]):
            v = np.float64(x2[r, j])
            s = _sigmoid1(v * alpha)
            out2[r, j] = v * s if times_x else s


def sigmoid(x):
    """1 / (1 + exp(-x)) in x's dtype."""
    return _by_rows(_sigmoid_rows, x, 1.0, False)


def quick_gelu(x, alpha):
    """x * sigmoid(alpha * x) in x's dtype (CLIP's QuickGELU: alpha = 1.702; SiLU: alpha = 1), with
    alpha * x in float64."""
    return _by_rows(_sigmoid_rows, x, float(alpha), True)
