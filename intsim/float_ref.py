"""Float interpreter of the semantic graph (intsim.graph): the reference the integer program is
measured against and the source of calibration statistics.

`run_float(graph, images)` evaluates the nodes in order with NumPy (BLAS matmuls), in float32 by
default or float64. `observe(tensor_name, array)` is called for the input and for every tensor
produced, as soon as it exists; arrays are freed after their last use, so a caller streaming over
batches (calibration) holds one batch of activations at a time. Observers must not modify the array.
"""
import math

import numba
import numpy as np

from .graph import GraphError


class FloatRefError(ValueError):
    """Bad input to the float interpreter (wrong image shape, dtype, empty batch)."""


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def erf(x):
    """Element-wise erf (NumPy has none; numba's math.erf is libm's)."""
    return math.erf(x)


@numba.njit(cache=True)
def _gelu_flat(x, out):
    # Serial on purpose: a numba parallel region leaves OpenMP threads spinning that slow the
    # BLAS matmuls around it several-fold on a busy 2-core machine.
    half, rsqrt2 = x.dtype.type(0.5), x.dtype.type(1 / math.sqrt(2))
    for i in range(x.size):
        out[i] = half * x[i] * (1 + math.erf(x[i] * rsqrt2))


def gelu(x):
    """Exact GELU, x/2 * (1 + erf(x/sqrt 2)), in x's dtype (float32 or float64)."""
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    _gelu_flat(x.reshape(-1), out.reshape(-1))
    return out


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(axis=-1, keepdims=True)
    d = x - mean
    var = np.mean(d * d, axis=-1, keepdims=True)
    return d / np.sqrt(var + x.dtype.type(eps)) * gamma + beta


def patch_embed(x, weight, bias, patch):
    """Conv2d(kernel = stride = patch, no padding) as one matmul; rows/columns that do not fill a
    whole patch are dropped, as the convolution does. (N,C,Hi,Wi) -> (N,P,D), P row-major."""
    n, c, hi, wi = x.shape
    gh, gw = hi // patch, wi // patch
    x = x[:, :, :gh * patch, :gw * patch].reshape(n, c, gh, patch, gw, patch)
    cols = x.transpose(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, c * patch * patch)
    return cols @ weight.reshape(weight.shape[0], -1).T + bias


def _eval(node, ins, dtype):
    p = {k: np.asarray(v, dtype=dtype) for k, v in node.params.items()}
    a = node.attrs
    x = ins[0]
    op = node.op
    if op == "PatchEmbed":
        return [patch_embed(x, p["weight"], p["bias"], int(a["patch"]))]
    if op == "ClsPos":
        cls = np.broadcast_to(p["cls"], (x.shape[0], 1, x.shape[2]))
        return [np.concatenate([cls, x], axis=1) + p["pos"]]
    if op == "LayerNorm":
        return [layer_norm(x, p["gamma"], p["beta"], a["eps"])]
    if op == "Linear":     # one 2-D BLAS call: numpy's stacked matmul is slower
        y = x.reshape(-1, x.shape[-1]) @ p["weight"].T
        if "bias" in p:
            y += p["bias"]
        return [y.reshape(x.shape[:-1] + (y.shape[-1],))]
    if op == "QKVSplit":
        n, t, d3 = x.shape
        h = int(a["heads"])
        qkv = x.reshape(n, t, 3, h, d3 // (3 * h)).transpose(2, 0, 3, 1, 4)
        return [np.ascontiguousarray(qkv[i]) for i in range(3)]   # strided views defeat BLAS
    if op == "AttnScores":
        return [(ins[0] * dtype(a["scale"])) @ ins[1].swapaxes(-1, -2)]
    if op == "Softmax":
        return [softmax(x)]
    if op == "AttnContext":
        ctx = x @ ins[1]                           # (N,H,T,Dh)
        n, h, t, dh = ctx.shape
        return [ctx.transpose(0, 2, 1, 3).reshape(n, t, h * dh)]
    if op == "GELU":
        return [gelu(x)]
    if op == "Add":
        return [ins[0] + ins[1]]
    if op == "ClsSelect":
        return [x[:, 0]]
    raise GraphError(f"node {node.name!r}: the float interpreter has no op {op!r}")


def check_images(graph, images):
    """Return images as an (N,C,H,W) array, raising FloatRefError naming what is wrong."""
    x = np.asarray(images)
    want = tuple(graph.input_shape)
    shape_txt = f"(N, {', '.join(map(str, want))})"
    if x.dtype.kind not in "fiub":
        raise FloatRefError(f"images must be a real numeric array, got dtype {x.dtype}")
    if x.ndim != 4:
        raise FloatRefError(f"images must have 4 dimensions {shape_txt}, got shape {x.shape}")
    if x.shape[0] == 0:
        raise FloatRefError("images: empty batch (N = 0)")
    if x.shape[1] != want[0]:
        raise FloatRefError(f"images have {x.shape[1]} channels, the model expects {want[0]} "
                            f"(shape {shape_txt}, got {x.shape})")
    if x.shape[2:] != want[1:]:
        raise FloatRefError(f"images are {x.shape[2]}x{x.shape[3]}, the model expects "
                            f"{want[1]}x{want[2]} (shape {shape_txt}, got {x.shape})")
    return x


def run_float(graph, images_float, observe=None, dtype=np.float32):
    """Evaluate `graph` on images (N, C, H, W) and return the output (logits, (N, classes)) in
    `dtype` (np.float32 or np.float64). `observe(name, array)` sees every tensor, input included."""
    dtype = np.dtype(dtype).type
    if dtype not in (np.float32, np.float64):
        raise FloatRefError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
    x = np.ascontiguousarray(check_images(graph, images_float), dtype=dtype)
    uses = {}
    for n in graph.nodes:
        for t in n.inputs:
            uses[t] = uses.get(t, 0) + 1
    uses[graph.output_name] = uses.get(graph.output_name, 0) + 1   # keep the output alive
    env = {graph.input_name: x}
    if observe is not None:
        observe(graph.input_name, x)
    for n in graph.nodes:
        try:
            ins = [env[t] for t in n.inputs]
        except KeyError as e:
            raise GraphError(f"node {n.name!r} reads tensor {e} before it is produced") from None
        outs = _eval(n, ins, dtype)
        for t in n.inputs:      # free activations after their last reader
            uses[t] -= 1
            if uses[t] == 0:
                del env[t]
        for t, v in zip(n.outputs, outs):
            env[t] = v
            if observe is not None:
                observe(t, v)
    return env[graph.output_name]
