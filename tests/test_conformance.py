"""Conformance vectors (intsim.conformance) and functional coverage (intsim.coverage)."""
import hashlib
import json
from pathlib import Path
import re
import shutil
import subprocess
import sys
import zlib

import numpy as np
import pytest

from intsim import conformance, coverage, ops
from intsim.kernels import FAMILIES, candidates
from intsim.golden import load, read_file, FORMATS

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_SETS = [ROOT / "golden" / "fmnist_w8a8", ROOT / "golden" / "fmnist_w4a8"]


@pytest.fixture(scope="module")
def conf(tmp_path_factory):
    out = tmp_path_factory.mktemp("conf") / "set"
    conformance.write_conformance(out)
    return out


def test_every_kernel_and_candidate_has_cases(conf):
    g = load(conf)
    kernels = {o.attrs["kernel"] for o in g.ops}
    assert kernels == set(conformance.KERNELS)
    for fam in FAMILIES:
        assert set(candidates(fam)) <= kernels
    for name in conformance.KERNELS:
        assert conformance.cases_of(g, name)


def test_conformance_set_hits_every_bin(conf):
    cov = coverage.coverage(conf)
    missed = {s: cov.missed(s) for s in coverage.BINS if cov.missed(s)}
    assert not missed, missed


def test_a_bin_is_hit_only_where_its_bug_changes_an_output(conf):
    """A bin with a named mis-implementation (coverage.TEETH) is credited by the cases whose output
    that mis-implementation changes, not by every case that reaches the corner: G = 62 (a 5-bit
    field leaves T = 0 either way), the I-BERT clamp at an 8-bit output (rounded away)."""
    g = load(conf)
    bins = {op.name: coverage.op_bins(op)[1] for op in g.ops}
    assert "K2.1.g_ge_32" not in bins["bitshift-softmax.scale_min_in16"]     # G = 62
    assert int(g.op("bitshift-softmax.scale_min_in16").consts["G"]) == 62
    assert "K2.1.g_ge_32" in bins["bitshift-softmax.g_ge_32"]
    assert "K2.3.e16_clamp" not in bins["ibert-softmax.e16_clamp"]           # the clamp fires, unseen
    assert "K2.3.e16_clamp" in bins["ibert-softmax.e16_clamp_out16"]
    assert "K3.1.gl_ge_32" not in bins["poly-gelu.gl_large"] and "K3.1.gl_ge_32" in bins["poly-gelu.gl_ge_32"]
    for name, tooth in coverage.TEETH.items():
        hits = [op for op in g.ops if name in bins[op.name]]
        assert hits, name
        consts = {n: (v if v.ndim else int(v)) for n, v in hits[0].consts.items()}
        assert coverage._bites(hits[0], name, consts), (name, tooth.bug)     # another output, or none


@pytest.mark.parametrize("path", ["reference", "fast"])
def test_dumped_cases_rerun_through_the_op_registry(conf, path):
    """Each case's one-op program, rebuilt from the dump alone, gives the dumped outputs on the
    reference path (which computed them) and on the numba/BLAS fast path."""
    g = load(conf)
    for o in g.ops:
        outs = conformance.run_op(conformance.program_of(g, o), o.inputs, path)
        for got, want in zip(outs, o.outputs):
            assert np.array_equal(np.asarray(got, dtype=np.int64), want), (path, o.name)


def test_constants_are_written_in_their_declared_registers(conf):
    """Every constant of every case is dumped in the register its op declares, with the allowed
    range and the narrowest format beside it, and the rebuilt programs pass ops.check_constants."""
    from intsim.ops import check_constants
    g = load(conf)
    for o in g.ops[::5]:
        check_constants(conformance.program_of(g, o))
        for c, tid in o.const_ids.items():
            e = g.tensors.entry(tid)
            lo, hi = e["range"]
            v = o.consts[c]
            assert e["width_rule"] == "register" and lo <= int(v.min()) and int(v.max()) <= hi, (o.name, c)
            assert e["minimal"]["bits"] <= e["bits"] + (not e["signed"] and e["minimal"]["signed"]), (o.name, c)


def test_files_and_checksums(conf, tmp_path):
    """Every tensor's npy, bin and hex files hold the same values; crc32/sha256 are of the .bin;
    the .npy-only set holds the same bytes."""
    out = tmp_path / "all"
    conformance.write_conformance(out, formats=("npy", "bin", "hex"),
                                  kernels=["requantize", "bitshift-softmax", "isqrt-layernorm", "data-movement"])
    m = json.loads((out / "manifest.json").read_text())
    npy_only = json.loads((conf / "manifest.json").read_text())["tensors"]
    for i, (tid, e) in enumerate(m["tensors"].items()):
        if i % 4 == 0:                                    # reading .hex back is slow: a sample
            vals = [read_file(out / e["files"][f], e) for f in FORMATS]
            assert all(np.array_equal(vals[0], v) for v in vals[1:]), tid
        data = (out / e["files"]["bin"]).read_bytes()
        assert e["crc32"] == f"{zlib.crc32(data):08x}" and e["sha256"] == hashlib.sha256(data).hexdigest()
        assert npy_only[tid]["sha256"] == e["sha256"]


def test_directed_vectors_hit_their_corner(conf):
    """A few directed cases, checked against the spec's own statements (computed, not typed in)."""
    g = load(conf)
    tie = g.op("requantize.tie_half")                      # ratio 1/2 on odd x: every element a tie
    x, y = tie.inputs[0], tie.outputs[0]
    assert np.array_equal(y, (x + 1) // 2)                 # A3: ties toward +infinity
    bt = g.op("bitshift-softmax.out_tie_out8")             # e(D) = 2^(30 - D): D = 8 gives 1/2 -> 1
    assert bt.outputs[0][0, -1] == 1 and bt.outputs[0][0, -2] == 1
    zc = g.op("bitshift-softmax.z_clamp")
    assert int(zc.consts["K"]) == 1 << 20 and int(zc.consts["G"]) == 0


def test_seed_changes_only_random_cases(tmp_path):
    a = conformance.write_conformance(tmp_path / "a", seed=0, kernels=["requantize", "bitshift-softmax"])
    b = conformance.write_conformance(tmp_path / "b", seed=0, kernels=["bitshift-softmax"])
    c = conformance.write_conformance(tmp_path / "c", seed=1, kernels=["bitshift-softmax"])
    ta, tb, tc = a["tensors"], b["tensors"], c["tensors"]
    for tid, e in tb.items():
        assert ta[tid]["sha256"] == e["sha256"]            # selecting kernels changes nothing
    changed = {tid.split(".")[1] for tid in tb if tb[tid]["sha256"] != tc[tid]["sha256"]}
    assert "z_clamp" not in changed and any(n.startswith("random") for n in changed)


def test_bad_requests(tmp_path):
    from intsim.golden import GoldenError
    with pytest.raises(GoldenError, match="unknown conformance kernel"):
        conformance.write_conformance(tmp_path / "x", kernels=["nope"])
    with pytest.raises(GoldenError, match="--format"):
        conformance.write_conformance(tmp_path / "x", formats=("csv",))
    with pytest.raises(GoldenError, match="--seed"):
        conformance.write_conformance(tmp_path / "x", seed=-1)
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "keep.txt").write_text("mine")
    with pytest.raises(GoldenError, match="not a golden dump"):
        conformance.write_conformance(tmp_path / "y", force=True)
    assert (tmp_path / "y" / "keep.txt").exists()


@pytest.mark.slow
def test_cli(tmp_path):
    out = tmp_path / "c"
    r = subprocess.run([sys.executable, "-m", "intsim", "conformance", "--out", str(out), "--format", "npy,hex",
                        "--kernels", "requantize,residual-add"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "requantize" in r.stdout and (out / "manifest.json").exists()
    r = subprocess.run([sys.executable, "-m", "intsim", "coverage", str(out), "--json"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1                              # only two kernels: coverage incomplete
    doc = json.loads(r.stdout)
    assert doc["sections"]["A6"]["missed"] == [] and doc["sections"]["K2.1"]["ops"] == 0


def test_help_lists_every_command_with_its_description_apart(capsys):
    """`intsim --help`: the longest command name still has two spaces before its description."""
    from intsim.cli.commands import COMMANDS, main
    assert main(["--help"]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  ")}
    assert set(lines) == set(COMMANDS) and {"conformance", "coverage"} <= set(lines)
    starts = {ln.index(COMMANDS[name][1]) for name, ln in lines.items()}
    assert len(starts) == 1 and starts.pop() >= 2 + max(map(len, COMMANDS)) + 2


# --- coverage -----------------------------------------------------------------------------------

def test_coverage_rejects_a_corrupt_dump(tmp_path):
    """A dumped output the instrumented reference does not reproduce is an error, not coverage."""
    src = GOLDEN_SETS[0]
    dst = tmp_path / "g"
    shutil.copytree(src, dst)
    path = dst / "act" / "blocks.0.attn.softmax.npy"
    a = np.load(path)
    a.flat[7] ^= 1
    np.save(path, a)
    with pytest.raises(coverage.CoverageError, match="blocks.0.attn.softmax"):
        coverage.coverage(dst)


# constants whose register is a parameter's (weight, bias and residual-stream formats, gamma_bits,
# out_bits, multiplier_bits): the spec states them in words
PARAMETRIC = {"weight", "bias", "cls", "pos", "g", "m", "ma", "mb", "ka", "kb", "K4:B",
              "K9:iy0", "K9:iy1", "K9:ix0", "K9:ix1", "K9:wy", "K9:wx", "K9:P"}   # K9: sized by the tables


def _section(text, sec):
    """The text of spec section `sec` (its heading to the next heading of the same or a higher level)."""
    m = re.search(rf"^(#+) {re.escape(sec)}\b.*$", text, re.M)
    assert m, f"no section {sec}"
    end = re.compile(rf"^#{{1,{len(m.group(1))}}} ", re.M).search(text, m.end())
    return text[m.end(): end.start() if end else len(text)]


def test_spec_states_every_declared_register(conf):
    """Each constant's register, as its op declares it, is written in a **Registers** paragraph of
    its spec section (or of its family's common section, or A2): `name` followed by the register."""
    text = (ROOT / "docs" / "arithmetic.md").read_text()
    g = load(conf)
    seen = set()
    for o in g.ops:
        program = conformance.program_of(g, o)
        for name, fmt in ops.program_op(o.kind).const_formats(program.ops[0], program).items():
            key = (o.spec, name, fmt.describe())
            if name in PARAMETRIC or f"{o.spec[:2]}:{name}" in PARAMETRIC or key in seen:
                continue
            seen.add(key)
            secs = [o.spec, o.spec.split(".")[0] + ".0", "A2"]
            paras = [p for sec in secs if re.search(rf"^#+ {re.escape(sec)}\b", text, re.M)
                     for p in _section(text, sec).split("\n\n") if "**Registers**" in p]
            stated = [after for p in paras for after in re.findall(rf"`{re.escape(name)}`([^`]*)", p)]
            assert any(re.search(rf"\b{fmt.describe()}\b", after) for after in stated), key
    assert len(seen) > 60


def test_bins_listed_in_the_spec():
    """Every kernel section of docs/arithmetic.md lists exactly the bins intsim.coverage computes."""
    text = (ROOT / "docs" / "arithmetic.md").read_text()
    listed = set(re.findall(r"`((?:A6|K\d+(?:\.\d)?)\.[A-Za-z_][A-Za-z_0-9]*(?:\[\d+\.\.\d+\])?)`",
                            text.split("Coverage bins", 1)[1] if "Coverage bins" in text else ""))
    listed = {b for b in listed if not re.match(r"^K\d\.\d\.\d", b)}
    wanted = {b for names in coverage.BINS.values() for b in names}
    assert wanted <= listed, sorted(wanted - listed)
    assert listed <= wanted, sorted(listed - wanted)


def test_coverage_tables_are_current(conf):
    """docs/conformance.md's coverage tables are what `scripts/coverage_report.py` computes now."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import coverage_report
    finally:
        sys.path.pop(0)
    doc = (ROOT / "docs" / "conformance.md").read_text()
    for name, table in coverage_report.tables(GOLDEN_SETS, conf).items():
        assert table in doc, f"docs/conformance.md: the {name} table is stale; run scripts/coverage_report.py"


def test_committed_golden_sets_leave_known_bins_empty():
    """The model vectors miss the corners the conformance set exists for: ties, k < 0, z >= 64, output saturation."""
    for path in GOLDEN_SETS:
        cov = coverage.coverage(path)
        missed = {b for s in coverage.BINS for b in cov.missed(s)}
        for b in ("A6.tie_pos", "A6.tie_neg", "A6.k_neg", "A6.k_62", "K2.1.z_ge_64", "K2.1.out_sat",
                  "K4.2.p_pos", "K4.2.const_row"):
            assert b in missed, (path.name, b)
        assert "K2.1.z_ge_31" not in missed            # z reaches 31..63 but never 64 (z <= 40)
