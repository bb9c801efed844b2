"""Directed and random vectors of data movement (K6), Relu (K7.1), sigmoid and QuickGELU (K8)."""
import numpy as np

from ..kernels import candidates
from .cases import Case, all_codes, random_codes, signed, unsigned, with_extremes


# --- K6 data movement -----------------------------------------------------------------------------

def data_movement_cases(rng):
    s16 = signed(16)
    # cls_pos: concat(cls, x) + pos, saturating at both ends
    x = with_extremes(random_codes(rng, s16, (2, 4, 6)), s16)
    cls = random_codes(rng, s16, 6)
    pos = random_codes(rng, s16, (5, 6))
    yield Case("data-movement", "cls_pos", "cls_pos", [("in", x, s16)], [s16], {"cls": cls, "pos": pos},
               out_shape=pos.shape)
    # qkv_split: (N, T, 3D) -> q, k, v of (N, H, T, D/H), timm's (3, H, Dh) channel layout
    x = random_codes(rng, signed(8), (2, 5, 3 * 12))
    yield Case("data-movement", "qkv_split", "qkv_split", [("in", x, signed(8))], [signed(8)] * 3,
               attrs={"heads": 3}, out_names=("q", "k", "v"), out_shape=(3, 5, 4))
    yield Case("data-movement", "cls_select", "cls_select", [("in", random_codes(rng, s16, (2, 5, 6)), s16)], [s16],
               out_shape=(6,))


# --- K7.1 Relu -------------------------------------------------------------------------------------

def relu_cases(rng):
    # negative, zero and positive values, both ends of signed formats; an unsigned input passes as is
    for fmt in (signed(2), signed(8), signed(16), unsigned(8)):
        x = with_extremes(random_codes(rng, fmt, (2, 3, 16)), fmt)
        yield Case("relu", f"{'s' if fmt.signed else 'u'}{fmt.bits}", "relu", [("in", x, fmt)], [fmt])


# --- K8 sigmoid and QuickGELU ---------------------------------------------------------------------

def _sigmoid_case(kernel, family, name, q, in_fmt, in_scale, out_bits, gain):
    k = candidates(family)[kernel]
    plan = k.plan(in_scale, in_fmt, out_bits, gain=gain)
    return Case(kernel, name, family, [("in", np.asarray(q, dtype=np.int64), in_fmt)], [plan.out_fmt],
                dict(plan.consts), {"family": family, "kernel": kernel, "in_scale": float(in_scale),
                                    "gain": float(gain)}, spec=k.spec_section)


def sigmoid_family_cases(kernel, family, gain):
    """Every code of 2- and 8-bit inputs (signed and unsigned), 16-bit samples with both ends, at a
    range-covering scale, a saturating one and a fine one; 8- and 16-bit outputs."""
    def generate(rng):
        for fmt in (signed(2), signed(8), unsigned(8), signed(16)):
            q = all_codes(fmt)[None] if fmt.bits <= 8 else with_extremes(random_codes(rng, fmt, 2048), fmt)[None]
            for tag, scale in (("range", 8.0 / max(-fmt.lo, fmt.hi)), ("coarse", 0.5), ("fine", 2.0 ** -12)):
                for o in (8, 16):
                    if family == "quickgelu" and fmt.bits + o + (not fmt.signed) > 32:
                        continue
                    yield _sigmoid_case(kernel, family, f"{tag}_{'s' if fmt.signed else 'u'}{fmt.bits}_out{o}",
                                        q, fmt, scale, o, gain)
    return generate
