"""Directed and random vectors of the arithmetic kernels: A6 requantize, K5 residual add, K1
matrix products (linear, attention products, patch embedding)."""
import math

import numpy as np

from ..arith import IntFormat, dyadic, dyadic_array
from .cases import Case, random_codes, signed, unsigned, with_extremes


# --- A6 requantize ------------------------------------------------------------------------------

def _requant_case(name, x, in_fmt, m, k, out_fmt, axis=-1):
    return Case("requantize", name, "requant", [("in", np.asarray(x, dtype=np.int64), in_fmt)],
                [out_fmt], {"m": m, "k": k}, {"axis": axis} if axis != -1 else {})


def _requant_x_limit(m, k):
    """Largest |x| allowed by the A4 bound |x| m 2^max(-k, 0) + 2^62 <= 2^63 - 1."""
    return ((1 << 62) - 1) // (int(np.max(m)) << max(-int(np.min(k)), 0))


def requantize_cases(rng):
    s32 = signed(32)
    odd = np.arange(-9, 10, 2)
    # ties of both signs: ratio 1/2 (m = 2^30, k = 31) on odd x, and the smallest shift (k = 2, B = 2)
    yield _requant_case("tie_half", odd, s32, 1 << 30, 31, signed(8))
    d = dyadic(0.5, bits=2)
    yield _requant_case("tie_k2_b2", odd, s32, d.m, d.k, signed(8))
    # ties at the widest shift: x = -2^31, m = 2^30, k = 62 is exactly -1/2 (rounds to 0)
    yield _requant_case("tie_k62", [-(1 << 31), -(1 << 31) + 1, (1 << 31) - 1, 0, 1, -1], s32,
                        1 << 30, 62, signed(8))
    # k = 62: a normalised m (ratio in [2^-32, 2^-31)) and a denormal one (ratio 1e-12)
    for tag, r in (("k62_norm", 0.999 * 2.0 ** -31), ("k62_denorm", 1e-12)):
        d = dyadic(r)
        x = with_extremes(random_codes(rng, s32, 64), s32)
        yield _requant_case(tag, x, s32, d.m, d.k, signed(8))
    # k = 0 and k < 0 (narrow multipliers of large ratios), down to k = -31
    for tag, r, bits, out in (("k0", 200.0, 8, signed(32)), ("k_neg2", 1000.0, 8, signed(32)),
                              ("k_neg31", 0.75 * 2.0 ** 33, 2, signed(32))):
        d = dyadic(r, bits=bits)
        lim = min(_requant_x_limit(d.m, d.k), 1 << 20)
        x = rng.integers(-lim, lim + 1, size=64, dtype=np.int64)
        x[:3] = [lim, -lim, 0]
        yield _requant_case(tag, x, signed(22), d.m, d.k, out)
    # saturation at both ends, signed and unsigned outputs
    x = with_extremes(random_codes(rng, signed(20), 64), signed(20))
    yield _requant_case("sat_s8", x, signed(20), 1 << 30, 30, signed(8))
    yield _requant_case("sat_u8", x, signed(20), 1 << 30, 30, unsigned(8))
    # every multiplier width 2..31 (A2), random ratios, int32 inputs
    for bits in range(2, 32):
        d = dyadic(float(2.0 ** rng.uniform(-14, -2)), bits=bits)
        x = with_extremes(random_codes(rng, s32, 32), s32)
        yield _requant_case(f"m_bits{bits}", x, s32, d.m, d.k, signed(16))
    # every output width: signed 2..32, unsigned 1..32, with values past both ends
    x = with_extremes(random_codes(rng, signed(24), 48), signed(24))
    for is_signed, lo_bits in ((True, 2), (False, 1)):
        for bits in range(lo_bits, 33):
            fmt = IntFormat(bits, signed=is_signed)
            d = dyadic(4.0 * fmt.hi / (1 << 23))
            yield _requant_case(f"out_{'s' if is_signed else 'u'}{bits}", x, signed(24), d.m, d.k, fmt)
    # per-channel (m, k) along the last axis, as for per-channel weight accumulators
    m, k = dyadic_array(2.0 ** rng.uniform(-20, -6, size=16))
    x = with_extremes(random_codes(rng, s32, (3, 5, 16)), s32)
    yield _requant_case("per_channel", x, s32, m, k, signed(8))
    # per-channel along axis -3, the C of a conv accumulator (N, C, H, W); W = C, so that a
    # requantizer taking the last axis instead computes other values, not a shape error
    x = with_extremes(random_codes(rng, s32, (2, 16, 3, 16)), s32)
    yield _requant_case("per_channel_axis_m3", x, s32, m, k, signed(8), axis=-3)
    # seeded random: model-like ratios
    for i in range(4):
        d = dyadic(float(2.0 ** rng.uniform(-16, 0)))
        x = random_codes(rng, signed(int(rng.integers(8, 33))), 256)
        yield _requant_case(f"random{i}", x, s32, d.m, d.k, signed(int(rng.choice([8, 16]))))


# --- K5 residual add ------------------------------------------------------------------------------

def _add_case(name, a, b, in_fmt, da, db, out_fmt):
    return Case("residual-add", name, "add",
                [("in0", np.asarray(a, dtype=np.int64), in_fmt), ("in1", np.asarray(b, dtype=np.int64), in_fmt)],
                [out_fmt], {"ma": da[0], "ka": da[1], "mb": db[0], "kb": db[1]})


def residual_add_cases(rng):
    s16 = signed(16)
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
        out = signed(bits)
        d = dyadic(2.0 * out.hi / 32767)
        x = with_extremes(random_codes(rng, s16, (2, 48)), s16)
        yield _add_case(f"out_s{bits}", x[0], x[1], s16, (d.m, d.k), (d.m, d.k), out)
    # seeded random, model-like ratios
    for i in range(4):
        da, db = dyadic(float(2.0 ** rng.uniform(-3, 1))), dyadic(float(2.0 ** rng.uniform(-6, 0)))
        x = random_codes(rng, s16, (2, 4, 50, 8))
        yield _add_case(f"random{i}", x[0], x[1], s16, (da.m, da.k), (db.m, db.k), s16)


# --- K1 matrix products ---------------------------------------------------------------------------

def _linear_case(name, x, x_fmt, w, wbits, bias=None, kind="linear", attrs=None):
    consts = {"weight": np.asarray(w, dtype=np.int64)}
    if bias is not None:
        consts["bias"] = np.asarray(bias, dtype=np.int64)
    a = {"weight_fmt": signed(wbits, narrow=True).to_dict()}
    a.update(attrs or {})
    x = np.asarray(x, dtype=np.int64)
    if "patch" in a:                                   # (N, C, H, W) -> (N, P, Out), K1.4
        rows = (x.shape[2] // a["patch"]) * (x.shape[3] // a["patch"])
        out_shape = (rows, consts["weight"].shape[0])
    else:
        out_shape = x.shape[1:-1] + (consts["weight"].shape[0],)
    return Case("matmul", name, kind, [("in", x, x_fmt)], [signed(32)], consts, a, out_shape=out_shape)


def matmul_cases(rng):
    s8 = signed(8)
    # every weight width 2..8 (narrow), int8 activations with extremes, int32 bias
    for wbits in range(2, 9):
        wf = signed(wbits, narrow=True)
        w = with_extremes(random_codes(rng, wf, (12, 40)), wf)
        x = with_extremes(random_codes(rng, s8, (2, 5, 40)), s8)
        yield _linear_case(f"w{wbits}", x, s8, w, wbits, rng.integers(-(1 << 20), 1 << 20, size=12))
    # accumulator extremes: every product at its largest, a bias that takes the sum to the int32 ends
    k = 1024
    x = np.full((1, 2, k), -128)
    w = np.stack([np.full(k, -127), np.full(k, 127)])
    big = 128 * 127 * k
    yield _linear_case("acc_ends", x, s8, w, 8, [(1 << 31) - 1 - big, -(1 << 31) + big])
    # K above one exact float32 block (1024 for int8 x int8) and above 4 blocks (float64 branch)
    for kk in (1500, 5000):
        x = random_codes(rng, s8, (1, 3, kk))
        w = random_codes(rng, signed(8, narrow=True), (4, kk))
        yield _linear_case(f"k{kk}", x, s8, w, 8)
    # unsigned and 16-bit activations, no bias
    x = with_extremes(random_codes(rng, unsigned(8), (2, 6, 24)), unsigned(8))
    yield _linear_case("a_u8", x, unsigned(8), random_codes(rng, signed(8, narrow=True), (6, 24)), 8)
    x = with_extremes(random_codes(rng, signed(16), (2, 6, 24)), signed(16))
    yield _linear_case("a_s16", x, signed(16), random_codes(rng, signed(4, narrow=True), (6, 24)), 4)
    # attention: q k^T (signed x signed) and P V (unsigned 16-bit probabilities x signed), heads merged
    q, kt = random_codes(rng, s8, (2, 4, 10, 6)), random_codes(rng, s8, (2, 4, 10, 6))
    yield Case("matmul", "attn_scores", "attn_scores", [("q", q, s8), ("k", kt, s8)], [signed(32)],
               attrs={"scale": 1 / math.sqrt(6)}, out_names=("acc",), out_shape=(4, 10, 10))
    p = with_extremes(random_codes(rng, unsigned(16), (2, 4, 10, 10)), unsigned(16))
    v = random_codes(rng, s8, (2, 4, 10, 6))
    yield Case("matmul", "attn_context", "attn_context", [("p", p, unsigned(16)), ("v", v, s8)], [signed(32)],
               out_names=("acc",), out_shape=(10, 4 * 6))          # heads merged
    # patch embedding (K1.4): 2 channels, 8x12 image, 4x4 patches: patch and feature order
    img = random_codes(rng, unsigned(8), (2, 2, 8, 12))
    w = random_codes(rng, signed(8, narrow=True), (5, 2 * 4 * 4))
    yield _linear_case("patch_embed", img, unsigned(8), w, 8, rng.integers(-1000, 1000, size=5),
                       kind="patch_embed", attrs={"patch": 4})
