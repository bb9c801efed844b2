"""Directed and random vectors of the K2 softmax candidates."""
from fractions import Fraction
import math

import numpy as np

from ..kernels import candidates
from ..kernels.softmax import IBERT_COEF
from .cases import Case, random_codes, signed, with_extremes


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
        fmt = signed(bits)
        o = 2 + (i * 7) % 15                     # a permutation of 2..16
        q = with_extremes(random_codes(rng, fmt, (3, 17)), fmt)
        yield _softmax_case(kernel, f"in{bits}_out{o}", q, fmt, _typical_scale(kernel, fmt), o)
    s16 = signed(16)
    # the shipped model's setting: 16-bit logits at a fine scale, 16-bit probabilities, rows of 50
    q = (rng.normal(0, 3000, size=(8, 50))).round().clip(s16.lo, s16.hi)
    yield _softmax_case(kernel, "model_like", q, s16, 3.1e-4, 16)
    # one-hot rows (saturation of p = 1, the largest reciprocal), single-element rows, uniform rows
    oh = np.full((3, 9), s16.lo)
    oh[0, 0], oh[1, 4], oh[2, 8] = s16.hi, 0, s16.lo + 1
    for o in (8, 16):
        yield _softmax_case(kernel, f"one_hot_out{o}", oh, s16, 0.01, o)
    yield _softmax_case(kernel, "row_len1", random_codes(rng, s16, (5, 1)), s16, 0.01, 8)
    yield _softmax_case(kernel, "uniform", np.full((2, 7), 123), s16, 0.01, 8)
    # long rows (the row buffer length)
    yield _softmax_case(kernel, "long_row", random_codes(rng, signed(8), (2, SOFTMAX_ROW_MAX)), signed(8), 0.05, 8)
    # narrow input range
    yield _softmax_case(kernel, "narrow_in", with_extremes(random_codes(rng, signed(8, True), (2, 20)), signed(8, True)),
                        signed(8, True), 0.1, 8)
    # the ends of the accepted scale interval (K2.x.4): widest intermediates
    for fmt in (signed(2), signed(16)):
        lo, hi = k.scale_range(fmt, 8)
        for tag, s in (("scale_min", lo), ("scale_max", hi)):
            if math.isfinite(s) and s > 2.0 ** -1000:
                q = with_extremes(random_codes(rng, fmt, (2, 12)), fmt)
                yield _softmax_case(kernel, f"{tag}_in{fmt.bits}", q, fmt, s, 8)
    # seeded random: ViT-like logits
    for i in range(3):
        fmt = signed(int(rng.choice([8, 12, 16])))
        q = (rng.normal(0, fmt.hi / 4, size=(4, int(rng.integers(2, 60))))).round().clip(fmt.lo, fmt.hi)
        yield _softmax_case(kernel, f"random{i}", q, fmt, _typical_scale(kernel, fmt) * 2.0 ** rng.uniform(-1, 1),
                            int(rng.choice([8, 16])))


def bitshift_softmax_cases(rng):
    yield from _softmax_cases_for("bitshift-softmax", rng)
    s16 = signed(16)
    # S = ln 2 gives K = 2^20, G = 0, hence z = D and r = 0: e(D) = 2^(30 - D) exactly.
    # z at and past the clamp: 30, 31, 32, 63, 64, 65, 1000 and the largest D
    q = np.array([[0, -30, -31, -32, -63, -64, -65, -1000, s16.lo + 1]]) + 32767
    yield _softmax_case("bitshift-softmax", "z_clamp", q, s16, LN2, 16)
    # an exact rounding tie of the output (K2.1.3 step 8): D = 0, 1, ..., O, O gives sum = 2^31,
    # R = 2^31 and e*R/2^(62-O) = 1/2 for the two elements with D = O: out = 1 (half up)
    for o in (4, 8, 16):
        q = -np.array([list(range(o + 1)) + [o]])
        yield _softmax_case("bitshift-softmax", f"out_tie_out{o}", q, s16, LN2, o)
    # a row whose output changes when the reciprocal (step 7) is rounded instead of floored
    q = np.array([[-122, -3, 44, -13, 107, 115, 83, -10, 98, -110]])
    yield _softmax_case("bitshift-softmax", "recip_floor", q, signed(8), LN2, 16)
    # elements past the clamp (z >= 31 gives e = 0) that a clamp at 30 would count (e = 1) in a
    # row whose largest output then rounds the other way
    d = np.array([0, 3, 9, 11, 3, 13, 49, 58, 40, 36, 42, 54, 37, 45])
    yield _softmax_case("bitshift-softmax", "z_max", (32767 - d)[None], s16, LN2, 16)
    # G >= 32 (a scale of 2^-38 gives G = 34): a 5-bit G field (G mod 32) changes every output
    q = np.array([[32767, 32766, 32667, 2767, -32768, 0]])
    yield _softmax_case("bitshift-softmax", "g_ge_32", q, s16, 2.0 ** -38, 16)


def ivit_softmax_cases(rng):
    yield from _softmax_cases_for("ivit-shiftmax", rng)
    # the row sum clamp at 2^31 - 1 (16-bit inputs at a fine scale, long uniform rows: outside
    # the accuracy domain, reproduced as prior art)
    yield _softmax_case("ivit-shiftmax", "sum_clamp", np.zeros((2, 200), dtype=np.int64), signed(16), 2.0 ** -14, 8)


def ibert_softmax_cases(rng):
    yield from _softmax_cases_for("ibert-softmax", rng)
    # e16 clamp at 2^15 - 1: c_int = 2^16 - 1 makes round_shift(e(0), SH16) = 2^15 (K2.3.3 step 6)
    s = _scale_for_c_int((1 << 16) - 1)
    q = np.array([[0, -1, -2, -3, -5, -8, -13, -100], [0, 0, -128, -128, -128, -128, -128, -128]])
    yield _softmax_case("ibert-softmax", "e16_clamp", np.concatenate([q, random_codes(rng, signed(8), (3, 8))]),
                        signed(8), s, 8)
    # c_int = 2^17 - 1 (e(0) rounds to 2^15 as well): at a 16-bit output the clamp changes the
    # probabilities of the row with two maxima
    yield _softmax_case("ibert-softmax", "e16_clamp_out16", q, signed(8), _scale_for_c_int((1 << 17) - 1), 16)
    # output saturation: c_int = 2^12 gives e16(0) = 2^14 and a one-hot row has e16 * factor = 2^32
    s = _scale_for_c_int(1 << 12)
    q = np.full((2, 5), -32768)                          # D = 65535: clipped, e16 = 0
    q[:, 0] = 32767
    yield _softmax_case("ibert-softmax", "out_sat", q, signed(16), s, 8)


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
