"""Directed and random vectors of the K3 GELU candidates."""
import numpy as np

from ..arith import ArithSpecError
from ..kernels import candidates
from .cases import Case, all_codes, random_codes, signed, with_extremes


# --- K3 GELU --------------------------------------------------------------------------------------

def _gelu_case(kernel, name, q, in_fmt, in_scale, **opts):
    k = candidates("gelu")[kernel]
    plan = k.plan(in_scale, in_fmt, **opts)
    attrs = {"family": "gelu", "kernel": kernel, "in_scale": float(in_scale)}
    attrs.update({key: v for key, v in opts.items() if key in ("rowmax", "n")})
    return Case(kernel, name, "gelu", [("in", np.asarray(q, dtype=np.int64), in_fmt)], [plan.out_fmt],
                dict(plan.consts), attrs, spec=k.spec_section)


def _gelu_common(kernel, rng, **opts):
    # each input width 2..16 at range +-8 (every GELU segment and the flat region): every code up to
    # 10 bits, random codes with extremes above
    # (the widest range of 8, 4, 2, ... that the candidate accepts at that width)
    for bits in range(2, 17):
        fmt = signed(bits)
        q = all_codes(fmt) if bits <= 10 else with_extremes(random_codes(rng, fmt, 1024), fmt)
        for rng_x in (8.0, 4.0, 2.0, 1.0, 0.5, 0.25):
            try:
                case = _gelu_case(kernel, f"in{bits}_range{rng_x:g}", q[None], fmt, rng_x / (fmt.hi + 1), **opts)
            except ArithSpecError:
                continue
            yield case
            break
    # narrow ranges (+-2, +-4) at 8 and 16 bits
    for bits, rng_x in ((8, 2.0), (8, 4.0), (16, 4.0)):
        fmt = signed(bits)
        q = all_codes(fmt) if bits <= 8 else with_extremes(random_codes(rng, fmt, 2048), fmt)
        yield _gelu_case(kernel, f"in{bits}_range{int(rng_x)}", q[None], fmt, rng_x / (fmt.hi + 1), **opts)
    # seeded random: ViT-like MLP activations (mostly negative, a positive tail)
    for i in range(2):
        fmt = signed(int(rng.choice([8, 16])))
        s = 6.0 / fmt.hi
        x = np.concatenate([rng.normal(-0.8, 1.0, 800), rng.normal(2.0, 1.5, 200)])
        q = np.clip(np.round(x / s), fmt.lo, fmt.hi).astype(np.int64)
        yield _gelu_case(kernel, f"random{i}", q.reshape(4, -1), fmt, s, **opts)


def poly_gelu_cases(rng):
    yield from _gelu_common("poly-gelu", rng)
    # GR > 0 (fine 16-bit scales: input pre-shift right) and a large GL (coarse 2-bit scale)
    fmt = signed(16)
    yield _gelu_case("poly-gelu", "gr_pos", with_extremes(random_codes(rng, fmt, 2048), fmt)[None], fmt, 2.0 ** -16)
    yield _gelu_case("poly-gelu", "gl_large", all_codes(signed(2))[None], signed(2), 4.0)
    # GR = 8 (16-bit input at S = 2^-20), where a 3-bit GR field (GR mod 8) is caught
    yield _gelu_case("poly-gelu", "gr_8", with_extremes(random_codes(rng, fmt, 2048), fmt)[None], fmt, 2.0 ** -20)
    # GL >= 32 (2-bit input at S = 2^20: GL = 32), where a 5-bit GL field (GL mod 32) is caught
    yield _gelu_case("poly-gelu", "gl_ge_32", all_codes(signed(2))[None], signed(2), 2.0 ** 20)
    # a data-fitted (a, b), as the compiler plans it
    fit = np.concatenate([rng.normal(-0.8, 1.0, 5000), rng.normal(2.0, 1.5, 500)])
    yield _gelu_case("poly-gelu", "fit_data", all_codes(signed(8))[None], signed(8), 1 / 16, sample=fit)
    # explicit (a, b) far from erf's: y (P4) needs 22 bits, and 30, the most any accepted plan
    # needs (K3.1.2 "Registers"), so a y or E register sized for the default fit is caught
    yield _gelu_case("poly-gelu", "wide_y", all_codes(signed(8))[None], signed(8), 1 / 16, a=-1.0, b=-3.0)
    yield _gelu_case("poly-gelu", "widest_y", all_codes(signed(2))[None], signed(2), 1.0, a=-1.0, b=-13.0)


def ibert_gelu_cases(rng):
    yield from _gelu_common("ibert-gelu", rng)


def ivit_gelu_cases(rng):
    yield from _gelu_common("ivit-shiftgelu", rng)
    yield from ((_rename(c, c.name + "_elementwise")) for c in _gelu_common("ivit-shiftgelu", rng, rowmax=False))
    # rows whose maximum is negative (e2 saturates, the sum clamps: I-ViT's behaviour, K3.3.4)
    fmt = signed(8)
    q = np.stack([np.arange(-128, -64), np.arange(-64, 0), np.arange(0, 64)])
    yield _gelu_case("ivit-shiftgelu", "neg_rowmax", q, fmt, 1 / 16)
    yield _gelu_case("ivit-shiftgelu", "neg_rowmax_16b", np.stack([np.arange(-30000, -29936),
                                                                   np.arange(-64, 0)]), signed(16), 8 / 32768)
    # a row max so far below zero that e2's shift (E6) leaves a 64-bit register: only E7 keeps it
    yield _gelu_case("ivit-shiftgelu", "e_sat_shift", np.stack([np.arange(-32768, -32704),
                                                                np.arange(-20064, -20000)]), signed(16), 2.0 ** -10)


def _rename(case, name):
    case.name = name
    return case
