"""A catalogue of spec-level mutants: plausible mis-implementations of docs/arithmetic.md, each a
patch of one rounding rule, saturation, register field, clamp or fixed number of the reference
path. tests/test_mutation.py runs every one against the conformance set: a mutant is killed when
some case's output differs from the dumped one. A mutant that no vector can kill is listed with
`equivalent`: the spec's proof that its outputs are always the same.

Each mutant is the smallest change of the spec's text it names; where a step is patched as a whole,
the patch repeats that step with the change (a mutant is a modified copy by nature)."""
from dataclasses import dataclass, replace

import numpy as np

from intsim import arith
from intsim.conformance import KERNELS
from intsim.coverage import SECTION_KERNEL, TEETH
from intsim.kernels import candidates, gelu, layernorm, sigmoid, softmax
from intsim.kernels.requantize import REQUANTIZE
from intsim.kernels.add import RESIDUAL_ADD


@dataclass(frozen=True)
class Mutant:
    name: str
    kernels: tuple          # the conformance kernels whose cases may show it (() = every kernel)
    patches: tuple          # (object, attribute, replacement)
    equivalent: str = ""    # why no output can differ (docs/arithmetic.md), for an equivalent mutant


# --- A3 round_shift: every other rule for the tie, and no rounding at all -------------------------

def _round_shift_with(up_at):
    """round_shift whose positive shifts add 1 to the floor where up_at(q, rem, half) says so."""
    def round_shift(x, k):
        x = np.asarray(x, dtype=np.int64)
        k = arith.check_shift(k, "round_shift")
        pos = np.maximum(k, 1)
        q = x >> pos
        rem = x - (q << pos)
        half = np.left_shift(np.int64(1), pos - 1)
        return np.where(k > 0, q + up_at(q, rem, half), x << np.maximum(-k, 0))
    return round_shift


ROUNDINGS = {
    "half to even": lambda q, rem, half: (rem > half) | ((rem == half) & ((q & 1) == 1)),
    "half down": lambda q, rem, half: rem > half,
    "half away from zero": lambda q, rem, half: (rem > half) | ((rem == half) & (q >= 0)),
    "floor (no rounding)": lambda q, rem, half: np.zeros_like(q),
    "toward zero": lambda q, rem, half: (rem > 0) & (q < 0),
}


def _wrap(x, fmt):
    """Two's-complement wrap-around instead of saturation."""
    span = 1 << fmt.bits
    v = (np.asarray(x, dtype=np.int64) - fmt.lo) % span + fmt.lo
    return v.astype(fmt.storage)


def _clip_short(x, fmt):
    """Saturation one LSB short of the top."""
    return np.clip(x, fmt.lo, fmt.hi - 1).astype(fmt.storage)


def _truncating_div(a, d):
    a, d = np.asarray(a, dtype=np.int64), np.asarray(d, dtype=np.int64)
    return np.abs(a) // np.abs(d) * np.sign(a) * np.sign(d)


# --- a kernel run with the constants a mis-implementation effectively holds -------------------------

def _with_consts(kernel, mutate):
    """Patch of kernel's class: reference() sees mutate(its constants), e.g. a field one bit short."""
    cls = type(kernel)
    original = cls.reference

    def reference(self, inputs, plan):
        return original(self, inputs, replace(plan, consts=mutate(dict(plan.consts))))
    return (cls, "reference", reference)


def _field(bits):
    """A shift field `bits` wide: the value modulo 2^bits."""
    return lambda v: np.asarray(v) & ((1 << bits) - 1) if np.ndim(v) else int(v) & ((1 << bits) - 1)


def _k_field(bits):
    """A requantizer's k field `bits` wide for its right shifts (k >= 0)."""
    return lambda k: np.where(np.asarray(k) >= 0, np.asarray(k) & ((1 << bits) - 1), k)


SOFTMAX, GELU = candidates("softmax"), candidates("gelu")


# --- whole steps repeated with the change -------------------------------------------------------

def _exp_without_z_clamp(d, consts):
    """K2.1.3 steps 2-5 with `y >> min(z, Z_MAX)` replaced by a 64-bit shifter (count mod 64)."""
    F, sb = consts["F"], consts["SEG_BITS"]
    t = (d * consts["K"]) >> consts["G"]
    z, r = t >> F, t & ((1 << F) - 1)
    i, rho = r >> (F - sb), r & ((1 << (F - sb)) - 1)
    y = consts["C"][i] - ((rho * consts["DS"][i]) >> (F - sb))
    return y >> (z & 63)


def _normalise_with(recip_of, saturate=True):
    def normalise(e, consts):
        n, o = consts["N"], consts["out_bits"]
        out = arith.round_shift(e * recip_of(np.int64(1) << np.int64(n), e.sum(axis=1, keepdims=True)), n - o)
        return np.minimum(out, (1 << o) - 1) if saturate else out
    return staticmethod(normalise)


def _poly_with_y_bits(bits):
    """K3.1.3 with y (P4) kept in a `bits`-wide register."""
    def reference(self, inputs, plan):
        c = plan.consts
        q = gelu._ref_input(inputs[0], c)
        w = (np.abs(q) << c["GL"]) >> c["GR"]
        d = c["B"] - np.minimum(w, c["B"])
        d2s = (d * d) >> c["S2"]
        y = ((d2s * d2s * c["mA"]) >> c["kA"]) & ((1 << bits) - 1)
        E = np.where(q > 0, c["TWO_ONE"] - y, y)
        return gelu._ref_output(q * E, c)
    return reference


def _exp_shift_without_e7(v, x0, n):
    """K3.3.1 without E7: f2 << (n - z - 1) in a 64-bit register (counts past 63 give 0)."""
    v = v + (v >> 1) - (v >> 4)
    v = np.maximum(v, n * x0)
    z = arith.floor_div(v, x0)
    f2 = v - z * x0 - 2 * x0
    s = n - z
    shifted = np.where(s - 1 > 63, 0, f2 << np.clip(s - 1, 0, 63))
    return np.where(s == 0, f2 >> 1, shifted)


def _ivit_mean_half_up(q2, C):
    """K4.3.2 steps 1-2 with the mean rounded half up instead of half to even."""
    q = q2.astype(np.int64)
    s = q.sum(axis=-1, keepdims=True)
    mean = (2 * s + C) // (2 * C)
    y = q - mean
    return y, (y * y).sum(axis=-1, keepdims=True)


def _sigmoid_tie_down(q, c):
    """K8.1.2 step 4 rounding ties down."""
    o = c["out_bits"]
    e = softmax.bitshift_exp_ref(np.abs(q), c)
    den = (np.int64(1) << np.int64(c["Q"])) + e
    p = arith.floor_div((e << np.int64(o + 1)) + den - 1, 2 * den)
    return np.where(q < 0, p, np.minimum((1 << o) - p, (1 << o) - 1))


def _tooth_mutant(bin_name, tooth):
    """The mis-implementation a coverage bin names (intsim.coverage.TEETH), as a mutant."""
    kernel = SECTION_KERNEL[bin_name.rsplit(".", 1)[0]]
    return Mutant(f"{bin_name}: {tooth.bug}", (kernel,),
                  (_with_consts(candidates(KERNELS[kernel][2])[kernel], tooth.mutate),))


MUTANTS = [
    *(_tooth_mutant(name, tooth) for name, tooth in TEETH.items()),
    *(Mutant(f"A3 round_shift {name}", (), ((arith, "round_shift", _round_shift_with(rule)),))
      for name, rule in ROUNDINGS.items()),
    Mutant("A1 saturation wraps around", (), ((arith, "saturate", _wrap),)),
    Mutant("A1 saturation one LSB short", (), ((arith, "saturate", _clip_short),)),
    Mutant("A5 division truncates toward zero", (), ((arith, "floor_div", _truncating_div),)),
    Mutant("A6 k field 5 bits", ("requantize",),
           (_with_consts(REQUANTIZE, lambda c: dict(c, k=_k_field(5)(c["k"]))),)),
    Mutant("A6 per-channel (m, k) along the last axis whatever the op's axis", ("requantize",),
           ((type(REQUANTIZE), "_axis", staticmethod(lambda plan: -1 if np.ndim(plan.consts["m"]) else None)),)),
    Mutant("A6 m field 30 bits", ("requantize",),
           (_with_consts(REQUANTIZE, lambda c: dict(c, m=np.asarray(c["m"]) & ((1 << 30) - 1))),)),
    Mutant("K5 ka field 5 bits", ("residual-add",),
           (_with_consts(RESIDUAL_ADD, lambda c: dict(c, ka=_k_field(5)(c["ka"]))),)),
    Mutant("K2.1 Z_MAX 30", ("bitshift-softmax",),
           (_with_consts(SOFTMAX["bitshift-softmax"], lambda c: dict(c, Z_MAX=30)),)),
    Mutant("K2.1 z clamp dropped (shift count mod 64)", ("bitshift-softmax",),
           ((softmax, "bitshift_exp_ref", _exp_without_z_clamp),)),
    Mutant("K2.1 reciprocal rounded", ("bitshift-softmax",),
           ((softmax.BitshiftSoftmax, "_normalise_ref", _normalise_with(lambda one, s: (one + s // 2) // s)),)),
    Mutant("K2.1 output saturation dropped", ("bitshift-softmax",),
           ((softmax.BitshiftSoftmax, "_normalise_ref", _normalise_with(lambda one, s: one // s, False)),)),
    Mutant("K2.2 sum clamp dropped", ("ivit-shiftmax",),
           (_with_consts(SOFTMAX["ivit-shiftmax"], lambda c: dict(c, SUM_CAP=1 << 62)),)),
    Mutant("K2.3 SH16 field 5 bits", ("ibert-softmax",),
           (_with_consts(SOFTMAX["ibert-softmax"], lambda c: dict(c, SH16=_field(5)(c["SH16"]))),)),
    Mutant("K3.1 GR field 3 bits", ("poly-gelu",),
           (_with_consts(GELU["poly-gelu"], lambda c: dict(c, GR=_field(3)(c["GR"]))),)),
    Mutant("K3.1 kA field 5 bits", ("poly-gelu",),
           (_with_consts(GELU["poly-gelu"], lambda c: dict(c, kA=_field(5)(c["kA"]))),)),
    Mutant("K3.1 y register 16 bits", ("poly-gelu",), ((gelu.PolyGelu, "reference", _poly_with_y_bits(16)),)),
    Mutant("K3.1 y register 18 bits", ("poly-gelu",), ((gelu.PolyGelu, "reference", _poly_with_y_bits(18)),)),
    Mutant("K3.3 E7 dropped", ("ivit-shiftgelu",), ((gelu, "_exp_shift_ref", _exp_shift_without_e7),)),
    Mutant("K3.3 n field 4 bits", ("ivit-shiftgelu",),
           (_with_consts(GELU["ivit-shiftgelu"], lambda c: dict(c, n=_field(4)(c["n"]))),)),
    Mutant("K4.3 mean rounded half up", ("ivit-layernorm",), ((layernorm, "_ivit_y_V", _ivit_mean_half_up),)),
    Mutant("K4.3 Newton 9 steps", ("ivit-layernorm",), ((layernorm, "IVIT_ITERS", layernorm.IVIT_ITERS - 1),)),
    Mutant("K4.3 Newton start 2^15", ("ivit-layernorm",), ((layernorm, "IVIT_STD0", layernorm.IVIT_STD0 // 2),)),
    Mutant("K8.1 step 4 ties down", ("bitshift-sigmoid", "bitshift-quickgelu"),
           ((sigmoid, "sigmoid_ref", _sigmoid_tie_down),),
           equivalent="K8.1.2 step 4: no exact tie exists (e <= 2^30 would need e = (2^(O+1) - 1) 2^30)"),
]
