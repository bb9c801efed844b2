"""Functional coverage of golden-format dumps: which spec corners (coverage bins) the vectors hit.

Each kernel section of docs/arithmetic.md lists its coverage bins, named as RTL covergroup bins
(`A6.tie_pos`, `K2.1.z_ge_64`, arrays as `K2.1.chord[0..15]`). `coverage(dump_dir)` computes the
bins hit by every op of a dump, model golden set and conformance set alike, from the op's dumped
inputs and constants only. Where a bin is about an intermediate value (a tie before the shift, the
exponent z, a sum that clamps), the reference arithmetic is re-run with the intermediate exposed,
and the re-run is checked against the dumped output, so a bin cannot be credited by a computation
that differs from the one dumped.
"""
from dataclasses import dataclass, field
import re

import numpy as np

from . import arith
from .errors import IntsimError
from .golden import load
from .golden.comparator import damaged_file
from .kernels import KernelPlan, candidates
from .kernels import hadamard
from .kernels.gelu import SAT, _exp_shift_ref
from .kernels.layernorm import _ivit_y_V, isqrt_divisions, isqrt_ln_normalised, isqrt_ref, ivit_std
from .kernels.matmul import MAX_FLOAT32_BLOCKS, block_size, grouped_weight_format, magnitude
from .kernels.resize import resize_linear_acc
from .kernels.sigmoid import sigmoid_ref
from .kernels.softmax import BitshiftSoftmax, bitshift_exp_ref
from .progress import bar

# --- the bins, by spec section (docs/arithmetic.md "Coverage bins"); NAME[a..b] is an array -------

BINS = {
    "A6": ["A6.k_neg", "A6.k_zero", "A6.k_mid", "A6.k_62", "A6.tie_pos", "A6.tie_neg", "A6.sat_hi",
           "A6.sat_lo", "A6.per_channel", "A6.per_channel_axis", "A6.m_bits[2..31]", "A6.out_s[2..32]", "A6.out_u[1..32]"],
    "K5": ["K5.tie_pos_a", "K5.tie_neg_a", "K5.tie_pos_b", "K5.tie_neg_b", "K5.tie_both", "K5.k_zero",
           "K5.k_neg", "K5.sat_hi", "K5.sat_lo"],
    "K1": ["K1.w_bits[2..8]", "K1.a_signed", "K1.a_unsigned", "K1.a_wide", "K1.bias", "K1.acc_hi",
           "K1.acc_lo", "K1.k_blocks", "K1.k_float64", "K1.attn_scores", "K1.attn_context",
           "K1.patch_embed", "K1.patch_channels"],
    "K2.1": ["K2.1.in_bits[2..16]", "K2.1.out_bits[2..16]", "K2.1.g_zero", "K2.1.g_pos", "K2.1.g_ge_32",
             "K2.1.dk_wide", "K2.1.chord[0..15]", "K2.1.z_ge_31", "K2.1.z_ge_64", "K2.1.r_max", "K2.1.recip_floor",
             "K2.1.out_tie", "K2.1.out_sat", "K2.1.row_len1"],
    "K2.2": ["K2.2.in_bits[2..16]", "K2.2.out_bits[2..16]", "K2.2.clip", "K2.2.z_max", "K2.2.sum_clamp",
             "K2.2.row_len1"],
    "K2.3": ["K2.3.in_bits[2..16]", "K2.3.out_bits[2..16]", "K2.3.clip", "K2.3.e16_clamp", "K2.3.out_sat",
             "K2.3.row_len1"],
    "K3.1": ["K3.1.in_bits[2..16]", "K3.1.zero", "K3.1.ramp_pos", "K3.1.ramp_neg", "K3.1.flat_pos",
             "K3.1.flat_neg", "K3.1.gl_pos", "K3.1.gl_ge_32", "K3.1.gr_pos"],
    "K3.2": ["K3.2.in_bits[2..16]", "K3.2.zero", "K3.2.ramp_pos", "K3.2.ramp_neg", "K3.2.flat_pos",
             "K3.2.flat_neg", "K3.2.n_zero", "K3.2.n_pos"],
    "K3.3": ["K3.3.in_bits[2..16]", "K3.3.rowmax", "K3.3.elementwise", "K3.3.clip", "K3.3.e_sat",
             "K3.3.sum_clamp", "K3.3.neg_rowmax"],
    "K4.2": ["K4.2.in_bits[2..16]", "K4.2.in_wide", "K4.2.p_zero", "K4.2.p_pos", "K4.2.const_row", "K4.2.isqrt_7",
             "K4.2.one_channel"],
    "K4.3": ["K4.3.in_bits[2..16]", "K4.3.const_row", "K4.3.mean_tie", "K4.3.newton_small", "K4.3.newton_off",
             "K4.3.one_channel"],
    "K6": ["K6.cls_pos_sat_hi", "K6.cls_pos_sat_lo", "K6.qkv_split", "K6.cls_select"],
    "K7.1": ["K7.1.neg", "K7.1.zero", "K7.1.pos"],
    "K8.1": ["K8.1.neg", "K8.1.zero", "K8.1.pos", "K8.1.sat", "K8.1.e_zero", "K8.1.unsigned_in"],
    "K8.2": ["K8.2.neg", "K8.2.zero", "K8.2.pos", "K8.2.unsigned_in"],
    "K9": ["K9.in_bits[2..16]", "K9.linear", "K9.nearest", "K9.coord_half_pixel", "K9.coord_pytorch_half_pixel",
           "K9.coord_align_corners", "K9.coord_asymmetric", "K9.nearest_round_prefer_floor",
           "K9.nearest_round_prefer_ceil", "K9.nearest_floor", "K9.nearest_ceil", "K9.up", "K9.down",
           "K9.edge", "K9.tie_pos", "K9.tie_neg"],
    "K10": ["K10.log2_block[1..10]", "K10.in_bits[2..16]", "K10.in_wide", "K10.in_signed", "K10.in_unsigned",
            "K10.one_block", "K10.multi_block", "K10.out_min", "K10.out_max", "K10.out_32", "K10.neg",
            "K10.zero", "K10.pos"],
}

SECTION_KERNEL = {"A6": "requantize", "K5": "residual add", "K1": "matrix products", "K2.1": "bitshift-softmax",
                  "K2.2": "ivit-shiftmax", "K2.3": "ibert-softmax", "K3.1": "poly-gelu", "K3.2": "ibert-gelu",
                  "K3.3": "ivit-shiftgelu", "K4.2": "isqrt-layernorm", "K4.3": "ivit-layernorm",
                  "K6": "data movement", "K7.1": "relu", "K8.1": "bitshift-sigmoid",
                  "K8.2": "bitshift-quickgelu", "K9": "resize", "K10": "hadamard"}

_ARRAY = re.compile(r"^(.*)\[(\d+)\.\.(\d+)\]$")


def expand(name):
    """'K2.1.chord[0..15]' -> ['K2.1.chord0', ..., 'K2.1.chord15']; a plain name -> [name]."""
    m = _ARRAY.match(name)
    if not m:
        return [name]
    return [f"{m.group(1)}{i}" for i in range(int(m.group(2)), int(m.group(3)) + 1)]


def all_bins(section):
    return [b for name in BINS[section] for b in expand(name)]


class CoverageError(IntsimError):
    """A dump whose outputs the instrumented reference does not reproduce, or an unknown op."""


# --- per-op bin functions: (op view, output (bits, signed)) -> set of bins -----------------------

def _out_fmt(op, i=0):
    e = op._tensors.entry(op.output_ids[i])
    return arith.IntFormat(int(e["bits"]), signed=bool(e["signed"]), narrow=bool(e.get("narrow", False)))


def _in_fmt(op, i=0):
    e = op._tensors.entry(op.input_ids[i])
    return arith.IntFormat(int(e["bits"]), signed=bool(e["signed"]), narrow=bool(e.get("narrow", False)))


# --- bins with teeth: hit only where a named mis-implementation gives another output -------------

@dataclass(frozen=True)
class Tooth:
    """The bug a bin catches, as the constants that mis-implementation effectively holds: the bin
    is hit only by an op whose output changes when the kernel's own reference runs with them."""
    bug: str
    mutate: object          # {name: int} -> {name: int}


TEETH = {
    "K2.1.g_pos": Tooth("the shift by G dropped", lambda c: dict(c, G=0)),
    "K2.1.g_ge_32": Tooth("a 5-bit G field (G mod 32)", lambda c: dict(c, G=c["G"] & 31)),
    "K2.3.e16_clamp": Tooth("the 16-bit clamp of step 6 dropped", lambda c: dict(c, E16_MAX=1 << 62)),
    "K3.1.gl_pos": Tooth("the left pre-shift GL dropped", lambda c: dict(c, GL=0)),
    "K3.1.gl_ge_32": Tooth("a 5-bit GL field (GL mod 32)", lambda c: dict(c, GL=c["GL"] & 31)),
    "K3.1.gr_pos": Tooth("the right pre-shift GR dropped", lambda c: dict(c, GR=0)),
}


def _bites(op, name, consts):
    """Whether bin `name`'s mis-implementation (TEETH) changes this op's dumped output."""
    kernel = candidates(op.attrs["family"])[op.attrs["kernel"]]
    plan = KernelPlan(kernel.name, TEETH[name].mutate(consts), _in_fmt(op), _out_fmt(op))
    try:
        other = kernel.reference([op.inputs[0].astype(np.int64)], plan)
    except (arith.ArithSpecError, OverflowError):
        return True                     # its output leaves the output format: another output
    return not np.array_equal(other.ravel(), op.outputs[0].ravel())


def _ties(p, k):
    """Per element: +1 / -1 where p / 2^k is an exact tie (j + 1/2) of positive / negative value."""
    k = np.broadcast_to(k, p.shape)
    pos_k = np.maximum(k, 1)
    half = np.left_shift(np.int64(1), pos_k - 1)
    tie = (k > 0) & ((p & (np.left_shift(np.int64(1), pos_k) - 1)) == half)
    return np.where(tie, np.sign(p), 0)


def _requant_bins(op):
    x = op.inputs[0].astype(np.int64)
    m, k = op.consts["m"].astype(np.int64), op.consts["k"].astype(np.int64)
    axis = int(op.attrs.get("axis", -1))
    if m.ndim:                                     # per channel along attrs["axis"] (A6)
        shape = [1] * x.ndim
        shape[axis] = m.size
        m, k = np.broadcast_to(m.reshape(shape), x.shape), np.broadcast_to(k.reshape(shape), x.shape)
    fmt = _out_fmt(op)
    hit = set()
    kk = np.unique(k)
    hit |= {"A6.k_neg"} if (kk < 0).any() else set()
    hit |= {"A6.k_zero"} if (kk == 0).any() else set()
    hit |= {"A6.k_mid"} if ((kk > 0) & (kk < 62)).any() else set()
    hit |= {"A6.k_62"} if (kk == 62).any() else set()
    if op.consts["m"].ndim:
        hit.add("A6.per_channel" if axis == -1 else "A6.per_channel_axis")
    hit |= {f"A6.m_bits{int(b)}" for b in np.unique([int(v).bit_length() for v in np.unique(m)]) if b >= 2}
    hit.add(f"A6.out_{'s' if fmt.signed else 'u'}{fmt.bits}")
    p = x * m
    t = _ties(p, k)
    hit |= {"A6.tie_pos"} if (t > 0).any() else set()
    hit |= {"A6.tie_neg"} if (t < 0).any() else set()
    pre = arith.round_shift(p, k)
    hit |= {"A6.sat_hi"} if (pre > fmt.hi).any() else set()
    hit |= {"A6.sat_lo"} if (pre < fmt.lo).any() else set()
    _check(op, np.clip(pre, fmt.lo, fmt.hi), "A6")
    return hit


def _add_bins(op):
    a, b = (t.astype(np.int64) for t in op.inputs)
    c = {n: int(v) for n, v in op.consts.items()}
    fmt = _out_fmt(op)
    pa, pb = a * c["ma"], b * c["mb"]
    ta, tb = _ties(pa, np.int64(c["ka"])), _ties(pb, np.int64(c["kb"]))
    hit = set()
    for name, t in (("a", ta), ("b", tb)):
        hit |= {f"K5.tie_pos_{name}"} if (t > 0).any() else set()
        hit |= {f"K5.tie_neg_{name}"} if (t < 0).any() else set()
    hit |= {"K5.tie_both"} if ((ta != 0) & (tb != 0)).any() else set()
    hit |= {"K5.k_zero"} if 0 in (c["ka"], c["kb"]) else set()
    hit |= {"K5.k_neg"} if min(c["ka"], c["kb"]) < 0 else set()
    pre = arith.round_shift(pa, c["ka"]) + arith.round_shift(pb, c["kb"])
    hit |= {"K5.sat_hi"} if (pre > fmt.hi).any() else set()
    hit |= {"K5.sat_lo"} if (pre < fmt.lo).any() else set()
    _check(op, np.clip(pre, fmt.lo, fmt.hi), "K5")
    return hit


def _matmul_bins(op):
    hit = set()
    a_fmt = _in_fmt(op, 0)
    hit.add("K1.a_signed" if a_fmt.signed else "K1.a_unsigned")
    if a_fmt.bits > 8:
        hit.add("K1.a_wide")
    if "weight" in op.consts:                      # a layer (linear, patch_embed): weight constant
        b_fmt = arith.IntFormat(**op.attrs["weight_fmt"])
        hit.add(f"K1.w_bits{b_fmt.bits}")
        if "weight_group" in op.attrs:             # the product reads q x group_scale (K1.9)
            b_fmt = grouped_weight_format(b_fmt, arith.IntFormat(**op.attrs["group_scale_fmt"]))
        kdim = op.consts["weight"].shape[1]
        if "bias" in op.consts:
            hit.add("K1.bias")
    else:
        b_fmt = _in_fmt(op, 1)
        kdim = op.inputs[0].shape[-1]
        hit.add(f"K1.{op.kind}")                  # a product of two activations
    if "patch" in op.attrs:
        hit.add("K1.patch_embed")
        if op.inputs[0].shape[1] > 1:
            hit.add("K1.patch_channels")
    kb = block_size(a_fmt, b_fmt)
    if kdim > kb:
        hit.add("K1.k_blocks")
    if kdim > kb * MAX_FLOAT32_BLOCKS and kdim * magnitude(a_fmt) * magnitude(b_fmt) < (1 << 53):
        hit.add("K1.k_float64")
    acc = op.outputs[0]
    if (acc >= 1 << 30).any():
        hit.add("K1.acc_hi")
    if (acc <= -(1 << 30)).any():
        hit.add("K1.acc_lo")
    return hit


def _softmax_common(sec, op, q2, consts):
    hit = {f"{sec}.in_bits{int(consts['in_bits'])}", f"{sec}.out_bits{int(consts['out_bits'])}"}
    if q2.shape[1] == 1:
        hit.add(f"{sec}.row_len1")
    return hit


def _bitshift_bins(op):
    c = {n: (v if v.ndim else int(v)) for n, v in op.consts.items()}
    q2 = op.inputs[0].astype(np.int64).reshape(-1, op.inputs[0].shape[-1])
    hit = _softmax_common("K2.1", op, q2, c)
    if c["G"] == 0:
        hit.add("K2.1.g_zero")
    hit |= {b for b, on in (("K2.1.g_pos", c["G"] > 0), ("K2.1.g_ge_32", c["G"] >= 32))
            if on and _bites(op, b, c)}
    d = q2.max(axis=1, keepdims=True) - q2                      # K2.1.3 step 1
    dk = d * c["K"]
    if (dk >= 1 << 61).any():
        hit.add("K2.1.dk_wide")
    t = dk >> c["G"]                                            # step 2
    z = t >> c["F"]                                             # step 3
    seg = (t & ((1 << c["F"]) - 1)) >> (c["F"] - c["SEG_BITS"])  # step 4
    hit |= {f"K2.1.chord{int(i)}" for i in np.unique(seg)}
    hit |= {"K2.1.z_ge_31"} if (z >= 31).any() else set()
    hit |= {"K2.1.z_ge_64"} if (z >= 64).any() else set()
    e = BitshiftSoftmax._exp_ref(d, c)                          # steps 2-5, the reference itself
    o, n = c["out_bits"], c["N"]
    recip = (1 << n) // e.sum(axis=1, keepdims=True)            # step 7
    if (recip == 1 << 32).any():
        hit.add("K2.1.r_max")
    er = e * recip
    sh = n - o
    if ((er & ((1 << sh) - 1)) == (1 << (sh - 1))).any():
        hit.add("K2.1.out_tie")
    pre = arith.round_shift(er, sh)                             # step 8
    if (pre > (1 << o) - 1).any():
        hit.add("K2.1.out_sat")
    out = np.minimum(pre, (1 << o) - 1)
    _check(op, out, "K2.1")
    sums = e.sum(axis=1, keepdims=True)                         # step 7 rounded, not floored:
    recip_rounded = ((1 << n) + sums // 2) // sums
    if not np.array_equal(np.minimum(arith.round_shift(e * recip_rounded, sh), (1 << o) - 1), out):
        hit.add("K2.1.recip_floor")
    return hit


def _ivit_softmax_bins(op):
    c = {n: int(v) for n, v in op.consts.items()}
    q2 = op.inputs[0].astype(np.int64).reshape(-1, op.inputs[0].shape[-1])
    hit = _softmax_common("K2.2", op, q2, c)
    x0, n = c["x0"], c["n"]
    qq = q2 - q2.max(axis=1, keepdims=True)                     # K2.2.3 step 1
    qq = qq + (qq >> 1) - (qq >> 4)                             # step 2
    if (qq < n * x0).any():
        hit.add("K2.2.clip")                                    # step 3
    qq = np.maximum(qq, n * x0)
    if ((qq // x0) == n).any():
        hit.add("K2.2.z_max")                                   # step 4
    e = candidates("softmax")["ivit-shiftmax"]._exp_ref(q2.max(axis=1, keepdims=True) - q2, c)
    if (e.sum(axis=1) > c["SUM_CAP"]).any():
        hit.add("K2.2.sum_clamp")                               # step 7
    return hit


def _ibert_softmax_bins(op):
    c = {n: int(v) for n, v in op.consts.items()}
    q2 = op.inputs[0].astype(np.int64).reshape(-1, op.inputs[0].shape[-1])
    hit = _softmax_common("K2.3", op, q2, c)
    d = q2.max(axis=1, keepdims=True) - q2
    if (-d < c["n"] * c["x0"]).any():
        hit.add("K2.3.clip")                                    # K2.3.3 step 1
    x0, n = c["x0"], c["n"]
    qq = np.maximum(-d, n * x0)
    z = qq // x0
    r = qq - z * x0
    e = np.maximum((r * (r + c["b_int"]) + c["c_int"]) << (n - z), 0)     # steps 2-5
    if (arith.round_shift(e, c["SH16"]) > c["E16_MAX"]).any() and _bites(op, "K2.3.e16_clamp", c):
        hit.add("K2.3.e16_clamp")                               # step 6
    e16 = candidates("softmax")["ibert-softmax"]._exp_ref(d, c)
    o = c["out_bits"]
    pre = (e16 * ((1 << 32) // e16.sum(axis=1, keepdims=True))) >> (32 - o)
    if (pre > (1 << o) - 1).any():
        hit.add("K2.3.out_sat")                                 # step 8
    _check(op, np.minimum(pre, (1 << o) - 1), "K2.3")
    return hit


def _gelu_in_bits(sec, c):
    return f"{sec}.in_bits{(int(c['in_hi']) + 1).bit_length()}"


def _poly_gelu_bins(op):
    c = {n: int(v) for n, v in op.consts.items()}
    q = op.inputs[0].astype(np.int64)
    hit = {_gelu_in_bits("K3.1", c)}
    hit |= {b for b, on in (("K3.1.gl_pos", c["GL"] > 0), ("K3.1.gl_ge_32", c["GL"] >= 32),
                            ("K3.1.gr_pos", c["GR"] > 0)) if on and _bites(op, b, c)}
    w = (np.abs(q) << c["GL"]) >> c["GR"]                       # K3.1.3 P1
    flat = w >= c["B"]                                          # P2: d = 0
    for name, sel in (("zero", q == 0), ("ramp_pos", (q > 0) & ~flat), ("ramp_neg", (q < 0) & ~flat),
                      ("flat_pos", (q > 0) & flat), ("flat_neg", (q < 0) & flat)):
        if sel.any():
            hit.add(f"K3.1.{name}")
    return hit


def _ibert_gelu_bins(op):
    c = {n: int(v) for n, v in op.consts.items()}
    q = op.inputs[0].astype(np.int64)
    hit = {_gelu_in_bits("K3.2", c), "K3.2.n_zero" if c["n"] == 0 else "K3.2.n_pos"}
    flat = np.abs(q) >= -c["b_int"]                             # K3.2.2 I1: t clipped at -b_int
    for name, sel in (("zero", q == 0), ("ramp_pos", (q > 0) & ~flat), ("ramp_neg", (q < 0) & ~flat),
                      ("flat_pos", (q > 0) & flat), ("flat_neg", (q < 0) & flat)):
        if sel.any():
            hit.add(f"K3.2.{name}")
    return hit


def _ivit_gelu_bins(op):
    c = {n: int(v) for n, v in op.consts.items()}
    q = op.inputs[0].astype(np.int64)
    hit = {_gelu_in_bits("K3.3", c), "K3.3.rowmax" if c["rowmax"] else "K3.3.elementwise"}
    if c["rowmax"]:
        m = q.max(axis=-1, keepdims=True) if q.ndim else q
        if (m < 0).any():
            hit.add("K3.3.neg_rowmax")
    else:
        m = np.maximum(q, 0)
    x0, n = c["x0"], c["n"]
    for v in (q - m, -m):                                       # the arguments of e1 and e2
        v1 = v + (v >> 1) - (v >> 4)                            # K3.3.1 E1
        if (v1 < n * x0).any():
            hit.add("K3.3.clip")                                # E2
        z = np.floor_divide(np.maximum(v1, n * x0), x0)
        f2 = np.maximum(v1, n * x0) - z * x0 - 2 * x0
        s = n - z
        # E7 is exact wherever a 64-bit register holds f2 << (s - 1) (K3.3.1): the bin needs a
        # shift past it, where a datapath without E7 loses e2
        if ((s >= 1) & (s - 1 + np.frexp(f2.astype(np.float64))[1] > 63)).any():
            hit.add("K3.3.e_sat")
    e1, e2 = _exp_shift_ref(q - m, x0, n), _exp_shift_ref(-m, x0, n)
    if (e1 + e2 > SAT).any():
        hit.add("K3.3.sum_clamp")                               # K3.3.2 S4
    return hit


def _ln_in_bits(sec, c):
    bits = (int(c["in_hi"]) + 1).bit_length()
    return f"{sec}.in_bits{bits}" if bits <= 16 else f"{sec}.in_wide"


def _isqrt_ln_bins(op):
    c = {n: (v if v.ndim else int(v)) for n, v in op.consts.items()}
    q2 = op.inputs[0].astype(np.int64).reshape(-1, c["C"])
    hit = {_ln_in_bits("K4.2", c), "K4.2.p_zero" if c["p"] == 0 else "K4.2.p_pos"}
    if c["C"] == 1:
        hit.add("K4.2.one_channel")
    qt = q2 >> c["p"]
    s = qt.sum(axis=1)
    D = c["C"] * (qt * qt).sum(axis=1) - s * s
    if (D == 0).any():                                          # K4.2.2 step 4: D = 0
        hit.add("K4.2.const_row")
    N, _ = isqrt_ln_normalised(D[D > 0], c["u"], c["E"])      # steps 5-6, then step 7's divisions
    if any(isqrt_divisions(n) == 7 for n in N.tolist()):
        hit.add("K4.2.isqrt_7")                                 # K4.1.3's worst case
    return hit


def _ivit_ln_bins(op):
    c = {n: (v if v.ndim else int(v)) for n, v in op.consts.items()}
    q2 = op.inputs[0].astype(np.int64).reshape(-1, c["C"])
    hit = {_ln_in_bits("K4.3", c)}
    if c["C"] == 1:
        hit.add("K4.3.one_channel")
    _, V = _ivit_y_V(q2, c["C"])
    V = V[:, 0]
    sums = q2.sum(axis=1)                                       # K4.3.2 step 1: a tie s / C = j + 1/2
    if ((2 * (sums - (sums // c["C"]) * c["C"]) == c["C"]) & ((sums // c["C"]) % 2 == 0)).any():
        hit.add("K4.3.mean_tie")                                # with j even: half up would differ
    if (V == 0).any():
        hit.add("K4.3.const_row")
    if ((V > 0) & (V < 142883)).any():
        hit.add("K4.3.newton_small")                           # K4.3.3: not down from 2^16 yet
    if ((V >= 142883) & (ivit_std(V) != isqrt_ref(V))).any():
        hit.add("K4.3.newton_off")
    return hit


def _data_bins(op):
    if "pos" in op.consts:                         # cls_pos: concat(cls, x) + pos
        x = op.inputs[0].astype(np.int64)
        cls, pos = op.consts["cls"].astype(np.int64), op.consts["pos"].astype(np.int64)
        y = np.concatenate([np.broadcast_to(cls, (x.shape[0], 1, x.shape[2])), x], axis=1) + pos
        fmt = _out_fmt(op)
        hit = set()
        hit |= {"K6.cls_pos_sat_hi"} if (y > fmt.hi).any() else set()
        hit |= {"K6.cls_pos_sat_lo"} if (y < fmt.lo).any() else set()
        _check(op, np.clip(y, fmt.lo, fmt.hi), "K6")
        return hit
    return {f"K6.{op.kind}"}


def _relu_bins(op):
    x = op.inputs[0]
    _check(op, np.maximum(x, 0), "K7.1")
    return {f"K7.1.{name}" for name, sel in (("neg", x < 0), ("zero", x == 0), ("pos", x > 0)) if sel.any()}


def _sigmoid_family_bins(op, section):
    x = np.asarray(op.inputs[0], dtype=np.int64)
    c = {k: (np.asarray(v) if np.ndim(v) else int(v)) for k, v in op.consts.items()}
    sig = sigmoid_ref(x, c)
    _check(op, sig if section == "K8.1" else x * sig, section)
    sel = [("neg", x < 0), ("zero", x == 0), ("pos", x > 0)]
    if section == "K8.1":
        sel += [("sat", (x >= 0) & (sig == (1 << c["out_bits"]) - 1)), ("e_zero", bitshift_exp_ref(np.abs(x), c) == 0)]
    hit = {f"{section}.{name}" for name, s in sel if s.any()}
    return hit | ({f"{section}.unsigned_in"} if c["in_lo"] == 0 else set())


def _resize_bins(op):
    x = op.inputs[0].astype(np.int64)
    c = {k: (v if v.ndim else int(v)) for k, v in op.consts.items()}
    a = op.attrs
    fmt = _in_fmt(op)
    hit = {f"K9.in_bits{fmt.bits}", f"K9.{a['mode']}", f"K9.coord_{a['coordinate_transformation_mode']}"}
    out_hw = tuple(a["size"])
    hit |= {"K9.up"} if any(o > i for o, i in zip(out_hw, x.shape[-2:])) else set()
    hit |= {"K9.down"} if any(o < i for o, i in zip(out_hw, x.shape[-2:])) else set()
    if a["mode"] == "nearest":
        hit.add(f"K9.nearest_{a['nearest_mode']}")
        _check(op, x[..., c["iy0"], :][..., c["ix0"]], "K9")
        return hit
    if (c["iy1"] == c["iy0"]).any() or (c["ix1"] == c["ix0"]).any():
        hit.add("K9.edge")                                      # K9.0: c clamped to the last index
    p2 = 2 * c["P"]
    acc = resize_linear_acc(x, c)                               # K9.2, the kernel's own sum
    tie = (acc & ((1 << p2) - 1)) == (1 << (p2 - 1))
    hit |= {"K9.tie_pos"} if (tie & (acc > 0)).any() else set()
    hit |= {"K9.tie_neg"} if (tie & (acc < 0)).any() else set()
    _check(op, arith.round_shift(acc, p2), "K9")
    return hit


def hadamard_range(in_fmt, block):
    """K10.2: the smallest and largest sums z any input of in_fmt gives, B = block."""
    return hadamard.sum_range(in_fmt.lo, in_fmt.hi, block)


def _hadamard_bins(op):
    x, block, fmt = op.inputs[0].astype(np.int64), int(op.attrs["block"]), _in_fmt(op)
    z = hadamard.reference(x, block)
    _check(op, z, "K10")
    z_min, z_max = hadamard_range(fmt, block)
    hit = {f"K10.log2_block{block.bit_length() - 1}", f"K10.in_{'signed' if fmt.signed else 'unsigned'}",
           "K10.one_block" if x.shape[-1] == block else "K10.multi_block"}
    hit |= {f"K10.in_bits{fmt.bits}" if fmt.bits <= 16 else "K10.in_wide"} if fmt.bits >= 2 else set()
    hit |= {"K10.out_32"} if _out_fmt(op).bits == 32 else set()
    sel = [("out_min", z == z_min), ("out_max", z == z_max), ("neg", z < 0), ("zero", z == 0), ("pos", z > 0)]
    return hit | {f"K10.{name}" for name, s in sel if s.any()}


# spec section of an op (its manifest `spec`) -> the function computing its bins
SECTION_BINS = {"A6": _requant_bins, "K5": _add_bins, "K1": _matmul_bins, "K2.1": _bitshift_bins,
                "K2.2": _ivit_softmax_bins, "K2.3": _ibert_softmax_bins, "K3.1": _poly_gelu_bins,
                "K3.2": _ibert_gelu_bins, "K3.3": _ivit_gelu_bins, "K4.2": _isqrt_ln_bins,
                "K4.3": _ivit_ln_bins, "K6": _data_bins, "K7.1": _relu_bins,
                "K8.1": lambda op: _sigmoid_family_bins(op, "K8.1"),
                "K8.2": lambda op: _sigmoid_family_bins(op, "K8.2"), "K9": _resize_bins, "K10": _hadamard_bins}
assert set(SECTION_BINS) == set(BINS)


def _check(op, recomputed, section):
    """The instrumented re-run must reproduce the dumped output exactly."""
    want = op.outputs[0]
    if recomputed.size != want.size or not np.array_equal(recomputed.ravel(), want.ravel()):
        raise CoverageError(f"op {op.index} {op.name!r}: the {section} reference re-run does not "
                            f"reproduce the dumped output (corrupt or foreign dump?)")


def op_bins(op):
    """(section, set of bins hit) of one op of a loaded dump, by the spec section it records."""
    if op.spec not in SECTION_BINS:
        raise CoverageError(f"op {op.index} {op.name!r}: spec section {op.spec!r} has no coverage "
                            f"bins (sections: {', '.join(SECTION_BINS)})")
    return op.spec, SECTION_BINS[op.spec](op)


@dataclass
class Coverage:
    dump: str
    ops: dict = field(default_factory=dict)     # section -> number of ops
    hit: dict = field(default_factory=dict)     # section -> set of bins

    def missed(self, section):
        return [b for b in all_bins(section) if b not in self.hit.get(section, set())]

    def complete(self):
        return all(not self.missed(s) for s in BINS)

    def to_dict(self):
        return {"dump": self.dump, "complete": self.complete(),
                "sections": {s: {"kernel": SECTION_KERNEL[s], "ops": self.ops.get(s, 0),
                                 "bins": len(all_bins(s)),
                                 "hit": [b for b in all_bins(s) if b in self.hit.get(s, set())],
                                 "missed": self.missed(s)} for s in BINS}}

    def text(self):
        lines = [f"coverage of {self.dump}"]
        for s in BINS:
            n_all, miss = len(all_bins(s)), self.missed(s)
            head = f"{s:<5} {SECTION_KERNEL[s]:<17} {self.ops.get(s, 0):>4} ops  {n_all - len(miss):>3}/{n_all:<3} bins"
            if not self.ops.get(s):
                lines.append(f"{head}  (not in this dump)")
                continue
            hit = [b for b in all_bins(s) if b not in miss]
            lines.append(head + ("  complete" if not miss else ""))
            lines.append(f"      hit:    {compress(hit) or '-'}")
            if miss:
                lines.append(f"      missed: {compress(miss)}")
        total = sum(len(all_bins(s)) for s in BINS)
        hit = sum(len(all_bins(s)) - len(self.missed(s)) for s in BINS)
        lines.append(f"total {hit}/{total} bins" + ("  COMPLETE" if self.complete() else ""))
        return "\n".join(lines)


def compress(names):
    """['K2.1.in_bits2', 'K2.1.in_bits3', 'K2.1.z_ge_64'] -> 'K2.1.in_bits[2..3], K2.1.z_ge_64'."""
    out, groups = [], {}
    for n in names:
        m = re.match(r"^(.*?)(\d+)$", n)
        if m and any(spec.startswith(m.group(1) + "[") for s in BINS.values() for spec in s):
            groups.setdefault(m.group(1), []).append(int(m.group(2)))
        else:
            out.append(n)
    for prefix, idx in groups.items():
        runs, start = [], idx[0]
        for a, b in zip(idx, idx[1:] + [None]):
            if b != a + 1:
                runs.append(f"{start}" if start == a else f"{start}..{a}")
                start = b
        out.append(f"{prefix}[{','.join(runs)}]")
    return ", ".join(out)


def coverage(dump_dir):
    """Bins hit by every op of a golden-format dump (a model golden set or a conformance set)."""
    g = load(dump_dir)
    with bar(len(g.manifest["tensors"]), "checksums", None, "tensor") as b:     # on a terminal only
        for tid in g.manifest["tensors"]:       # a damaged file is named as such, before any bin
            damaged = damaged_file(g, tid)
            if damaged:
                raise CoverageError(f"{damaged[0]} is corrupted ({damaged[1]}); refusing to measure its coverage")
            b.update(1)
    cov = Coverage(str(dump_dir))
    with bar(len(g.ops), "coverage", None, "op") as b:
        for op in g.ops:
            sec, hit = op_bins(op)
            cov.ops[sec] = cov.ops.get(sec, 0) + 1
            cov.hit.setdefault(sec, set()).update(hit)
            b.update(1)
    return cov
