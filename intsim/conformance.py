"""Conformance vectors: directed corner cases plus seeded random vectors for every kernel.

`write_conformance(out_dir)` writes one directory in the golden dump format (docs/golden.md:
manifest.json of schema "intsim-golden", act/ and const/ files, npy / bin / hex), readable with
`intsim.golden.load`. Each op record is one (kernel, case): its name is `<kernel>.<case>`, its
`attrs` hold `kernel` and `case`, and its tensors are `act/<kernel>.<case>.<in|out|...>` and
`const/<kernel>.<case>.<constant>`. A testbench picks the cases of one kernel by `attrs.kernel`.

Each case is a one-op integer program (`case_program`): its expected outputs are *computed* by
that op's reference path through the op registry (`ops.program_op(kind).run(..., "reference")`,
the plain NumPy kernels), never written by hand, and its constants are checked against and written
in the registers their op declares, exactly as a model's golden dump writes them. The cases are
designed to reach the corners named in the spec's coverage bins (docs/conformance.md);
`intsim.coverage` checks that they actually do, from the dumped inputs and constants alone.
"""
from dataclasses import dataclass, field
from fractions import Fraction
import math
import zlib

import numpy as np

from .arith import ArithSpecError, IntFormat, SPEC_VERSION, dyadic, dyadic_array
from .execute import check_output
from .golden import (GOLDEN_SCHEMA, SCHEMA_NAME, GoldenError, TensorWriter, TFormat, act_id,
                     check_formats, check_output as check_dump_output, check_pack, entry_format,
                     program_const, write_atomically, write_constants)
from .kernels import candidates
from .kernels.layernorm import isqrt_ref, ivit_std
from .kernels.softmax import IBERT_COEF
from .ops import check_constants, program_op
from .program import Op, Program, TensorInfo
from .version import __version__

CONFORMANCE_SCHEMA = "intsim-conformance"

# kernel name -> (op kind, spec section, family or None); the names a testbench selects by
KERNELS = {
    "requantize": ("requant", "A6", None),
    "residual-add": ("add", "K5", None),
    "matmul": ("linear", "K1", None),
    "bitshift-softmax": ("softmax", "K2.1", "softmax"),
    "ivit-shiftmax": ("softmax", "K2.2", "softmax"),
    "ibert-softmax": ("softmax", "K2.3", "softmax"),
    "poly-gelu": ("gelu", "K3.1", "gelu"),
    "ibert-gelu": ("gelu", "K3.2", "gelu"),
    "ivit-shiftgelu": ("gelu", "K3.3", "gelu"),
    "isqrt-layernorm": ("layernorm", "K4.2", "layernorm"),
    "ivit-layernorm": ("layernorm", "K4.3", "layernorm"),
    "data-movement": ("cls_pos", "K6", None),
    "relu": ("relu", "K7.1", None),
    "bitshift-sigmoid": ("sigmoid", "K8.1", "sigmoid"),
    "bitshift-quickgelu": ("quickgelu", "K8.2", "quickgelu"),
}


@dataclass
class Case:
    """One directed or random vector set of one kernel: inputs -> reference outputs."""
    kernel: str
    name: str
    kind: str                       # op kind of the integer program (intsim.ops)
    inputs: list                    # [(suffix, int array, IntFormat)]; axis 0 is the batch
    out_fmts: list                  # [IntFormat] per output
    consts: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    spec: str = ""
    out_names: tuple = ("out",)
    out_shape: tuple = None         # of every output, without the batch axis (None: the input's)


def _s(bits, narrow=False):
    return IntFormat(bits, signed=True, narrow=narrow)


def _u(bits):
    return IntFormat(bits, signed=False)


def _rand(rng, fmt, shape):
    return rng.integers(fmt.lo, fmt.hi + 1, size=shape, dtype=np.int64)


def _with_extremes(x, fmt):
    """x with its first elements replaced by the format's ends and 0 (every vector hits both ends)."""
    flat = x.reshape(-1)
    ends = [fmt.lo, fmt.hi, 0, fmt.lo + 1, fmt.hi - 1][:flat.size]
    flat[:len(ends)] = ends
    return x


# --- A6 requantize ------------------------------------------------------------------------------

def _requant_case(name, x, in_fmt, m, k, out_fmt):
    return Case("requantize", name, "requant", [("in", np.asarray(x, dtype=np.int64), in_fmt)],
                [out_fmt], {"m": m, "k": k})


def _requant_x_limit(m, k):
    """Largest |x| allowed by the A4 bound |x| m 2^max(-k, 0) + 2^62 <= 2^63 - 1."""
    return ((1 << 62) - 1) // (int(np.max(m)) << max(-int(np.min(k)), 0))


def _requantize_cases(rng):
    s32 = _s(32)
    odd = np.arange(-9, 10, 2)
    # ties of both signs: ratio 1/2 (m = 2^30, k = 31) on odd x, and the smallest shift (k = 2, B = 2)
    yield _requant_case("tie_half", odd, s32, 1 << 30, 31, _s(8))
    d = dyadic(0.5, bits=2)
    yield _requant_case("tie_k2_b2", odd, s32, d.m, d.k, _s(8))
    # ties at the widest shift: x = -2^31, m = 2^30, k = 62 is exactly -1/2 (rounds to 0)
    yield _requant_case("tie_k62", [-(1 << 31), -(1 << 31) + 1, (1 << 31) - 1, 0, 1, -1], s32,
                        1 << 30, 62, _s(8))
    # k = 62: a normalised m (ratio in [2^-32, 2^-31)) and a denormal one (ratio 1e-12)
    for tag, r in (("k62_norm", 0.999 * 2.0 ** -31), ("k62_denorm", 1e-12)):
        d = dyadic(r)
        x = _with_extremes(_rand(rng, s32, 64), s32)
        yield _requant_case(tag, x, s32, d.m, d.k, _s(8))
    # k = 0 and k < 0 (narrow multipliers of large ratios), down to k = -31
    for tag, r, bits, out in (("k0", 200.0, 8, _s(32)), ("k_neg2", 1000.0, 8, _s(32)),
                              ("k_neg31", 0.75 * 2.0 ** 33, 2, _s(32))):
        d = dyadic(r, bits=bits)
        lim = min(_requant_x_limit(d.m, d.k), 1 << 20)
        x = rng.integers(-lim, lim + 1, size=64, dtype=np.int64)
        x[:3] = [lim, -lim, 0]
        yield _requant_case(tag, x, _s(22), d.m, d.k, out)
    # saturation at both ends, signed and unsigned outputs
    x = _with_extremes(_rand(rng, _s(20), 64), _s(20))
    yield _requant_case("sat_s8", x, _s(20), 1 << 30, 30, _s(8))
    yield _requant_case("sat_u8", x, _s(20), 1 << 30, 30, _u(8))
    # every multiplier width 2..31 (A2), random ratios, int32 inputs
    for bits in range(2, 32):
        d = dyadic(float(2.0 ** rng.uniform(-14, -2)), bits=bits)
        x = _with_extremes(_rand(rng, s32, 32), s32)
        yield _requant_case(f"m_bits{bits}", x, s32, d.m, d.k, _s(16))
    # every output width: signed 2..32, unsigned 1..32, with values past both ends
    x = _with_extremes(_rand(rng, _s(24), 48), _s(24))
    for signed, lo_bits in ((True, 2), (False, 1)):
        for bits in range(lo_bits, 33):
            fmt = IntFormat(bits, signed=signed)
            d = dyadic(4.0 * fmt.hi / (1 << 23))
            yield _requant_case(f"out_{'s' if signed else 'u'}{bits}", x, _s(24), d.m, d.k, fmt)
    # per-channel (m, k) along the last axis, as for per-channel weight accumulators
    m, k = dyadic_array(2.0 ** rng.uniform(-20, -6, size=16))
    x = _with_extremes(_rand(rng, s32, (3, 5, 16)), s32)
    yield _requant_case("per_channel", x, s32, m, k, _s(8))
    # seeded random: model-like ratios
    for i in range(4):
        d = dyadic(float(2.0 ** rng.uniform(-16, 0)))
        x = _rand(rng, _s(int(rng.integers(8, 33))), 256)
        yield _requant_case(f"random{i}", x, s32, d.m, d.k, _s(int(rng.choice([8, 16]))))


# --- K5 residual add ------------------------------------------------------------------------------

def _add_case(name, a, b, in_fmt, da, db, out_fmt):
    return Case("residual-add", name, "add",
                [("in0", np.asarray(a, dtype=np.int64), in_fmt), ("in1", np.asarray(b, dtype=np.int64), in_fmt)],
                [out_fmt], {"ma": da[0], "ka": da[1], "mb": db[0], "kb": db[1]})


def _residual_add_cases(rng):
    s16 = _s(16)
    half = (1 << 30, 31)
    one = (1 << 30, 30)
    odd = np.arange(-9, 10, 2)
    # ties in branch a, in branch b, and in both (two roundings, K5)
    yield _add_case("tie_a", odd, np.zeros_like(odd), s16, half, one, s16)
    yield _add_case("tie_b", np.zeros_like(odd), odd, s16, one, half, s16)
    yield _add_case("tie_both", odd, odd[::-1].copy(), s16, half, half, s16)
    # the spec's worked example (K5): a = 100, b = -7 at S_b = S_y / 2
    yield _add_case("worked_example", [100], [-7], s16, one, half, s16)
    # saturation at both ends
    a = np.array([32767, 30000, -32768, -30000, 20000, -20000])
    yield _add_case("sat", a, a, s16, one, one, s16)
    # k = 0 and k < 0 branches (narrow multipliers)
    da, db = dyadic(3.0, bits=2), dyadic(20.0, bits=3)
    assert da.k == 0 and db.k < 0
    x = rng.integers(-2000, 2001, size=(2, 64))
    yield _add_case("k0_kneg", x[0], x[1], s16, (da.m, da.k), (db.m, db.k), s16)
    # output widths
    for bits in (4, 8, 12, 16, 24, 32):
        out = _s(bits)
        d = dyadic(2.0 * out.hi / 32767)
        x = _with_extremes(_rand(rng, s16, (2, 48)), s16)
        yield _add_case(f"out_s{bits}", x[0], x[1], s16, (d.m, d.k), (d.m, d.k), out)
    # seeded random, model-like ratios
    for i in range(4):
        da, db = dyadic(float(2.0 ** rng.uniform(-3, 1))), dyadic(float(2.0 ** rng.uniform(-6, 0)))
        x = _rand(rng, s16, (2, 4, 50, 8))
        yield _add_case(f"random{i}", x[0], x[1], s16, (da.m, da.k), (db.m, db.k), s16)


# --- K1 matrix products ---------------------------------------------------------------------------

def _linear_case(name, x, x_fmt, w, wbits, bias=None, kind="linear", attrs=None):
    consts = {"weight": np.asarray(w, dtype=np.int64)}
    if bias is not None:
        consts["bias"] = np.asarray(bias, dtype=np.int64)
    a = {"weight_fmt": _s(wbits, narrow=True).to_dict()}
    a.update(attrs or {})
    x = np.asarray(x, dtype=np.int64)
    if "patch" in a:                                   # (N, C, H, W) -> (N, P, Out), K1.4
        rows = (x.shape[2] // a["patch"]) * (x.shape[3] // a["patch"])
        out_shape = (rows, consts["weight"].shape[0])
    else:
        out_shape = x.shape[1:-1] + (consts["weight"].shape[0],)
    return Case("matmul", name, kind, [("in", x, x_fmt)], [_s(32)], consts, a, out_shape=out_shape)


def _matmul_cases(rng):
    s8 = _s(8)
    # every weight width 2..8 (narrow), int8 activations with extremes, int32 bias
    for wbits in range(2, 9):
        wf = _s(wbits, narrow=True)
        w = _with_extremes(_rand(rng, wf, (12, 40)), wf)
        x = _with_extremes(_rand(rng, s8, (2, 5, 40)), s8)
        yield _linear_case(f"w{wbits}", x, s8, w, wbits, rng.integers(-(1 << 20), 1 << 20, size=12))
    # accumulator extremes: every product at its largest, a bias that takes the sum to the int32 ends
    k = 1024
    x = np.full((1, 2, k), -128)
    w = np.stack([np.full(k, -127), np.full(k, 127)])
    big = 128 * 127 * k
    yield _linear_case("acc_ends", x, s8, w, 8, [(1 << 31) - 1 - big, -(1 << 31) + big])
    # K above one exact float32 block (1024 for int8 x int8) and above 4 blocks (float64 branch)
    for kk in (1500, 5000):
        x = _rand(rng, s8, (1, 3, kk))
        w = _rand(rng, _s(8, narrow=True), (4, kk))
        yield _linear_case(f"k{kk}", x, s8, w, 8)
    # unsigned and 16-bit activations, no bias
    x = _with_extremes(_rand(rng, _u(8), (2, 6, 24)), _u(8))
    yield _linear_case("a_u8", x, _u(8), _rand(rng, _s(8, narrow=True), (6, 24)), 8)
    x = _with_extremes(_rand(rng, _s(16), (2, 6, 24)), _s(16))
    yield _linear_case("a_s16", x, _s(16), _rand(rng, _s(4, narrow=True), (6, 24)), 4)
    # attention: q k^T (signed x signed) and P V (unsigned 16-bit probabilities x signed), heads merged
    q, kt = _rand(rng, s8, (2, 4, 10, 6)), _rand(rng, s8, (2, 4, 10, 6))
    yield Case("matmul", "attn_scores", "attn_scores", [("q", q, s8), ("k", kt, s8)], [_s(32)],
               attrs={"scale": 1 / math.sqrt(6)}, out_names=("acc",), out_shape=(4, 10, 10))
    p = _with_extremes(_rand(rng, _u(16), (2, 4, 10, 10)), _u(16))
    v = _rand(rng, s8, (2, 4, 10, 6))
    yield Case("matmul", "attn_context", "attn_context", [("p", p, _u(16)), ("v", v, s8)], [_s(32)],
               out_names=("acc",), out_shape=(10, 4 * 6))          # heads merged
    # patch embedding (K1.4): 2 channels, 8x12 image, 4x4 patches: patch and feature order
    img = _rand(rng, _u(8), (2, 2, 8, 12))
    w = _rand(rng, _s(8, narrow=True), (5, 2 * 4 * 4))
    yield _linear_case("patch_embed", img, _u(8), w, 8, rng.integers(-1000, 1000, size=5),
                       kind="patch_embed", attrs={"patch": 4})


# --- K2 softmax -----------------------------------------------------------------------------------

SOFTMAX_ROW_MAX = 256     # rows of the softmax vectors never exceed this (the RTL row buffer)
LN2 = math.log(2.0)


def _softmax_case(kernel, name, q, in_fmt, in_scale, out_bits):
    plan = candidates("softmax")[kernel].plan(in_scale, in_fmt, out_bits)
    return Case(kernel, name, "softmax", [("in", np.asarray(q, dtype=np.int64), in_fmt)], [plan.out_fmt],
                dict(plan.consts), {"family": "softmax", "kernel": kernel, "in_scale": float(in_scale)},
                spec=candidates("softmax")[kernel].spec_section)


def _typical_scale(kernel, fmt):
    """A range-covering logit scale inside every candidate's accepted interval: the format's top
    code is about 12 (the logit range of attention scores), clamped into [2^-15, 1.5]."""
    return float(min(max(12.0 / fmt.hi, 2.0 ** -15 if kernel != "ibert-softmax" else 3e-5), 1.5))


def _softmax_cases_for(kernel, rng):
    k = candidates("softmax")[kernel]
    # each input width 2..16 with each output width 2..16 (paired), random rows with extremes
    for i, bits in enumerate(range(2, 17)):
        fmt = _s(bits)
        o = 2 + (i * 7) % 15                     # a permutation of 2..16
        q = _with_extremes(_rand(rng, fmt, (3, 17)), fmt)
        yield _softmax_case(kernel, f"in{bits}_out{o}", q, fmt, _typical_scale(kernel, fmt), o)
    s16 = _s(16)
    # the shipped model's setting: 16-bit logits at a fine scale, 16-bit probabilities, rows of 50
    q = (rng.normal(0, 3000, size=(8, 50))).round().clip(s16.lo, s16.hi)
    yield _softmax_case(kernel, "model_like", q, s16, 3.1e-4, 16)
    # one-hot rows (saturation of p = 1, the largest reciprocal), single-element rows, uniform rows
    oh = np.full((3, 9), s16.lo)
    oh[0, 0], oh[1, 4], oh[2, 8] = s16.hi, 0, s16.lo + 1
    for o in (8, 16):
        yield _softmax_case(kernel, f"one_hot_out{o}", oh, s16, 0.01, o)
    yield _softmax_case(kernel, "row_len1", _rand(rng, s16, (5, 1)), s16, 0.01, 8)
    yield _softmax_case(kernel, "uniform", np.full((2, 7), 123), s16, 0.01, 8)
    # long rows (the row buffer length)
    yield _softmax_case(kernel, "long_row", _rand(rng, _s(8), (2, SOFTMAX_ROW_MAX)), _s(8), 0.05, 8)
    # narrow input range
    yield _softmax_case(kernel, "narrow_in", _with_extremes(_rand(rng, _s(8, True), (2, 20)), _s(8, True)),
                        _s(8, True), 0.1, 8)
    # the ends of the accepted scale interval (K2.x.4): widest intermediates
    for fmt in (_s(2), _s(16)):
        lo, hi = k.scale_range(fmt, 8)
        for tag, s in (("scale_min", lo), ("scale_max", hi)):
            if math.isfinite(s) and s > 2.0 ** -1000:
                q = _with_extremes(_rand(rng, fmt, (2, 12)), fmt)
                yield _softmax_case(kernel, f"{tag}_in{fmt.bits}", q, fmt, s, 8)
    # seeded random: ViT-like logits
    for i in range(3):
        fmt = _s(int(rng.choice([8, 12, 16])))
        q = (rng.normal(0, fmt.hi / 4, size=(4, int(rng.integers(2, 60))))).round().clip(fmt.lo, fmt.hi)
        yield _softmax_case(kernel, f"random{i}", q, fmt, _typical_scale(kernel, fmt) * 2.0 ** rng.uniform(-1, 1),
                            int(rng.choice([8, 16])))


def _bitshift_softmax_cases(rng):
    yield from _softmax_cases_for("bitshift-softmax", rng)
    s16 = _s(16)
    # S = ln 2 gives K = 2^20, G = 0, hence z = D and r = 0: e(D) = 2^(30 - D) exactly.
    # z at and past the clamp: 30, 31, 32, 63, 64, 65, 1000 and the largest D
    q = np.array([[0, -30, -31, -32, -63, -64, -65, -1000, s16.lo + 1]]) + 32767
    yield _softmax_case("bitshift-softmax", "z_clamp", q, s16, LN2, 16)
    # an exact rounding tie of the output (K2.1.3 step 8): D = 0, 1, ..., O, O gives sum = 2^31,
    # R = 2^31 and e*R/2^(62-O) = 1/2 for the two elements with D = O: out = 1 (half up)
    for o in (4, 8, 16):
        q = -np.array([list(range(o + 1)) + [o]])
        yield _softmax_case("bitshift-softmax", f"out_tie_out{o}", q, s16, LN2, o)


def _ivit_softmax_cases(rng):
    yield from _softmax_cases_for("ivit-shiftmax", rng)
    # the row sum clamp at 2^31 - 1 (16-bit inputs at a fine scale, long uniform rows: outside
    # the accuracy domain, reproduced as prior art)
    yield _softmax_case("ivit-shiftmax", "sum_clamp", np.zeros((2, 200), dtype=np.int64), _s(16), 2.0 ** -14, 8)


def _ibert_softmax_cases(rng):
    yield from _softmax_cases_for("ibert-softmax", rng)
    # e16 clamp at 2^15 - 1: c_int = 2^16 - 1 makes round_shift(e(0), SH16) = 2^15 (K2.3.3 step 6)
    s = _scale_for_c_int((1 << 16) - 1)
    yield _softmax_case("ibert-softmax", "e16_clamp", _rand(rng, _s(8), (3, 10)), _s(8), s, 8)
    # output saturation: c_int = 2^12 gives e16(0) = 2^14 and a one-hot row has e16 * factor = 2^32
    s = _scale_for_c_int(1 << 12)
    q = np.full((2, 5), -32768)                          # D = 65535: clipped, e16 = 0
    q[:, 0] = 32767
    yield _softmax_case("ibert-softmax", "out_sat", q, _s(16), s, 8)


def _scale_for_c_int(target):
    """A float scale S with ibert-softmax's c_int = floor(c'/S^2) equal to target (bisection)."""
    a, _, c = IBERT_COEF
    cp = c / a

    def c_int(s):
        return math.floor(cp / Fraction(s) ** 2)
    lo, hi = math.sqrt(float(cp) / (target + 1)), math.sqrt(float(cp) / target)
    for _ in range(200):
        mid = (lo + hi) / 2
        ci = c_int(mid)
        if ci == target:
            return mid
        lo, hi = (mid, hi) if ci > target else (lo, mid)
    raise AssertionError(f"no scale with c_int = {target}")


# --- K3 GELU --------------------------------------------------------------------------------------

def _gelu_case(kernel, name, q, in_fmt, in_scale, **opts):
    k = candidates("gelu")[kernel]
    plan = k.plan(in_scale, in_fmt, **opts)
    attrs = {"family": "gelu", "kernel": kernel, "in_scale": float(in_scale)}
    attrs.update({key: v for key, v in opts.items() if key in ("rowmax", "n")})
    return Case(kernel, name, "gelu", [("in", np.asarray(q, dtype=np.int64), in_fmt)], [plan.out_fmt],
                dict(plan.consts), attrs, spec=k.spec_section)


def _all_codes(fmt, cols=None):
    q = np.arange(fmt.lo, fmt.hi + 1, dtype=np.int64)
    return q if cols is None else q.reshape(-1, cols)


def _gelu_common(kernel, rng, **opts):
    # each input width 2..16 at range +-8 (every GELU segment and the flat region): every code up to
    # 10 bits, random codes with extremes above
    # (the widest range of 8, 4, 2, ... that the candidate accepts at that width)
    for bits in range(2, 17):
        fmt = _s(bits)
        q = _all_codes(fmt) if bits <= 10 else _with_extremes(_rand(rng, fmt, 1024), fmt)
        for rng_x in (8.0, 4.0, 2.0, 1.0, 0.5, 0.25):
            try:
                case = _gelu_case(kernel, f"in{bits}_range{rng_x:g}", q[None], fmt, rng_x / (fmt.hi + 1), **opts)
            except ArithSpecError:
                continue
            yield case
            break
    # narrow ranges (+-2, +-4) at 8 and 16 bits
    for bits, rng_x in ((8, 2.0), (8, 4.0), (16, 4.0)):
        fmt = _s(bits)
        q = _all_codes(fmt) if bits <= 8 else _with_extremes(_rand(rng, fmt, 2048), fmt)
        yield _gelu_case(kernel, f"in{bits}_range{int(rng_x)}", q[None], fmt, rng_x / (fmt.hi + 1), **opts)
    # seeded random: ViT-like MLP activations (mostly negative, a positive tail)
    for i in range(2):
        fmt = _s(int(rng.choice([8, 16])))
        s = 6.0 / fmt.hi
        x = np.concatenate([rng.normal(-0.8, 1.0, 800), rng.normal(2.0, 1.5, 200)])
        q = np.clip(np.round(x / s), fmt.lo, fmt.hi).astype(np.int64)
        yield _gelu_case(kernel, f"random{i}", q.reshape(4, -1), fmt, s, **opts)


def _poly_gelu_cases(rng):
    yield from _gelu_common("poly-gelu", rng)
    # GR > 0 (fine 16-bit scales: input pre-shift right) and a large GL (coarse 2-bit scale)
    fmt = _s(16)
    yield _gelu_case("poly-gelu", "gr_pos", _with_extremes(_rand(rng, fmt, 2048), fmt)[None], fmt, 2.0 ** -16)
    yield _gelu_case("poly-gelu", "gl_large", _all_codes(_s(2))[None], _s(2), 4.0)
    # a data-fitted (a, b), as the compiler plans it
    fit = np.concatenate([rng.normal(-0.8, 1.0, 5000), rng.normal(2.0, 1.5, 500)])
    yield _gelu_case("poly-gelu", "fit_data", _all_codes(_s(8))[None], _s(8), 1 / 16, sample=fit)


def _ibert_gelu_cases(rng):
    yield from _gelu_common("ibert-gelu", rng)


def _ivit_gelu_cases(rng):
    yield from _gelu_common("ivit-shiftgelu", rng)
    yield from ((_rename(c, c.name + "_elementwise")) for c in _gelu_common("ivit-shiftgelu", rng, rowmax=False))
    # rows whose maximum is negative (e2 saturates, the sum clamps: I-ViT's behaviour, K3.3.4)
    fmt = _s(8)
    q = np.stack([np.arange(-128, -64), np.arange(-64, 0), np.arange(0, 64)])
    yield _gelu_case("ivit-shiftgelu", "neg_rowmax", q, fmt, 1 / 16)
    yield _gelu_case("ivit-shiftgelu", "neg_rowmax_16b", np.stack([np.arange(-30000, -29936),
                                                                   np.arange(-64, 0)]), _s(16), 8 / 32768)


def _rename(case, name):
    case.name = name
    return case


# --- K4 LayerNorm ---------------------------------------------------------------------------------

def _ln_case(kernel, name, q, in_fmt, in_scale, gamma, beta, **opts):
    k = candidates("layernorm")[kernel]
    plan = k.plan(in_scale, in_fmt, gamma=gamma, beta=beta, **opts)
    attrs = {"family": "layernorm", "kernel": kernel, "in_scale": float(in_scale)}
    return Case(kernel, name, "layernorm", [("in", np.asarray(q, dtype=np.int64), in_fmt)], [plan.out_fmt],
                dict(plan.consts), attrs, spec=k.spec_section)


def _layernorm_cases_for(kernel, rng):
    def gb(c):
        return rng.normal(1, 0.3, c), rng.normal(0, 0.2, c)

    # each input width (2..24), random rows with extremes plus a constant row
    for bits in list(range(2, 17)) + [20, 24]:
        if kernel == "ivit-layernorm" and bits > 16:
            continue                    # K4.3 sums y^2 in int64: fine, but its Newton window is 16-bit
        fmt = _s(bits)
        q = _with_extremes(_rand(rng, fmt, (3, 32)), fmt)
        q[2] = fmt.hi // 3                                  # a constant row (D = 0)
        yield _ln_case(kernel, f"in{bits}", q, fmt, 4.0 / (fmt.hi + 1), *gb(32))
    fmt = _s(16)
    # residual-stream-like rows with outlier channels, C = 96 (the shipped model's width)
    x = rng.normal(0, 1, (6, 96)) * np.exp(rng.normal(0, 0.5, 96))
    x[:, :3] *= 20
    s = float(np.abs(x).max()) / fmt.hi
    yield _ln_case(kernel, "residual_like", np.round(x / s), fmt, s, *gb(96))
    # constant rows only, including both ends of the range; gamma all zero (output = beta)
    q = np.array([[fmt.lo] * 16, [fmt.hi] * 16, [0] * 16, [-5] * 16])
    yield _ln_case(kernel, "const_rows", q, fmt, 1e-3, *gb(16))
    yield _ln_case(kernel, "gamma_zero", _rand(rng, fmt, (2, 16)), fmt, 1e-3, np.zeros(16), rng.normal(0, 1, 16))
    # small-variance rows (I-ViT's Newton has not converged: V < 142883) and one channel (C = 1)
    q = 1000 + rng.integers(-3, 4, size=(3, 64))
    yield _ln_case(kernel, "small_var", q, fmt, 1e-3, *gb(64))
    yield _ln_case(kernel, "one_channel", _rand(rng, fmt, (4, 1)), fmt, 1e-3, *gb(1))
    # seeded random widths and lengths
    for i in range(2):
        c = int(rng.integers(2, 200))
        x = rng.normal(0, 1, (3, c))
        s = float(np.abs(x).max()) / fmt.hi
        yield _ln_case(kernel, f"random{i}", np.round(x / s), fmt, s, *gb(c))


def _isqrt_layernorm_cases(rng):
    yield from _layernorm_cases_for("isqrt-layernorm", rng)
    # a pre-shift p > 0 (K4.2.1): 24-bit input at C = 384 (C^2 * 2^46 > 2^63 - 1)
    fmt = _s(24)
    q = _with_extremes(_rand(rng, fmt, (3, 384)), fmt)
    q[1] = rng.integers(-3, 4, 384) + 77                # a small-variance row under the pre-shift
    yield _ln_case("isqrt-layernorm", "preshift_c384", q, fmt, 2.0 ** -16,
                   rng.normal(1, 0.3, 384), rng.normal(0, 0.2, 384))
    # a pre-shift forced by an extreme eps/S^2 at 16 bits, C = 4096
    fmt = _s(16)
    q = _with_extremes(_rand(rng, fmt, (2, 4096)), fmt)
    yield _ln_case("isqrt-layernorm", "preshift_eps", q, fmt, 2.0 ** -30,
                   rng.normal(1, 0.3, 4096), rng.normal(0, 0.2, 4096), eps=1.0)


def _ivit_layernorm_cases(rng):
    yield from _layernorm_cases_for("ivit-layernorm", rng)
    # V + 1 a perfect square above the window start: Newton returns isqrt(V) + 1 (K4.3.3)
    # row [a, -a] with C = 2: mean 0, V = 2 a^2; choose a row with V = 428^2 - 1 via a search
    q = _ivit_newton_off_row()
    yield _ln_case("ivit-layernorm", "newton_off", q, _s(16), 1e-3, np.ones(q.shape[1]), np.zeros(q.shape[1]))


def _ivit_newton_off_row():
    """A 4-channel 16-bit row whose variance sum V = sum (q - mean)^2 has V + 1 a perfect square
    >= 142883, where I-ViT's 10-step Newton returns isqrt(V) + 1 (K4.3.3)."""
    for a in range(200, 2000):
        for b in range(0, a):
            row = np.array([a, -a, b, -b])              # mean 0, V = 2a^2 + 2b^2
            V = 2 * a * a + 2 * b * b
            if V >= 142883 and int(ivit_std(np.array(V))) != int(isqrt_ref(np.array(V))):
                return row[None]
    raise AssertionError("no row found")


# --- K6 data movement -----------------------------------------------------------------------------

def _data_movement_cases(rng):
    s16 = _s(16)
    # cls_pos: concat(cls, x) + pos, saturating at both ends
    x = _with_extremes(_rand(rng, s16, (2, 4, 6)), s16)
    cls = _rand(rng, s16, 6)
    pos = _rand(rng, s16, (5, 6))
    yield Case("data-movement", "cls_pos", "cls_pos", [("in", x, s16)], [s16], {"cls": cls, "pos": pos},
               out_shape=pos.shape)
    # qkv_split: (N, T, 3D) -> q, k, v of (N, H, T, D/H), timm's (3, H, Dh) channel layout
    x = _rand(rng, _s(8), (2, 5, 3 * 12))
    yield Case("data-movement", "qkv_split", "qkv_split", [("in", x, _s(8))], [_s(8)] * 3,
               attrs={"heads": 3}, out_names=("q", "k", "v"), out_shape=(3, 5, 4))
    yield Case("data-movement", "cls_select", "cls_select", [("in", _rand(rng, s16, (2, 5, 6)), s16)], [s16],
               out_shape=(6,))


# --- K7.1 Relu -------------------------------------------------------------------------------------

def _relu_cases(rng):
    # negative, zero and positive values, both ends of signed formats; an unsigned input passes as is
    for fmt in (_s(2), _s(8), _s(16), _u(8)):
        x = _with_extremes(_rand(rng, fmt, (2, 3, 16)), fmt)
        yield Case("relu", f"{'s' if fmt.signed else 'u'}{fmt.bits}", "relu", [("in", x, fmt)], [fmt])


# --- K8 sigmoid and QuickGELU ---------------------------------------------------------------------

def _sigmoid_case(kernel, family, name, q, in_fmt, in_scale, out_bits, gain):
    k = candidates(family)[kernel]
    plan = k.plan(in_scale, in_fmt, out_bits, gain=gain)
    return Case(kernel, name, family, [("in", np.asarray(q, dtype=np.int64), in_fmt)], [plan.out_fmt],
                dict(plan.consts), {"family": family, "kernel": kernel, "in_scale": float(in_scale),
                                    "gain": float(gain)}, spec=k.spec_section)


def _sigmoid_family_cases(kernel, family, gain):
    """Every code of 2- and 8-bit inputs (signed and unsigned), 16-bit samples with both ends, at a
    range-covering scale, a saturating one and a fine one; 8- and 16-bit outputs."""
    def generate(rng):
        for fmt in (_s(2), _s(8), _u(8), _s(16)):
            q = _all_codes(fmt)[None] if fmt.bits <= 8 else _with_extremes(_rand(rng, fmt, 2048), fmt)[None]
            for tag, scale in (("range", 8.0 / max(-fmt.lo, fmt.hi)), ("coarse", 0.5), ("fine", 2.0 ** -12)):
                for o in (8, 16):
                    if family == "quickgelu" and fmt.bits + o + (not fmt.signed) > 32:
                        continue
                    yield _sigmoid_case(kernel, family, f"{tag}_{'s' if fmt.signed else 'u'}{fmt.bits}_out{o}",
                                        q, fmt, scale, o, gain)
    return generate


GENERATORS = {
    "requantize": _requantize_cases,
    "residual-add": _residual_add_cases,
    "matmul": _matmul_cases,
    "bitshift-softmax": _bitshift_softmax_cases,
    "ivit-shiftmax": _ivit_softmax_cases,
    "ibert-softmax": _ibert_softmax_cases,
    "poly-gelu": _poly_gelu_cases,
    "ibert-gelu": _ibert_gelu_cases,
    "ivit-shiftgelu": _ivit_gelu_cases,
    "isqrt-layernorm": _isqrt_layernorm_cases,
    "ivit-layernorm": _ivit_layernorm_cases,
    "data-movement": _data_movement_cases,
    "relu": _relu_cases,
    "bitshift-sigmoid": _sigmoid_family_cases("bitshift-sigmoid", "sigmoid", 1.0),
    "bitshift-quickgelu": _sigmoid_family_cases("bitshift-quickgelu", "quickgelu", 1.702),
}
assert set(GENERATORS) == set(KERNELS)


# --- running the reference and writing the dump -----------------------------------------------------

def _tensor(name, fmt, arr):
    """A program tensor for one of a case's arrays: axis 0 is the batch; no documentary scale."""
    return TensorInfo(name, fmt, None, tuple(np.shape(arr)[1:]))


def case_program(case):
    """The one-op integer program of a case: its inputs, constants, attributes, output formats and
    shapes (the first input's unless the case says otherwise)."""
    name = f"{case.kernel}.{case.name}"
    ins = [_tensor(f"{name}.{n}", f, x) for n, x, f in case.inputs]
    shape = ins[0].shape if case.out_shape is None else tuple(case.out_shape)
    outs = [TensorInfo(f"{name}.{n}", f, None, shape) for n, f in zip(case.out_names, case.out_fmts)]
    op = Op(case.kind, name, [t.name for t in ins], [t.name for t in outs], case.consts, case.attrs,
            case.spec or KERNELS[case.kernel][1])
    return Program([op], {t.name: t for t in ins + outs}, ins[0].name, outs[0].name, {})


def run_op(program, inputs, path="reference"):
    """The outputs of a one-op program's op through the op registry on `path` (bind checks its
    constants), each checked to have its declared shape and lie in its declared format, as the
    executor checks every op."""
    op = program.ops[0]
    d = program_op(op.kind)
    outs = d.run(op, inputs, d.bind(op, program), path)
    for name, val in zip(op.outputs, outs):
        check_output(program, 0, op, name, val)
    return outs


def reference_outputs(case):
    """(program, outputs) of a case: its inputs checked against their formats, its constants
    against their op's registers (ops.check_constants), its outputs by the reference path."""
    program = case_program(case)
    for n, x, f in case.inputs:
        if x.size and (int(x.min()) < f.lo or int(x.max()) > f.hi):
            raise AssertionError(f"{program.ops[0].name}: input {n} outside {f.describe()}")
    check_constants(program)
    return program, run_op(program, [x for _, x, _ in case.inputs])


def check_kernels(kernels=None):
    """The selected kernel names (default all), each one of KERNELS."""
    names = list(KERNELS) if kernels is None else list(kernels)
    unknown = [k for k in names if k not in KERNELS]
    if unknown:
        raise GoldenError(f"unknown conformance kernel(s) {', '.join(unknown)}; choose from "
                          f"{', '.join(KERNELS)}")
    return names


def iter_cases(kernels=None, seed=0):
    """Every Case of the selected kernels (default all), in a fixed order. Each kernel draws from
    its own generator seeded by (seed, crc32(kernel name)): selecting kernels changes nothing."""
    for kname in check_kernels(kernels):
        rng = np.random.default_rng([int(seed), zlib.crc32(kname.encode())])
        yield from GENERATORS[kname](rng)


def write_conformance(out_dir, formats=("npy",), seed=0, kernels=None, pack=1, force=False):
    """Write the conformance set (docs/conformance.md) to out_dir; returns the manifest (a dict).

    formats: any of npy, bin, hex (as golden dumps); kernels: a subset of KERNELS (default all);
    seed: the seed of the random vectors (directed vectors do not depend on it). The directory
    appears atomically, as a golden dump does."""
    formats = check_formats(formats)
    pack = check_pack(pack)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise GoldenError(f"--seed must be a non-negative integer, got {seed!r}")
    names = check_kernels(kernels)                       # every check before any work
    check_dump_output(out_dir, force)
    return write_atomically(out_dir, force, lambda tmp: _write_into(tmp, formats, pack, int(seed), names))


def _write_case(w, index, case):
    """One case's tensors (inputs, constants, outputs) and its op record."""
    program, outs = reference_outputs(case)
    op = program.ops[0]
    in_ids = [w.add(act_id(t), x, TFormat.of(program.tensors[t].fmt),
                    {"kind": "input", "name": t, "op": None, "scale": None})
              for t, (_, x, _) in zip(op.inputs, case.inputs)]
    consts = write_constants(w, program, index, op)
    out_ids = [w.add(act_id(t), o, TFormat.of(program.tensors[t].fmt),
                     {"kind": "activation", "name": t, "op": index, "scale": None})
               for t, o in zip(op.outputs, outs)]
    attrs = dict(case.attrs, kernel=case.kernel, case=case.name)
    return {"index": index, "name": op.name, "kind": op.kind, "spec": op.spec, "attrs": attrs,
            "inputs": in_ids, "outputs": out_ids, "consts": consts}


def _write_into(root, formats, pack, seed, kernels):
    w = TensorWriter(root, formats, pack)
    ops, kinfo = [], {}
    for case in iter_cases(kernels, seed):
        ops.append(_write_case(w, len(ops), case))
        kinfo.setdefault(case.kernel, {"spec": KERNELS[case.kernel][1], "cases": 0})
        kinfo[case.kernel]["cases"] += 1
    return {
        "schema": SCHEMA_NAME,
        "schema_version": GOLDEN_SCHEMA,
        "intsim_version": __version__,
        "spec_version": SPEC_VERSION,
        "conformance": {"schema": CONFORMANCE_SCHEMA, "seed": seed, "kernels": kinfo,
                        "note": "each op is one (kernel, case); outputs computed by intsim's reference path"},
        "model": None,
        "config": {},
        "kernels": {},
        "input": {"tensor": None, "images": 0, "source": None},
        "output": None,
        "formats": list(formats),
        "byte_order": "little",
        "hex": {"pack": pack, "element_order": "C order; in a packed word element 0 is least significant"},
        "tensors": w.tensors,
        "ops": ops,
    }


def cases_of(golden_set, kernel):
    """The op views of one kernel in a loaded conformance set (intsim.golden.load)."""
    return [o for o in golden_set.ops if o.attrs.get("kernel") == kernel]


def program_of(golden_set, op_view):
    """The one-op program of a case of a loaded conformance set, rebuilt from its manifest (formats
    and constants as dumped): run it with `run_op` on either path."""
    entries = golden_set.tensors.entry
    tensors = {}
    for tid in op_view.input_ids + op_view.output_ids:
        e = entries(tid)
        fmt = entry_format(e)
        tensors[e["name"]] = TensorInfo(e["name"], IntFormat(fmt.bits, fmt.signed, fmt.narrow), None,
                                        tuple(e["shape"][1:]))
    names = [entries(t)["name"] for t in op_view.input_ids], [entries(t)["name"] for t in op_view.output_ids]
    consts = {c: program_const(v, c, op_view.attrs) for c, v in op_view.consts.items()}
    op = Op(op_view.kind, op_view.name, names[0], names[1], consts, op_view.attrs, op_view.spec)
    return Program([op], tensors, names[0][0], names[1][0], {})
