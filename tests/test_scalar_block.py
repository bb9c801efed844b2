"""The spec, checked independently: tests/scalar_block.py (Python ints and loops, written from
docs/arithmetic.md) must reproduce a block of the committed golden tensors exactly, and the
program's constants must follow the spec's plan-time rules (A2, K2.1.1-2, K3.1.2, K4.2.1)."""
import math
from pathlib import Path

import pytest

import scalar_block as sb
from intsim import golden

REPO = Path(__file__).resolve().parent.parent
SETS = {"w4a8": REPO / "golden" / "fmnist_w4a8", "w8a8": REPO / "golden" / "fmnist_w8a8"}


def _open(name):
    path = SETS[name]
    if not (path / "manifest.json").exists():
        pytest.fail(f"{path} is missing: run python scripts/make_golden.py")
    return golden.load(path)


@pytest.fixture(scope="module")
def w4a8():
    return _open("w4a8")


def _as_lists(gs, image=None):
    """golden(id) -> (shape, flat list of ints), optionally restricted to one image of the batch
    (activations carry the batch axis first; constants do not)."""
    def get(tid):
        a = gs.tensors[tid]
        if image is not None and gs.tensors.entry(tid)["kind"] != "constant":
            a = a[image:image + 1]
        return tuple(a.shape), [int(v) for v in a.ravel().tolist()]
    return get


def _block_ops(gs, block):
    ops = []
    for o in gs.ops:
        if not o.name.startswith(f"blocks.{block}."):
            continue
        consts = {}
        for cname, tid in o.const_ids.items():
            a = gs.tensors[tid]
            consts[cname] = int(a) if a.ndim == 0 else [int(v) for v in a.ravel().tolist()]
            consts[cname + "_shape"] = tuple(a.shape)
        fmts = [sb.fmt_range(e["bits"], e["signed"], e["narrow"])
                for e in (gs.tensors.entry(t) for t in o.output_ids)]
        ops.append({"kind": o.kind, "name": o.name, "attrs": o.attrs, "inputs": o.input_ids,
                    "outputs": o.output_ids, "consts": consts, "out_fmts": fmts})
    assert ops, f"no ops of block {block}"
    return ops


def _assert_block(gs, block, image=None):
    get = _as_lists(gs, image)
    report = sb.run_block(_block_ops(gs, block), get)
    kinds = {o.name: o.kind for o in gs.ops}
    assert {kinds[name] for name, _, _ in report} >= {"layernorm", "requant", "linear", "qkv_split",
                                                      "attn_scores", "softmax", "attn_context",
                                                      "add", "gelu"}
    for name, tid, first in report:
        assert first is None, (f"scalar spec implementation differs from the golden set at op "
                               f"{name!r}, tensor {tid}, flat index {first}")


def test_block0_reproduces_golden(w4a8):
    _assert_block(w4a8, 0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["w4a8", "w8a8"])
def test_every_block_reproduces_golden(name):
    gs = _open(name)
    blocks = sorted({int(o.name.split(".")[1]) for o in gs.ops if o.name.startswith("blocks.")})
    for image in range(gs.manifest["input"]["images"]):
        for b in blocks:
            _assert_block(gs, b, image)


def test_runner_detects_a_single_changed_value(w4a8):
    """Not a tautology: one LSB changed in a golden output is reported at that op and index."""
    get = _as_lists(w4a8)
    target = "act/blocks.0.attn.softmax"

    def tampered(tid):
        shape, flat = get(tid)
        if tid == target:
            flat = list(flat)
            flat[123] += 1
        return shape, flat

    report = sb.run_block(_block_ops(w4a8, 0), tampered)
    bad = [(name, tid, first) for name, tid, first in report if first is not None]
    assert bad[0] == ("blocks.0.attn.softmax", target, 123)


# --- plan-time constants against the spec's rules ----------------------------------------------------

def _scale(gs, tid):
    return gs.tensors.entry(tid)["scale"]


def test_requant_and_add_multipliers_follow_A2(w4a8):
    bits = w4a8.manifest["config"]["multiplier_bits"]
    checked = 0
    for o in w4a8.ops:
        if o.kind == "requant":
            s_in, s_out = _scale(w4a8, o.input_ids[0]), _scale(w4a8, o.output_ids[0])
            n = max(len(s) if isinstance(s, list) else 1 for s in (s_in, s_out))
            s_in = s_in if isinstance(s_in, list) else [s_in] * n
            s_out = s_out if isinstance(s_out, list) else [s_out] * n
            want = [sb.dyadic(a / b, bits) for a, b in zip(s_in, s_out)]
            m, k = o.consts["m"], o.consts["k"]
            got = ([(int(m), int(k))] * n if m.ndim == 0 else list(zip(m.tolist(), k.tolist())))
            assert got == want, o.name
            checked += 1
        elif o.kind == "add":
            s_y = _scale(w4a8, o.output_ids[0])
            c = o.consts
            assert (int(c["ma"]), int(c["ka"])) == sb.dyadic(_scale(w4a8, o.input_ids[0]) / s_y, bits)
            assert (int(c["mb"]), int(c["kb"])) == sb.dyadic(_scale(w4a8, o.input_ids[1]) / s_y, bits)
    assert checked > 20


def test_softmax_constants_follow_K2_1(w4a8):
    ops = [o for o in w4a8.ops if o.kind == "softmax"]
    assert ops and all(o.attrs["kernel"] == "bitshift-softmax" for o in ops)
    for o in ops:
        K, G, C, DS = sb.bitshift_constants(_scale(w4a8, o.input_ids[0]))
        c = {k: v.tolist() for k, v in o.consts.items()}
        assert (c["K"], c["G"], c["C"], c["DS"]) == (K, G, C, DS), o.name
        assert (c["F"], c["Q"], c["SEG_BITS"], c["N"], c["Z_MAX"]) == (20, 30, 4, 62, 31)
        assert _scale(w4a8, o.output_ids[0]) == 2.0 ** -c["out_bits"]


def test_poly_gelu_constants_follow_K3_1_2(w4a8):
    """K3.1.2 in float64, in the order the text writes it (Sw^4 read as Python's pow)."""
    NB, S2, F = 14, 4, 15
    ops = [o for o in w4a8.ops if o.kind == "gelu"]
    assert ops and all(o.attrs["kernel"] == "poly-gelu" for o in ops)
    for o in ops:
        S = _scale(w4a8, o.input_ids[0])
        a, b = o.attrs["info"]["a"], o.attrs["info"]["b"]
        rho = abs(b) * math.sqrt(2.0) / S
        G = NB - math.frexp(rho)[1]
        B = math.floor(rho * 2.0 ** G + 0.5)
        Sw = (S / math.sqrt(2.0)) * 2.0 ** -G
        mA, kA = sb.dyadic(abs(a) * Sw ** 4 * 2.0 ** (2 * S2 + F), 14)
        c = {k: int(v) for k, v in o.consts.items()}
        assert (c["GL"], c["GR"], c["B"], c["S2"], c["mA"], c["kA"], c["TWO_ONE"]) == \
            (max(G, 0), max(-G, 0), B, S2, mA, kA, 1 << (F + 1)), o.name
        entry = w4a8.tensors.entry(o.input_ids[0])
        lo, hi = sb.fmt_range(entry["bits"], entry["signed"], entry["narrow"])
        y_max = ((((B * B) >> S2) ** 2) * mA) >> kA
        M = max(hi << (F + 1), -lo * y_max, hi * max(y_max - (1 << (F + 1)), 0))
        assert w4a8.tensors.entry(o.output_ids[0])["bits"] == max(M.bit_length() + 1, 2)
        assert _scale(w4a8, o.output_ids[0]) == S * 2.0 ** -(F + 1)


def test_isqrt_layernorm_constants_follow_K4_2_1(w4a8):
    ops = [o for o in w4a8.ops if o.kind == "layernorm"]
    assert ops and all(o.attrs["kernel"] == "isqrt-layernorm" for o in ops)
    for o in ops:
        e = w4a8.tensors.entry(o.input_ids[0])
        lo, hi = sb.fmt_range(e["bits"], e["signed"], e["narrow"])
        c = {k: (v.tolist()) for k, v in o.consts.items()}
        want = sb.isqrt_layernorm_constants(c["C"], lo, hi, e["scale"], o.attrs["info"]["eps"])
        assert (c["p"], c["u"], c["E"]) == want, o.name
        assert (c["in_lo"], c["in_hi"], c["F"]) == (lo, hi, 16)
        assert o.attrs["info"]["n_max"] == math.isqrt((c["C"] - 1) * 4 ** c["F"]) + 4


# --- the scalar implementation against the spec's own worked examples ----------------------------

def test_scalar_ops_reproduce_the_spec_worked_examples():
    # A6 (core.md): int8 outputs
    assert sb.requantize([1000, -1000], (2,), 1717986918, 34, -128, 127) == [100, -100]
    assert sb.requantize([3, -3, 400], (3,), 1 << 30, 31, -128, 127) == [2, -1, 127]
    # K5: 100 + round_shift(-7 * 2^30, 31) = 97
    assert sb.residual_add([100], [-7], 1 << 30, 30, 1 << 30, 31, -32768, 32767) == [97]
    # K2.1.7
    K, G, C, DS = sb.bitshift_constants(0.125)
    assert (K, G) == (189096, 0)
    assert sb.softmax_bitshift([12, 7, 0, -20], (4,), {"out_bits": 8, "K": K, "G": G, "C": C,
                                                      "DS": DS}) == [144, 77, 32, 3]
    # K3.1.6
    consts = {"GL": 8, "GR": 0, "B": 15750, "S2": 4, "mA": 10031, "kA": 46, "TWO_ONE": 65536}
    assert sb.gelu_poly([20, -20], consts) == [1168540, -142180]
    # K4.2.6 (plan constants, then a row and a constant row)
    assert sb.isqrt_layernorm_constants(4, -32768, 32767, 2.0 ** -8, 1e-6) == (0, 14, 281474977)
    ln = {"C": 4, "p": 0, "u": 14, "E": 281474977, "F": 16, "h": 2, "g": [16384, 8192, 32767, -16384],
          "B": [0, 67106816, -268427264, 134213632]}
    assert sb.layernorm_isqrt([300, -100, 50, 6, 7, 7, 7, 7], (2, 4), ln) == [
        431665152, -82880512, -319642085, 240304128, 0, 67106816, -268427264, 134213632]
    # A2 examples
    assert sb.dyadic(0.1) == (1717986918, 34)
    assert sb.dyadic(1 - 2 ** -40, 8) == (128, 7)
    assert sb.dyadic(1000.0, 8) == (250, -2)
    assert sb.dyadic(1e-12) == (4611686, 62)


@pytest.mark.slow
def test_block0_of_a_grouped_weight_dump_reproduces_it(tmp_path):
    """K1.9 checked independently: a W4A8 golden dump with groups of 16 (docs/quantization.md Q13),
    its block 0 recomputed by the scalar implementation (each group's partial sum times its
    multiplier)."""
    import subprocess
    import sys
    out = tmp_path / "grouped"
    run = subprocess.run([sys.executable, "-m", "intsim", "golden", "--wbits", "4", "--weight-group", "16",
                          "--calib", "16", "--images", "1", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    gs = golden.load(out)
    assert any(o.attrs.get("weight_group") == 16 for o in gs.ops if o.name.startswith("blocks.0."))
    _assert_block(gs, 0)
