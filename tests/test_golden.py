"""Golden dumps: formats, manifest, determinism, atomic writes, load, compare, CLI, committed sets."""
import hashlib
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import zlib

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from intsim import golden
from intsim.cli import main
from intsim.execute import run_program
from intsim.golden import GoldenError, TFormat
from conftest import toy_input, toy_program

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def toy(tmp_path):
    prog, q = toy_program(), toy_input()
    m = golden.dump(prog, q, tmp_path / "g", ("npy", "bin", "hex"))
    return prog, q, tmp_path / "g", m


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


# --- hex ----------------------------------------------------------------------------------------------

def _hex_plain(values, bits, pack):
    """The documented layout, written the obvious way (Python ints)."""
    digits = -(-bits * pack // 4)
    if pack == 1:
        return [f"{v & ((1 << 4 * digits) - 1):0{digits}x}" for v in values]
    vals = list(values) + [0] * (-len(values) % pack)
    return [f"{sum((v & ((1 << bits) - 1)) << (j * bits) for j, v in enumerate(vals[s:s + pack])):0{digits}x}"
            for s in range(0, len(vals), pack)]


@st.composite
def _hex_case(draw):
    signed = draw(st.booleans())
    bits = draw(st.integers(2 if signed else 1, 64))
    tf = TFormat(bits, signed)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    values = draw(st.lists(st.integers(lo, hi), min_size=0, max_size=40))
    pack = draw(st.integers(1, 9))
    return tf, values, pack


@settings(max_examples=150, deadline=None)
@given(_hex_case())
def test_hex_layout_and_round_trip(case):
    tf, values, pack = case
    arr = np.array(values, dtype=tf.dtype) if values else np.zeros(0, dtype=tf.dtype)
    text = golden.hex_text(arr, tf, pack)
    assert text.decode().splitlines() == _hex_plain(values, tf.bits, pack)
    back, n_words = golden.parse_hex(text.decode(), tf, pack)
    assert n_words == -(-len(values) // pack)
    assert back[:len(values)] == values and not any(back[len(values):])


def test_hex_examples_and_simulator_forms():
    s8, s6, u8 = TFormat(8, True), TFormat(6, True), TFormat(8, False)
    assert golden.hex_text(np.array([-1, 127, -128], np.int8), s8) == b"ff\n7f\n80\n"
    assert golden.hex_text(np.array([-1, 31], np.int8), s6) == b"ff\n1f\n"        # nibble sign-extended
    assert golden.hex_text(np.array([1, -2, 3], np.int8), s8, pack=2) == b"fe01\n0003\n"
    assert golden.hex_text(np.array([-1, 2], np.int8), TFormat(4, True), pack=2) == b"2f\n"
    # $writememh of a 6-bit memory (no nibble sign extension), 32-bit words, comments, @, _
    assert golden.parse_hex("3f\n1f\n", s6)[0] == [-1, 31]
    assert golden.parse_hex("// dump\n@0\nffffff80 0000_007f\n@2 00000001\n", s8)[0] == [-128, 127, 1]
    # a value beyond the format is read at the word's width: it shows as a difference, never wraps
    assert golden.parse_hex("00000180\n", s8)[0] == [384]
    assert golden.parse_hex("fffffe80\n", s8)[0] == [-384]
    assert golden.parse_hex("100\n", u8)[0] == [256]
    with pytest.raises(GoldenError, match="line 2.*X/Z"):
        golden.parse_hex("00\nxx\n", s8, what="t.hex")
    with pytest.raises(GoldenError, match="above 2 x 8"):
        golden.parse_hex("10000\n", s8, pack=2)
    with pytest.raises(GoldenError, match="never written"):
        golden.parse_hex("@1 00\n", s8)


def test_formats_and_pack_are_checked():
    assert golden.check_formats("hex, npy") == ("npy", "hex")
    for bad in ("csv", "", "npy,txt"):
        with pytest.raises(GoldenError, match="--format"):
            golden.check_formats(bad)
    for bad in (0, 65, 2.0, True):
        with pytest.raises(GoldenError, match="--pack"):
            golden.check_pack(bad)


# --- dump and manifest ----------------------------------------------------------------------------

def test_dump_holds_every_tensor_once_in_execution_order(toy):
    prog, q, root, m = toy
    seen = {}
    run_program(prog, q, observe=lambda op, ins, outs: seen.update(zip(op.outputs, outs)))
    assert m["schema"] == "intsim-golden" and m["schema_version"] == golden.GOLDEN_SCHEMA
    assert m["model"] == {"file": "toy.onnx", "sha256": "ab" * 32}       # no absolute path
    assert list(m["tensors"]) == [
        "act/x", "const/fc.weight", "const/fc.bias", "act/fc.acc", "const/fc.out.m", "const/fc.out.k",
        "act/fc.out"] + [f"const/sm.{c}" for c in prog.ops[2].consts] + ["act/sm"]
    assert m["input"]["tensor"] == "act/x" and m["output"] == "act/sm"
    assert [o["name"] for o in m["ops"]] == ["fc", "fc.out", "sm"]
    # an op's output is the next op's input: referenced, not stored twice
    assert m["ops"][1]["inputs"] == m["ops"][0]["outputs"] == ["act/fc.acc"]
    g = golden.load(root)
    for name, arr in seen.items():
        np.testing.assert_array_equal(g.tensors[name], arr)
    np.testing.assert_array_equal(g.input, q)
    op = g.op("sm")
    assert op.spec == "K2.1" and op.attrs["kernel"] == "bitshift-softmax"
    assert int(op.consts["K"]) == prog.ops[2].consts["K"] and op.consts["K"].shape == ()
    np.testing.assert_array_equal(op.consts["C"], prog.ops[2].consts["C"])
    np.testing.assert_array_equal(op.outputs[0], seen["sm"])


def test_manifest_entries_describe_the_bytes(toy):
    prog, q, root, m = toy
    for tid, e in m["tensors"].items():
        data = (root / e["files"]["bin"]).read_bytes()
        assert e["crc32"] == f"{zlib.crc32(data):08x}" and e["sha256"] == hashlib.sha256(data).hexdigest()
        arr = np.load(root / e["files"]["npy"])
        assert arr.dtype == np.dtype(e["dtype"]) and list(arr.shape) == e["shape"]
        assert arr.tobytes() == data
        assert e["hex"]["words"] == len((root / e["files"]["hex"]).read_text().split())
    x, w, acc, mk, k = (m["tensors"][t] for t in ("act/x", "const/fc.weight", "act/fc.acc",
                                                   "const/fc.out.m", "const/fc.out.k"))
    assert (x["bits"], x["signed"], x["scale"], x["shape"]) == (8, True, 0.02, [2, 3, 8])
    assert (w["bits"], w["narrow"], w["width_rule"], w["range"]) == (8, True, "register", [-127, 127])
    assert (acc["dtype"], acc["scale"], acc["width_rule"]) == ("int32", [0.001, 0.002, 0.003, 0.004], "declared")
    # constants: the register the spec declares (A2: m u31 for 31-bit multipliers, k s7 for
    # [-31, 62]) beside the narrowest format holding the values
    assert (mk["bits"], mk["signed"], mk["width_rule"], mk["range"]) == (31, False, "register", [1, 2**31 - 1])
    assert (k["bits"], k["signed"], k["dtype"], k["range"]) == (7, True, "int8", [-31, 62])
    assert k["minimal"] == {"bits": max(int(v).bit_length() for v in np.atleast_1d(prog.ops[1].consts["k"])),
                            "signed": False}
    assert "minimal" not in x and "range" not in x
    assert m["tensors"]["const/sm.G"]["value"] == prog.ops[2].consts["G"]
    assert m["tensors"]["act/sm"]["kind"] == "activation" and m["tensors"]["act/sm"]["op"] == 2


def test_every_format_reads_back_identically(toy, tmp_path):
    prog, q, root, _ = toy
    golden.dump(prog, q, tmp_path / "p3", ("hex",), pack=3)
    g = golden.load(root)
    for tid, e in g.manifest["tensors"].items():
        a = g.tensors[tid]
        for fmt in ("bin", "hex"):
            np.testing.assert_array_equal(golden.read_file(root / e["files"][fmt], e), a)
        np.testing.assert_array_equal(golden.load(tmp_path / "p3").tensors[tid], a)


def test_dumps_are_deterministic(toy, tmp_path):
    prog, q, root, _ = toy
    golden.dump(toy_program(), q.copy(), tmp_path / "again", ("npy", "bin", "hex"))
    assert _files(root) == _files(tmp_path / "again")


# --- output directory: refusal, force, atomicity ---------------------------------------------------

def test_existing_output_is_kept_without_force(toy):
    prog, q, root, _ = toy
    before = _files(root)
    with pytest.raises(GoldenError, match="already exists; use --force"):
        golden.dump(prog, q, root)
    assert _files(root) == before


def test_force_replaces_a_dump_but_not_other_folders(toy, tmp_path):
    prog, q, root, _ = toy
    golden.dump(prog, q[:1], root, ("npy",), force=True)
    g = golden.load(root)
    assert g.manifest["input"]["images"] == 1 and g.manifest["formats"] == ["npy"]
    assert not list(root.rglob("*.hex"))                    # nothing of the old dump is left
    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    with pytest.raises(GoldenError, match="not a golden dump"):
        golden.dump(prog, q, other, force=True)
    assert (other / "thesis.tex").read_text() == "x"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(GoldenError, match="not a directory"):
        golden.dump(prog, q, tmp_path / "afile", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "g", "precious"]   # no temporaries


def test_failure_midway_leaves_no_partial_output(toy, tmp_path, monkeypatch):
    prog, q, root, _ = toy
    before = _files(root)
    import intsim.golden.writer as gd

    class Broken:
        def __init__(self, program):
            self.program = program

        def run(self, q_input, observe=None):
            observe(self.program.ops[0], [q_input], [np.zeros((2, 3, 4), np.int32)])
            raise RuntimeError("simulated crash after the first op")

    monkeypatch.setattr(gd, "Executable", Broken)
    with pytest.raises(RuntimeError, match="simulated"):
        golden.dump(prog, q, root, force=True)
    assert _files(root) == before                            # the old dump is intact
    with pytest.raises(RuntimeError, match="simulated"):
        golden.dump(prog, q, tmp_path / "new" / "deep" / "g")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]   # no new dir, parents, temporaries


def test_exchange_fallback_without_renameat2(toy, monkeypatch):
    prog, q, root, _ = toy
    import intsim.golden.writer as gw
    monkeypatch.setattr(gw, "_renameat2", lambda *a: False)
    golden.dump(prog, q[:1], root, ("bin",), force=True)
    assert golden.load(root).manifest["formats"] == ["bin"]
    assert sorted(p.name for p in root.parent.iterdir()) == ["g"]


# --- compare -----------------------------------------------------------------------------------------

def _copy(root, dst, pattern):
    dst.mkdir(parents=True, exist_ok=True)
    for p in root.glob(pattern):
        shutil.copy(p, dst / p.name)


def test_compare_identical_and_every_format(toy):
    _, _, root, _ = toy
    r = golden.compare(root, root)
    assert r.ok and not r.missing and not r.extra and len(r.results) == 3 * r.total


def test_compare_subset_without_manifest_flat_names(toy, tmp_path):
    _, _, root, _ = toy
    other = tmp_path / "rtl"
    _copy(root / "act", other, "fc.out.hex")                # activations may sit in the root
    _copy(root / "act", other / "act", "sm.bin")
    r = golden.compare(root, other)
    assert r.ok and r.compared == ["act/fc.out", "act/sm"]
    assert "act/x" in r.missing and not r.extra
    assert not golden.compare(root, other, require_all=True).ok


def test_compare_names_the_first_divergence(toy, tmp_path):
    _, _, root, _ = toy
    other = tmp_path / "o"
    shutil.copytree(root, other)
    lines = (other / "act/fc.out.hex").read_text().split()
    lines[5] = f"{(int(lines[5], 16) + 2) & 0xff:02x}"
    (other / "act/fc.out.hex").write_text("\n".join(lines) + "\n")
    sm = np.load(other / "act/sm.npy")
    sm.ravel()[[0, 7]] ^= 1
    np.save(other / "act/sm.npy", sm)
    r = golden.compare(root, other)
    assert not r.ok
    first = r.first_divergence
    gold = np.load(root / "act/fc.out.npy")
    assert (first.tensor, first.file, first.mismatches, first.size) == ("act/fc.out", "act/fc.out.hex", 1, 24)
    assert first.first_index == (0, 1, 1) and first.golden_value == int(gold[0, 1, 1])
    assert first.diff == first.other_value - first.golden_value
    assert [(x.tensor, x.file, x.mismatches) for x in r.failed] == [
        ("act/fc.out", "act/fc.out.hex", 1), ("act/sm", "act/sm.npy", 2)]
    text = r.text(golden.op_labels(golden.read_manifest(root)))
    assert "FIRST DIVERGENCE: act/fc.out (op 1 requant 'fc.out')" in text and "+2 LSB" in text


def test_compare_reports_shape_size_dtype_x_and_extras(toy, tmp_path):
    _, _, root, _ = toy
    other = tmp_path / "o"
    (other / "act").mkdir(parents=True)
    np.save(other / "act/fc.out.npy", np.load(root / "act/fc.out.npy").reshape(2, 12))
    (other / "act/sm.bin").write_bytes(b"\x00" * 5)
    (other / "act/x.hex").write_text("zz\n" * 48)
    np.save(other / "act/fc.acc.npy", np.load(root / "act/fc.acc.npy").astype(np.int64))
    np.save(other / "act/debug.npy", np.zeros(3))
    r = golden.compare(root, other)
    msgs = {x.tensor: x.message for x in r.failed}
    assert "shape (2, 12), expected (2, 3, 4)" in msgs["act/fc.out"]
    assert "5 bytes, expected 24" in msgs["act/sm"]
    assert "X/Z" in msgs["act/x"]
    note = next(x for x in r.results if x.tensor == "act/fc.acc")
    assert note.status == "match" and "dtype int64, golden int32" in note.note
    assert r.extra == ["act/debug.npy"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not golden.compare(root, empty).ok                 # nothing compared is not a pass


def test_compare_uses_the_other_manifest_and_warns(toy, tmp_path):
    prog, q, root, _ = toy
    golden.dump(prog, q, tmp_path / "p4", ("hex",), pack=4)
    r = golden.compare(root, tmp_path / "p4")             # packing from the other manifest
    assert r.ok and not r.warnings
    prog2 = toy_program(seed=5)                               # other weights: warns, then differs
    golden.dump(prog2, q, tmp_path / "w", ("npy",))
    r = golden.compare(root, tmp_path / "w")
    assert not r.ok and any("integer program" in w for w in r.warnings)
    assert r.first_divergence.tensor == "const/fc.weight"


def test_compare_refuses_a_corrupted_golden_file_naming_the_golden_side(toy, tmp_path):
    """A golden file that no longer matches its manifest's checksums stops the comparison: the
    good other side is never blamed."""
    _, _, root, _ = toy
    gold = tmp_path / "gold"
    shutil.copytree(root, gold)
    other = tmp_path / "rtl"
    _copy(root / "act", other / "act", "sm.npy")             # a correct RTL dump, no manifest
    assert golden.compare(gold, other).ok
    sm = np.load(gold / "act/sm.npy")
    sm.ravel()[3] ^= 1
    np.save(gold / "act/sm.npy", sm)
    with pytest.raises(GoldenError, match=r"golden side: .*act/sm\.npy is corrupted \(CRC32"):
        golden.compare(gold, other)
    shutil.copy(root / "act/sm.npy", gold / "act/sm.npy")
    (gold / "act/sm.bin").write_bytes((gold / "act/sm.bin").read_bytes()[:-1])   # every file is checked
    with pytest.raises(GoldenError, match=r"golden side: .*act/sm\.bin is corrupted \(\d+ bytes"):
        golden.compare(gold, other)
    assert main(["compare", str(gold), str(other)]) == 1


def test_compare_names_a_corrupted_file_on_the_other_side(toy, tmp_path):
    """The other side's files are checked against its own manifest when it has one."""
    _, _, root, _ = toy
    other = tmp_path / "o"
    shutil.copytree(root, other)
    w = np.load(other / "const/fc.weight.npy")
    w.ravel()[0] = -w.ravel()[0] if w.ravel()[0] else 1
    np.save(other / "const/fc.weight.npy", w)
    r = golden.compare(root, other)
    bad = r.first_divergence
    assert not r.ok and (bad.tensor, bad.file, bad.status) == ("const/fc.weight", "const/fc.weight.npy", "corrupt")
    assert "other side: const/fc.weight.npy does not match its own manifest" in bad.message
    assert bad.mismatches == 1 and [x.tensor for x in r.failed] == ["const/fc.weight"]
    assert "other side" in r.text()


def test_compare_refuses_dtypes_and_formats_that_would_wrap(toy, tmp_path):
    """A uint64 .npy holding 2^64 - v for a signed golden value -v is refused, not read as -v;
    so is any dtype or declared format that cannot hold the golden format's range."""
    _, _, root, m = toy
    acc = np.load(root / "act/fc.acc.npy")                  # int32 accumulators, some negative
    assert acc.min() < 0
    other = tmp_path / "o"
    (other / "act").mkdir(parents=True)
    np.save(other / "act/fc.acc.npy", acc.astype(np.uint64))         # two's complement in 64 bits
    np.save(other / "act/fc.out.npy", np.load(root / "act/fc.out.npy").astype(np.uint8))
    np.save(other / "act/sm.npy", np.load(root / "act/sm.npy").astype(np.int32))      # u16 in int32: fine
    r = golden.compare(root, other)
    res = {x.tensor: x for x in r.results}
    assert res["act/fc.acc"].status == "refused" and "dtype uint64 cannot hold the golden s32" in res["act/fc.acc"].message
    assert res["act/fc.out"].status == "refused" and "dtype uint8 cannot hold the golden s8" in res["act/fc.out"].message
    assert res["act/sm"].status == "match" and "dtype int32" in res["act/sm"].note
    with pytest.raises(GoldenError, match="does not fit int64"):    # read, never wrapped
        golden.read_file(other / "act/fc.acc.npy", m["tensors"]["act/fc.acc"])
    # the other side's manifest declares an unsigned format for a signed tensor
    golden.dump(toy_program(), toy_input(), tmp_path / "d", ("hex",))
    doc = json.loads((tmp_path / "d/manifest.json").read_text())
    doc["tensors"]["act/fc.out"].update(signed=False)
    (tmp_path / "d/manifest.json").write_text(json.dumps(doc))
    r = golden.compare(root, tmp_path / "d")
    out = next(x for x in r.results if x.tensor == "act/fc.out")
    assert out.status == "refused" and "its manifest declares u8, which cannot hold the golden s8" in out.message


# --- CLI ---------------------------------------------------------------------------------------------

def test_compare_cli_exit_codes(toy, tmp_path, capsys):
    _, _, root, _ = toy
    assert main(["compare", str(root), str(root)]) == 0
    other = tmp_path / "o"
    shutil.copytree(root, other)
    a = np.load(other / "act/sm.npy")
    a[1, 2, 3] += 1
    np.save(other / "act/sm.npy", a)
    capsys.readouterr()
    assert main(["compare", str(root), str(other), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["first_divergence"]["tensor"] == "act/sm" and out["first_divergence"]["first_index"] == [1, 2, 3]
    assert main(["compare", str(tmp_path / "nope"), str(root)]) == 1
    assert "no manifest.json" in capsys.readouterr().err


def test_golden_cli_bad_inputs_fail_cleanly(toy, tmp_path, capsys):
    _, _, root, _ = toy
    assert main(["golden", "--out", str(root)]) == 1
    assert "already exists; use --force" in capsys.readouterr().err
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not numpy")
    out = tmp_path / "new"
    assert main(["golden", "--out", str(out), "--input", str(bad)]) == 1
    assert "not a readable .npy/.npz" in capsys.readouterr().err
    np.save(tmp_path / "shape.npy", np.zeros((2, 1, 32, 32), np.uint8))
    assert main(["golden", "--out", str(out), "--input", str(tmp_path / "shape.npy")]) == 1
    assert "the model expects 28x28" in capsys.readouterr().err
    np.save(tmp_path / "range.npy", np.full((1, 1, 28, 28), 2.0))
    assert main(["golden", "--out", str(out), "--input", str(tmp_path / "range.npy")]) == 1
    assert "[0, 1]" in capsys.readouterr().err
    assert main(["golden", "--out", str(out), "--format", "csv"]) == 1
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# --- the shipped model and the committed sets -----------------------------------------------------

@pytest.fixture(scope="module")
def regenerated(tmp_path_factory, make_golden):
    out = tmp_path_factory.mktemp("regen")
    make_golden.make(out)
    return make_golden, out


COMMITTED = ["fmnist_w8a8", "fmnist_w4a8"]


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_golden_sets_are_reproduced_bit_for_bit(name, tmp_path):
    """Any change to the integer arithmetic fails here, naming the first diverging tensor. The
    program is the one each set was made from, rebuilt from its own manifest (its fingerprint is
    checked), so the test does not depend on this machine's float BLAS (docs/golden.md, "Committed
    sets"). If a change is intended, re-run scripts/make_golden.py and commit golden/."""
    committed = REPO / "golden" / name
    assert (committed / "manifest.json").exists(), f"{committed} missing: run scripts/make_golden.py"
    old = golden.read_manifest(committed)
    program = golden.load_program(committed)
    q = golden.load(committed).input.astype(program.input.fmt.storage)
    new = golden.dump(program, q, tmp_path / name, ("npy",), 1, False, old["input"]["source"])
    r = golden.compare(committed, tmp_path / name, require_all=True)
    assert r.ok and not r.extra, r.text(golden.op_labels(old))
    for key in ("spec_version", "config", "kernels", "input", "output", "program_fingerprint", "ops"):
        assert new[key] == old[key], key
    assert {t: e["sha256"] for t, e in new["tensors"].items()} == \
        {t: e["sha256"] for t, e in old["tensors"].items()}
    assert (tmp_path / name / "manifest.json").read_bytes() == (committed / "manifest.json").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("name", COMMITTED)
def test_recalibrating_reproduces_the_committed_sets_bit_for_bit(regenerated, name):
    """Calibrating and compiling the shipped model again, on this machine, gives the committed set:
    the same program (fingerprint) and every tensor bit for bit (docs/quantization.md Q18: the
    calibration's float arithmetic gives the same bits on every machine)."""
    _, out = regenerated
    committed = REPO / "golden" / name
    r = golden.compare(committed, out / name, require_all=True)
    assert r.ok and not r.extra, r.text(golden.op_labels(golden.read_manifest(committed)))
    old, new = golden.read_manifest(committed), golden.read_manifest(out / name)
    for key in ("spec_version", "config", "kernels", "input", "output", "program_fingerprint", "ops"):
        assert new[key] == old[key], key
    assert {t: e["sha256"] for t, e in new["tensors"].items()} == \
        {t: e["sha256"] for t, e in old["tensors"].items()}


def test_load_program_refuses_a_tampered_dump(tmp_path):
    """A constant changed in a dump's files gives another fingerprint: the rebuild refuses it."""
    src = REPO / "golden" / "fmnist_w4a8"
    dst = tmp_path / "d"
    shutil.copytree(src, dst)
    w = np.load(dst / "const/blocks.0.attn.qkv.weight.npy")
    w[0, 0] = -w[0, 0] if w[0, 0] else 1
    np.save(dst / "const/blocks.0.attn.qkv.weight.npy", w)
    with pytest.raises(GoldenError, match="fingerprint"):
        golden.load_program(dst)


@pytest.mark.slow
def test_cli_in_a_second_process_matches_the_script_byte_for_byte(regenerated, tmp_path):
    """Determinism across processes, and `intsim golden` = scripts/make_golden.py."""
    mg, out = regenerated
    name = "fmnist_w4a8"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-c", "import sys; from intsim.cli import main; sys.exit(main())",
           "golden", "--out", str(tmp_path / name)] + mg.cli_args(name)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _files(tmp_path / name) == _files(out / name)


def test_the_committed_sets_table_of_the_docs_states_their_sizes():
    """docs/golden.md's "Committed sets" rows (tensors, ops, MB) are what the sets hold now."""
    doc = (REPO / "docs" / "golden.md").read_text()
    for name in ("fmnist_w8a8", "fmnist_w4a8"):
        root = REPO / "golden" / name
        manifest = json.loads((root / "manifest.json").read_text())
        row = next(line for line in doc.splitlines() if line.startswith(f"| `golden/{name}` |"))
        assert f"{len(manifest['tensors'])} tensors ({len(manifest['ops'])} ops)" in row, row
        size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        assert f"| {size / 1e6:.2f} MB" in row, (row, size)
