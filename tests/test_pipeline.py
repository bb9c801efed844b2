"""End to end on the shipped Fashion-MNIST model: calibrate, compile, save/load, run integer-only."""
import json
import subprocess
import sys

import numpy as np
import pytest

import intsim.pipeline as ip
from intsim import execute
from intsim.arith import ArithSpecError
from intsim.data import Dataset, DataError
from intsim.program import Program
from intsim.quantize import Observer, QuantConfig


@pytest.fixture(scope="module")
def graph():
    return ip.load()


@pytest.fixture(scope="module")
def data():
    return ip.open_data("fashion-mnist")


@pytest.fixture(scope="module")
def observers(graph, data):
    return ip.calibrate(graph, data.calibration(48))


@pytest.fixture(scope="module")
def program(graph, observers):
    return ip.compile(graph, observers, QuantConfig())


def test_w8a8_tracks_float(graph, program, data):
    images, labels = data.evaluation(200)
    r = ip.evaluate(graph, program, images, labels)
    assert r["images"] == 200
    assert r["agreement"] >= 0.9, r
    assert r["logit_sqnr_db"] >= 15, r
    assert abs(r["float_top1"] - r["int_top1"]) <= 0.05, r


def test_reference_path_is_bit_identical(program, data):
    images, _ = data.evaluation(3)
    q = execute.quantize_input(program, ip.to_model_input(images))
    fast = execute.run_program(program, q, path="fast")
    ref = execute.run_program(program, q, path="reference")
    assert fast.dtype == ref.dtype and np.array_equal(fast, ref)


def test_program_is_integer_only(program, data, tmp_path):
    # every constant is an integer, every op output an integer (the executor checks each one)
    for op in program.ops:
        for name, v in op.consts.items():
            assert isinstance(v, int) or np.asarray(v).dtype.kind in "iu", (op.name, name)
    seen = []
    images, _ = data.evaluation(2)
    q = execute.quantize_input(program, ip.to_model_input(images))
    execute.run_program(program, q, observe=lambda op, ins, outs: seen.extend(o.dtype.kind for o in outs))
    assert seen and set(seen) <= {"i", "u"}
    # and a float sneaking into the integer path is refused, naming the op
    bad = Program.load(program.save(tmp_path / "p"))
    bad.ops[3].consts = dict(bad.ops[3].consts)
    victim = next(op for op in bad.ops if op.kind == "requant")
    victim.consts = {"m": 0.5, "k": 0}
    with pytest.raises((execute.ExecutionError, ArithSpecError, TypeError)):
        execute.run_program(bad, q)


def test_save_load_roundtrip(program, data, tmp_path):
    path = program.save(tmp_path / "prog")
    again = Program.load(path)
    assert again.fingerprint() == program.fingerprint()
    images, _ = data.evaluation(4)
    x = ip.to_model_input(images)
    assert np.array_equal(execute.run(again, x), execute.run(program, x))
    doc = json.loads(path.read_text())
    assert doc["meta"]["spec_version"] and doc["meta"]["config"]["wbits"] == 8


def test_per_layer_override(graph, observers):
    cfg = QuantConfig(overrides={"blocks.0.mlp.act": "ibert-gelu", "blocks.1.attn.softmax": "ivit-shiftmax"})
    prog = ip.compile(graph, observers, cfg)
    assert prog.op("blocks.0.mlp.act").attrs["kernel"] == "ibert-gelu"
    assert prog.op("blocks.1.mlp.act").attrs["kernel"] == "poly-gelu"
    assert prog.op("blocks.1.attn.softmax").attrs["kernel"] == "ivit-shiftmax"
    with pytest.raises(ValueError, match="blocks.0.mlp.act.*nope"):
        ip.compile(graph, observers, QuantConfig(overrides={"blocks.0.mlp.act": "nope"}))


def test_w4a8_compiles_and_runs(graph, data):
    """The documented W4 path: X^T X calibrated, so the default weight_round (auto) rounds by GPTQ."""
    prog = ip.compile(graph, ip.calibrate(graph, data.calibration(48), gram=True), QuantConfig(wbits=4))
    assert prog.op("blocks.0.attn.qkv").consts["weight"].max() <= 7
    images, labels = data.evaluation(100)
    r = ip.evaluate(graph, prog, images, labels)
    assert r["agreement"] >= 0.8, r


# --- bad input ------------------------------------------------------------------------------------------

def test_bad_images(graph, program):
    with pytest.raises(DataError, match=r"3 channels, the model expects 1"):
        ip.check_images_fit(graph, np.zeros((2, 3, 28, 28), np.uint8))
    x = np.zeros((1, 1, 28, 28), np.float32)
    x[0, 0, 3, 4] = np.nan
    with pytest.raises(ArithSpecError, match=r"NaN/Inf.*\(0, 0, 3, 4\)"):
        execute.run(program, x)
    with pytest.raises(ArithSpecError, match="expects"):
        execute.run_program(program, np.zeros((1, 28, 28), np.uint8))


def test_empty_calibration(graph):
    with pytest.raises(DataError, match="empty"):
        ip.calibrate(graph, np.zeros((0, 1, 28, 28), np.uint8))
    with pytest.raises(DataError, match="at least one"):
        Dataset("x", np.zeros((5, 1, 28, 28), np.uint8), None).calibration(0)


def test_constant_activation_has_defined_scale():
    from intsim.arith import IntFormat
    obs = Observer("t")
    obs.update(np.zeros(100))
    assert obs.scale(IntFormat(8)) == 1.0
    obs2 = Observer("u")
    obs2.update(np.full(10, 3.0))
    assert obs2.scale(IntFormat(8), "mse") == pytest.approx(3.0 / 127, rel=0.02)
    with pytest.raises(ArithSpecError, match="never observed"):
        Observer("v").scale(IntFormat(8))
    with pytest.raises(ArithSpecError, match="NaN"):
        Observer("w").update(np.array([1.0, np.inf]))


def test_npz_data_errors(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, pictures=np.zeros((2, 1, 28, 28), np.uint8))
    with pytest.raises(DataError, match="no 'images'"):
        ip.open_data(str(p))
    np.savez(p, images=np.full((2, 28, 28), 2.0))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        ip.open_data(str(p))
    with pytest.raises(DataError, match="not 'fashion-mnist'"):
        ip.open_data(str(tmp_path / "missing"))


@pytest.mark.slow
def test_cli_run_json(tmp_path):
    out = subprocess.run([sys.executable, "-m", "intsim", "run", "--limit", "40", "--calib", "16", "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    for key in ("float_top1", "int_top1", "agreement", "images", "images_per_s"):
        assert key in r
    assert r["images"] == 40


@pytest.mark.slow
def test_cli_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not an onnx file")
    out = subprocess.run([sys.executable, "-m", "intsim", "run", str(bad), "--limit", "5"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert "bad.onnx" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_cli_run_with_grouped_weights_reports_them(tmp_path):
    """`intsim run --wbits 4 --weight-group G` (docs/quantization.md Q13): the text report's config
    line names the rounding and the groups, the JSON config carries them, and a bad group size is
    one clear line."""
    args = [sys.executable, "-m", "intsim", "run", "--limit", "16", "--calib", "16", "--wbits", "4"]
    out = subprocess.run(args + ["--weight-group", "16", "--group-scale-bits", "6"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "weights gptq, groups of 16 (u6 multipliers)" in out.stdout
    out = subprocess.run(args + ["--weight-group", "-3"], capture_output=True, text=True, timeout=600)
    assert out.returncode != 0 and "weight_group" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_cli_run_with_layer_weight_widths_reports_them_and_their_cost():
    """`intsim run --layer-wbits REGEX=BITS` (docs/quantization.md Q14) and `--qk-wbits BITS` (Q17):
    the config line names the widened layers, the JSON report carries the patterns and a higher
    matmul cost than uniform W4, and a malformed or out-of-range item is one clear line."""
    import json
    args = [sys.executable, "-m", "intsim", "run", "--limit", "16", "--calib", "16", "--wbits", "4"]
    out = subprocess.run(args + ["--layer-wbits", r"attn\.qkv$=8"], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert r"weights gptq, /attn\.qkv$/ at 8 bits" in out.stdout and "matmul cost" in out.stdout
    mixed, flat = (json.loads(subprocess.run(args + extra + ["--json"], capture_output=True, text=True,
                                             timeout=600).stdout)
                   for extra in (["--layer-wbits", r"attn\.qkv$=8"], []))
    assert mixed["config"]["layer_wbits"] == {r"attn\.qkv$": 8} and flat["config"]["layer_wbits"] == {}
    assert mixed["matmul_gbitops"] > flat["matmul_gbitops"]
    for item, match in (("qkv", "use REGEX=BITS"), ("qkv=9", "layer_wbits 'qkv'")):
        out = subprocess.run(args + ["--layer-wbits", item], capture_output=True, text=True, timeout=600)
        assert out.returncode != 0 and match in out.stderr and "Traceback" not in out.stderr, out.stderr
    # --qk-wbits (Q17): the layers found to make queries and keys, named on the config line
    out = subprocess.run(args + ["--qk-wbits", "8"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "weights gptq, query / key layers at 8 bits" in out.stdout, out.stderr
    out = subprocess.run(args + ["--qk-wbits", "9"], capture_output=True, text=True, timeout=600)
    assert out.returncode != 0 and "qk_wbits" in out.stderr and "Traceback" not in out.stderr, out.stderr
