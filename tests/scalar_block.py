"""A deliberately plain, independent implementation of one transformer block's integer ops.

Written from the specification text (docs/arithmetic.md: A2-A6, K1, K5, K6, K10,
softmax.md K2.1, gelu.md K3.1, layernorm.md K4.0.3/K4.2), *not* from intsim's code: Python ints,
lists and loops only -
no NumPy, no numba, no intsim import. Python's `>>` on ints is the floor shift of A5 and its ints
never wrap, so every intermediate is checked against int64 explicitly (A4: the spec claims they fit).

`run_block(ops, tensors)` takes the ops of one block as plain dicts (kind, name, attrs, inputs,
outputs, consts) and a function returning the golden tensor of an id as (shape, flat list); it
computes every op from its own outputs (only the block's input comes from the golden set) and
reports the first op whose output differs.
"""
from fractions import Fraction
import math

INT64_LO, INT64_HI = -(1 << 63), (1 << 63) - 1


class SpecViolation(AssertionError):
    """An intermediate left int64 or a constant differs from what the spec says."""


def i64(x, what):
    if not INT64_LO <= x <= INT64_HI:
        raise SpecViolation(f"{what}: intermediate {x} outside int64 (spec A4 says it fits)")
    return x


def fmt_range(bits, signed, narrow=False):
    """A1."""
    if not signed:
        return 0, (1 << bits) - 1
    return -(1 << (bits - 1)) + (1 if narrow else 0), (1 << (bits - 1)) - 1


def sat(x, lo, hi):
    return lo if x < lo else hi if x > hi else x


def round_shift(x, k):
    """A3: x / 2^k rounded half up (ties toward +inf); k < 0 an exact left shift."""
    if k > 0:
        return i64(x + (1 << (k - 1)), "round_shift") >> k
    return i64(x << -k, "left shift") if k < 0 else x


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


# --- A2: dyadic multipliers (checks the compiler's (m, k) against the spec's rule) ----------------

def dyadic(r, bits=31):
    """A2 steps 1-5 for a positive float ratio r, with exact rationals."""
    f, e = math.frexp(r)
    k = bits - e
    m = math.floor(Fraction(f) * (1 << bits) + Fraction(1, 2))
    if m == 1 << bits:
        m, k = 1 << (bits - 1), k - 1
    if k > 62:
        k = 62
        m = math.floor(Fraction(r) * (1 << 62) + Fraction(1, 2))
    return m, k


# --- A6 requantize, K5 residual add ---------------------------------------------------------------

def requantize(x, shape, m, k, lo, hi):
    """A6: y = sat(round_shift(x*m, k)); m, k scalars or one per channel of the last axis."""
    per_channel = isinstance(m, list)
    c = shape[-1]
    out = []
    for i, v in enumerate(x):
        mi, ki = (m[i % c], k[i % c]) if per_channel else (m, k)
        out.append(sat(round_shift(i64(v * mi, "requantize x*m"), ki), lo, hi))
    return out


def residual_add(a, b, ma, ka, mb, kb, lo, hi):
    """K5: y = sat(round_shift(a*ma, ka) + round_shift(b*mb, kb))."""
    return [sat(round_shift(i64(x * ma, "add a*ma"), ka) + round_shift(i64(y * mb, "add b*mb"), kb), lo, hi)
            for x, y in zip(a, b)]


# --- K1 matmul and the K1.4 / K6 data movement ----------------------------------------------------

def linear(x, shape, w, w_shape, bias, group=None, group_scale=None):
    """K1.4: x (..., In) @ W^T, W stored (Out, In), + bias; exact, int32 result (A4).
    K1.9 (group, group_scale (Out, ceil(In / group)) flat): each group's partial sum times its
    row's multiplier, then summed."""
    n_in = shape[-1]
    n_out = w_shape[0]
    rows = [w[o * n_in:(o + 1) * n_in] for o in range(n_out)]
    runs = [(0, n_in)] if group is None else [(j, min(j + group, n_in)) for j in range(0, n_in, group)]
    mults = [[1] for _ in range(n_out)] if group is None else \
        [group_scale[o * len(runs):(o + 1) * len(runs)] for o in range(n_out)]
    out = []
    for r in range(numel(shape[:-1])):
        xr = x[r * n_in:(r + 1) * n_in]
        for o in range(n_out):
            acc = sum(m * sum(xr[t] * rows[o][t] for t in range(j0, j1))
                      for m, (j0, j1) in zip(mults[o], runs)) + (bias[o] if bias is not None else 0)
            if not -(1 << 31) <= acc < (1 << 31):
                raise SpecViolation(f"linear accumulator {acc} outside int32")
            out.append(acc)
    return out, shape[:-1] + (n_out,)


def qkv_split(x, shape, heads):
    """K6: (N, T, 3D) -> q, k, v (N, H, T, D/H); channel c = s*D + h*Dh + d (timm (3, H, Dh))."""
    n, t, d3 = shape
    d = d3 // 3
    dh = d // heads
    outs = []
    for s in range(3):
        o = []
        for b in range(n):
            for h in range(heads):
                for i in range(t):
                    base = (b * t + i) * d3 + s * d + h * dh
                    o.extend(x[base:base + dh])
        outs.append(o)
    return outs, (n, heads, t, dh)


def attn_scores(q, k, shape):
    """K1.4: q (N, H, T, Dh) @ k^T -> (N, H, T, T)."""
    n, h, t, dh = shape
    out = []
    for bh in range(n * h):
        base = bh * t * dh
        kr = [k[base + j * dh: base + (j + 1) * dh] for j in range(t)]
        for i in range(t):
            qr = q[base + i * dh: base + (i + 1) * dh]
            out.extend(sum(a * b for a, b in zip(qr, kj)) for kj in kr)
    return out, (n, h, t, t)


def attn_context(p, v, v_shape):
    """K1.4: P (N, H, T, T) @ v (N, H, T, Dh), heads merged to (N, T, H*Dh)."""
    n, h, t, dh = v_shape
    out = [0] * (n * t * h * dh)
    for b in range(n):
        for hh in range(h):
            pb = ((b * h) + hh) * t * t
            vb = ((b * h) + hh) * t * dh
            for i in range(t):
                prow = p[pb + i * t: pb + (i + 1) * t]
                for d in range(dh):
                    out[(b * t + i) * h * dh + hh * dh + d] = sum(
                        prow[j] * v[vb + j * dh + d] for j in range(t))
    return out, (n, t, h * dh)


# --- K2.1 bitshift-softmax --------------------------------------------------------------------------

LOG2E = Fraction("1.4426950408889634073599246810018921374266")


def bitshift_constants(S):
    """K2.1.1 (K, G) and K2.1.2 (C, DS) from the text, for the float in_scale S."""
    kappa = Fraction(S) * LOG2E * (1 << 20)
    e = 0                                   # floor(log2 kappa), exactly
    while Fraction(2) ** (e + 1) <= kappa:
        e += 1
    while Fraction(2) ** e > kappa:
        e -= 1
    h = e - 16
    km = math.floor(kappa / Fraction(2) ** h + Fraction(1, 2))
    K, G = (km << h, 0) if h >= 0 else (km, -h)
    C = []
    for i in range(17):       # C[i] = round(2^(30 - i/16)): c - 1/2 < t < c + 1/2 with t^16 = 2^(480 - i)
        x = 1 << (496 - i)    # (2t)^16
        c = int(round(2.0 ** (30 - i / 16)))
        while (2 * c - 1) ** 16 > x:
            c -= 1
        while (2 * c + 1) ** 16 <= x:
            c += 1
        C.append(c)
    DS = []
    for i in range(16):
        d = C[i] - C[i + 1]
        drop = max(d.bit_length() - 11, 0)
        DS.append((d >> drop) << drop)
    return K, G, C[:16], DS


def softmax_bitshift(x, shape, c):
    """K2.1.3 steps 1-8 per row of the last axis, with the K2.1.1 fixed constants."""
    F, SEG, N, ZMAX = 20, 4, 62, 31
    O = c["out_bits"]
    K, G, C, DS = c["K"], c["G"], c["C"], c["DS"]
    L = shape[-1]
    out = []
    for r in range(numel(shape[:-1])):
        row = x[r * L:(r + 1) * L]
        m = max(row)
        es = []
        for q in row:
            D = m - q                                           # 1
            T = i64(D * K, "D*K") >> G                          # 2
            z = T >> F                                          # 3
            rr = T & ((1 << F) - 1)
            i = rr >> (F - SEG)                                 # 4
            rho = rr & ((1 << (F - SEG)) - 1)
            y = C[i] - (i64(rho * DS[i], "rho*DS") >> (F - SEG))
            es.append(y >> min(z, ZMAX))                        # 5
        total = i64(sum(es), "row sum")                         # 6
        R = (1 << N) // total                                   # 7
        for e in es:                                            # 8
            out.append(min(i64(e * R + (1 << (N - O - 1)), "e*R") >> (N - O), (1 << O) - 1))
    return out


# --- K3.1 poly-gelu -----------------------------------------------------------------------------------

def gelu_poly(x, c):
    """K3.1.3 steps P1-P6, elementwise."""
    out = []
    for q in x:
        w = (abs(q) << c["GL"]) >> c["GR"]                      # P1
        d = c["B"] - min(w, c["B"])                             # P2
        d2s = (d * d) >> c["S2"]                                # P3
        y = i64(d2s * d2s * c["mA"], "d2s^2*mA") >> c["kA"]     # P4
        E = c["TWO_ONE"] - y if q > 0 else y                    # P5
        out.append(q * E)                                       # P6
    return out


# --- K4.2 isqrt-layernorm ------------------------------------------------------------------------------

def isqrt_layernorm_constants(C, lo, hi, S, eps):
    """K4.2.1: pre-shift p, eps resolution u and the eps constant E, with exact rationals."""
    for p in range(0, hi.bit_length()):           # [0, b - 2]
        lo_p, hi_p = lo >> p, hi >> p
        if C * C * max(lo_p * lo_p, hi_p * hi_p) > INT64_HI:
            continue
        d_max = (C * C * (hi_p - lo_p) ** 2) // 4
        e_exact = Fraction(C * C) * Fraction(eps) / (Fraction(S) * 2 ** p) ** 2
        for u in range(30, -1, -1):
            E = math.floor(e_exact * 4 ** u + Fraction(1, 2))
            if d_max * 4 ** u + E < 1 << 62:
                return p, u, E
    raise SpecViolation("K4.2.1: no (p, u)")


def layernorm_isqrt(x, shape, c):
    """K4.2.2 steps 1-10 per row (step 10 is the K4.0.3 affine stage out = round_shift(n*g, h) + B).
    The square root is Python's exact math.isqrt (K4.1 defines isqrt as floor(sqrt(n)))."""
    C, p, u, E, F = c["C"], c["p"], c["u"], c["E"], c["F"]
    g, B, h = c["g"], c["B"], c["h"]
    K = 56
    out = []
    for r in range(numel(shape[:-1])):
        qt = [v >> p for v in x[r * C:(r + 1) * C]]
        s = sum(qt)
        D = i64(C * i64(sum(v * v for v in qt), "sum q~^2"), "C*Q") - s * s
        if D == 0:
            n = [0] * C
        else:
            R = i64((D << (2 * u)) + E, "R")
            t = (62 - R.bit_length()) >> 1
            Nn = i64(R << (2 * t), "N")
            rt = math.isqrt(Nn)
            f = (1 << K) // rt
            n = [i64((C * v - s) * f, "y'*f") >> (K - F - t - u) for v in qt]
        out.extend(round_shift(i64(nv * g[j], "n*g"), h) + B[j] for j, nv in enumerate(n))
    return out


def hadamard(x, shape, block):
    """K10.3 step 1: each block of B channels times H_B, H_B[i][l] = (-1)^popcount(i & l)."""
    c = shape[-1]
    out = []
    for row in range(len(x) // c):
        v = x[row * c:(row + 1) * c]
        for j in range(0, c, block):
            out.extend(sum(v[j + l] * (-1 if bin(i & l).count("1") % 2 else 1) for l in range(block))
                       for i in range(block))
    return out


# --- the block runner --------------------------------------------------------------------------------

def run_op(op, ins, in_shapes, out_fmts):
    """Outputs (flat lists) and shapes of one op from its inputs, by kind (docs/quantization.md Q3)."""
    kind, c, a = op["kind"], op["consts"], op["attrs"]
    x, shape = ins[0], in_shapes[0]
    lo, hi = out_fmts[0]
    if kind == "requant":
        return [requantize(x, shape, c["m"], c["k"], lo, hi)], [shape]
    if kind == "linear":
        y, s = linear(x, shape, c["weight"], c["weight_shape"], c.get("bias"),
                      a.get("weight_group"), c.get("group_scale"))
        return [y], [s]
    if kind == "qkv_split":
        outs, s = qkv_split(x, shape, a["heads"])
        return outs, [s] * 3
    if kind == "attn_scores":
        y, s = attn_scores(x, ins[1], shape)
        return [y], [s]
    if kind == "attn_context":
        y, s = attn_context(x, ins[1], in_shapes[1])
        return [y], [s]
    if kind == "add":
        return [residual_add(x, ins[1], c["ma"], c["ka"], c["mb"], c["kb"], lo, hi)], [shape]
    if kind == "softmax" and a["kernel"] == "bitshift-softmax":
        return [softmax_bitshift(x, shape, c)], [shape]
    if kind == "gelu" and a["kernel"] == "poly-gelu":
        return [gelu_poly(x, c)], [shape]
    if kind == "hadamard":
        return [hadamard(x, shape, a["block"])], [shape]
    if kind == "layernorm" and a["kernel"] == "isqrt-layernorm":
        return [layernorm_isqrt(x, shape, c)], [shape]
    raise NotImplementedError(f"{kind} {a.get('kernel', '')}: not part of the scalar block")


def run_block(ops, golden):
    """ops: the block's ops (dicts with kind, name, attrs, inputs, outputs, consts, out_fmts);
    golden(id) -> (shape, flat list). Returns [(op name, output id, first differing flat index or
    None)] for every output, computed from the block's own results."""
    env = {}
    report = []
    for op in ops:
        ins, shapes = [], []
        for t in op["inputs"]:
            shape, flat = env[t] if t in env else golden(t)
            ins.append(flat)
            shapes.append(shape)
        outs, out_shapes = run_op(op, ins, shapes, op["out_fmts"])
        for t, y, s in zip(op["outputs"], outs, out_shapes):
            want_shape, want = golden(t)
            lo, hi = op["out_fmts"][op["outputs"].index(t)]
            if any(v < lo or v > hi for v in y):
                raise SpecViolation(f"{op['name']}: output outside its declared format [{lo}, {hi}]")
            first = None if (tuple(s) == tuple(want_shape) and y == want) else next(
                (i for i, (p, w) in enumerate(zip(y, want)) if p != w), min(len(y), len(want)))
            report.append((op["name"], t, first))
            env[t] = (tuple(s), y)
    return report
