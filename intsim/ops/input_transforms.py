"""How a Linear's activation operand is prepared before its requantization to `abits`, the float
function unchanged each time (docs/quantization.md):

    equalization_factors  Q5: per-channel factors folded into a LayerNorm's gamma / beta
    smoothing_factors     Q7 (`smooth`): a per-channel requantization of another wide input
    rotation_block        Q8 (`rotate`): a block Hadamard rotation (spec K10), chosen per Linear
                          when it lowers the estimated error of the Linear's output

The weight columns take the inverse of each (W x f, or W H)."""
import numpy as np

from ..arith import IntFormat
from ..errors import CompileError
from ..kernels import hadamard
from ..quantize import quantization_error, weight_format
from .hadamard import rotated_name


def equalization_factors(b, node, rotation_aware=True):
    """SmoothQuant-style factors f (per channel) for a LayerNorm whose output feeds only Linear
    layers: f_c = a_c^alpha / w_c^(1 - alpha), a_c the calibrated max |y_c|, w_c the largest
    |weight| of input channel c over the consumers; normalised to geometric mean 1. The float
    function is unchanged (gamma/f, beta/f, W*f); the 8-bit activation no longer has to cover
    outlier channels. None when disabled or not applicable, or (rotation_aware) when every
    consumer rotates the output instead (Q8)."""
    alpha = float(b.cfg.equalize)
    consumers = b.graph.consumers(node.outputs[0])
    if alpha <= 0 or not consumers or any(c.op != "Linear" for c in consumers):
        return None
    if rotation_aware and all(rotation_wanted(b, c) for c in consumers):
        return None
    a = np.asarray(b.observer(node.outputs[0]).chan_absmax, dtype=np.float64)
    w = np.max([np.abs(c.params["weight"]).max(axis=0) for c in consumers], axis=0)
    if a.shape != w.shape or not (a > 0).all() or not (w > 0).all():
        return None
    f = a ** alpha / w ** (1 - alpha)
    return np.clip(f / np.exp(np.mean(np.log(f))), 1e-4, 1e4)


def smoothing_factors(b, node):
    """SmoothQuant-style per-channel factors for a Linear input that is requantized anyway (a
    per-tensor integer tensor wider than its operand, e.g. a GELU output before fc2), or None:
    f_c = a_c^alpha / w_c^(1-alpha) with alpha = QuantConfig.smooth, a_c the calibrated max |x_c|,
    w_c the largest |weight| of input channel c, normalised to a geometric mean of 1
    (docs/quantization.md Q7). The requantization then divides channel c by f_c (one per-channel
    multiplier) and the weight column takes f_c: the float function is unchanged."""
    src = node.inputs[0]
    info = b.tensors[b.realised[src]]
    if (b.cfg.smooth <= 0 or isinstance(info.scale, list) or info.axis != -1
            or info.fmt.bits <= b.operand_bits(f"{node.name}.in")):
        return None
    a = np.asarray(b.observer(src).chan_absmax, dtype=np.float64)
    w = np.abs(np.asarray(node.params["weight"], dtype=np.float64)).max(axis=0)
    if a.shape != w.shape or not (a > 0).all() or not (w > 0).all():
        return None
    f = a ** b.cfg.smooth / w ** (1.0 - b.cfg.smooth)
    return f / np.exp(np.mean(np.log(f)))


def rotation_wanted(b, node):
    """Q8's choice for a Linear: the Hadamard block B (0: no rotation). B is the largest power of
    two dividing the input's channels, at most QuantConfig.rotate; the input is rotated when the
    Linear's output error estimated for the rotated operand and weight is below the estimate for
    the operand the compiler makes otherwise (equalized, smoothed or plain): `output_error`.
    Decided once per Linear (the LayerNorm, data movement and the Linear itself ask)."""
    key = ("rotation", node.name)
    if key not in b.choices:
        b.choices[key] = _rotation_choice(b, node)
    return b.choices[key]


def _rotation_choice(b, node):
    src = node.inputs[0]
    obs = b.obs.get(src)        # the Linear's own input (its twin's channels), not a moved-from tensor
    if obs is None:
        raise CompileError(f"no calibration statistics for tensor {src!r}")
    block = hadamard.block_for(len(obs.chan_absmax), b.cfg.rotate) if obs.chan_absmax is not None else 0
    if not block:
        return 0
    twin = b.obs.get(rotated_name(src, block))
    if twin is None:
        raise CompileError(f"Linear {node.name!r}: rotate={b.cfg.rotate} needs the statistics of its "
                           f"input rotated by blocks of {block}: calibrate with rotate={b.cfg.rotate}")
    w = np.asarray(node.params["weight"], dtype=np.float64)
    bits = b.operand_bits(f"{node.name}.in")
    producer = b.graph.producer(src)
    f = equalization_factors(b, producer, rotation_aware=False) if producer is not None and \
        producer.op == "LayerNorm" else None
    if f is None and src in b.realised:
        f = smoothing_factors(b, node)
    rotated = output_error(b, twin, hadamard.rotate_float(w, block), bits)
    plain = output_error(b, obs.divided(f), w * f[None, :], bits, f) if f is not None else \
        output_error(b, obs, w, bits)
    return block if rotated < plain else 0


def output_error(b, obs, w, bits, factors=None):
    """The squared error per token of y = z W^T when the operand z (the observer's tensor: x, x / f
    or x H) is quantized to `bits` at its calibrated scale and W to the weight format: the operand's
    mean squared error (in x's units: factors) times ||W||_F^2, plus the weight's rounding error,
    uniform over a step of max|W_o| / qmax per output row (variance step^2 / 12), times the
    operand's energy E||z||^2 (from the reservoir). Both terms treat the errors as uncorrelated:
    an estimate to compare two preparations of one Linear, no more."""
    fmt = IntFormat(bits, signed=not obs.nonnegative)
    act = quantization_error(obs, fmt, obs.scale(fmt, b.cfg.act_calib, b.cfg.percentile), factors)
    step = np.abs(w).max(axis=1) / weight_format(b.cfg.wbits).hi
    energy = float(np.sum(channel_energy(obs, w.shape[1])))
    return act / max(obs.count, 1) * float(np.sum(w ** 2)) + energy * float(np.sum(step ** 2)) / 12


def channel_energy(obs, channels):
    """E[z_c^2] per channel from the observer's reservoir sample (its channel indices); channels the
    sample missed get the mean."""
    sq = np.bincount(obs.sample_chan, weights=np.asarray(obs.sample, np.float64) ** 2, minlength=channels)
    n = np.bincount(obs.sample_chan, minlength=channels)
    mean = float(sq.sum() / max(n.sum(), 1))
    return np.where(n > 0, sq / np.maximum(n, 1), mean)[:channels]


def rotation_block(b, node):
    """The Hadamard block a Linear's input is rotated with when lowered (0: none): Q8's choice,
    where the input's integer tensor is at one real scale and wider than the operand (it is
    requantized anyway, so the rotation adds no rounding of its own at abits)."""
    src = node.inputs[0]
    info = b.tensors[b.realised[src]]
    bits = b.operand_bits(f"{node.name}.in")
    if isinstance(info.scale, list) or info.axis != -1 or info.fmt.bits <= bits:
        return 0
    return rotation_wanted(b, node)
