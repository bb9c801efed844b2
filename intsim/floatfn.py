"""The float functions the integer kernels approximate, defined once: the float interpreter
evaluates the semantic graph with them, and the kernels use them as their float references (the
Poly-GELU fitter, the error bounds, the accuracy tables). float64 or float32, as given."""
import math

import numba
import numpy as np

from .parallel import map_rows


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def erf(x):
    """Element-wise erf (NumPy has none; numba's math.erf is the C library's, as Python's is)."""
    return math.erf(x)


@numba.njit(cache=True, nogil=True)
def _gelu_flat(x, out):
    # Not a numba parallel region: its OpenMP threads spin and slow the BLAS matmuls around it
    # several-fold on a busy 2-core machine; parallel.map_rows splits it over sleeping threads.
    half, rsqrt2 = x.dtype.type(0.5), x.dtype.type(1 / math.sqrt(2))
    for i in range(x.size):
        out[i] = half * x[i] * (1 + math.erf(x[i] * rsqrt2))


def gelu(x):
    """Exact GELU, x/2 * (1 + erf(x/sqrt 2)), in x's dtype (float32 or float64; others as float64)."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    map_rows(lambda a, b: _gelu_flat(flat_x[a:b], flat_out[a:b]), x.size, x.size)
    return out


def softmax(x):
    """Softmax over the last axis (max subtracted first), in x's dtype."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def layer_norm(x, gamma, beta, eps):
    """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis, in x's dtype."""
    mean = x.mean(axis=-1, keepdims=True)
    d = x - mean
    var = np.mean(d * d, axis=-1, keepdims=True)
    return d / np.sqrt(var + x.dtype.type(eps)) * gamma + beta


def sigmoid(x):
    """1 / (1 + exp(-x)) in x's dtype, without overflow: exp of -|x| only."""
    x = np.asarray(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def quick_gelu(x, alpha):
    """x * sigmoid(alpha * x) in x's dtype (CLIP's QuickGELU: alpha = 1.702; SiLU: alpha = 1)."""
    x = np.asarray(x)
    return x * sigmoid(x * x.dtype.type(alpha))
