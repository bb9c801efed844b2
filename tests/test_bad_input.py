"""Nothing silently wrong: each bad input, fault or abuse ends in the correct result or one clear
error (nothing silently wrong; the cases are the ones that were measured to be)."""
import errno
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from conftest import toy_input, toy_program
from intsim import golden
from intsim import pipeline as ip
from intsim.arith import ArithSpecError, IntFormat, IntOverflowError
from intsim.cli import main
from intsim.errors import CompileError, DataError, IntsimWarning, ProgramError
from intsim.execute import Executable
from intsim.experiment import store, tasks
from intsim.graph import Graph, Node
from intsim.kernels.add import residual_add, residual_add_ref
from intsim.kernels.matmul import matmul, matmul_ref
from intsim.kernels.requantize import requantize, requantize_ref
from intsim.program import Program
from intsim.quantize import QuantConfig

REPO = Path(__file__).resolve().parent.parent
BOTH = pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])


# --- fast kernels validate what the reference validates (spec A2, A4) ---------------------------------

@BOTH
@pytest.mark.parametrize("m,k,match", [(1 << 30, -33, "shift k = -33"), (1 << 30, 70, "shift k = 70"),
                                       (-5, 3, "multiplier m = -5"), (1 << 31, 3, "multiplier m")])
def test_requantize_refuses_multipliers_outside_a2(fast, m, k, match):
    fn = requantize if fast else requantize_ref
    with pytest.raises(ArithSpecError, match=match):
        fn(np.array([1], np.int64), m, k, IntFormat(32))


@BOTH
def test_requantize_refuses_uint64_beyond_int64(fast):
    fn = requantize if fast else requantize_ref
    with pytest.raises(IntOverflowError, match="18446744073709551615"):
        fn(np.array([2 ** 64 - 1], np.uint64), 1 << 30, 30, IntFormat(16))
    np.testing.assert_array_equal(fn(np.array([6], np.uint64), 1 << 30, 31, IntFormat(16)), [3])


@BOTH
def test_residual_add_refuses_shifts_outside_a2(fast):
    fn = residual_add if fast else residual_add_ref
    with pytest.raises(ArithSpecError, match="shift k = 70"):
        fn(np.array([1]), np.array([1]), 1 << 30, 70, 1 << 30, 30, IntFormat(16))
    with pytest.raises(ArithSpecError, match="integer input"):
        fn(np.array([1.0]), np.array([1]), 1 << 30, 30, 1 << 30, 30, IntFormat(16))


def test_matmul_refuses_float_operands_and_weights_outside_their_format():
    a, b = np.array([[1.5, 2.0]]), np.array([[3], [4]], np.int8)
    with pytest.raises(ArithSpecError, match="integer input"):
        matmul(a, b, IntFormat(8), IntFormat(8))
    with pytest.raises(ArithSpecError, match="integer input"):
        matmul_ref(a, b)
    p = toy_program()
    p.ops[0].consts["weight"] = p.ops[0].consts["weight"].astype(np.int32) << 14   # scaled by 2^14
    with pytest.raises(ProgramError, match="op 0 'fc'.*outside s8n"):
        Executable(p)


# --- a saved program: JSON integers only, one unit with its .npz -----------------------------------

@pytest.mark.parametrize("value", [31.7, "31", True, None])
def test_program_constants_must_be_json_integers(tmp_path, value):
    toy_program().save(tmp_path / "p")
    doc = json.loads((tmp_path / "p.json").read_text())
    doc["ops"][2]["consts"]["G"] = value
    (tmp_path / "p.json").write_text(json.dumps(doc))
    with pytest.raises(ProgramError, match=r"op 2 'sm' constant 'G'.*not a JSON integer"):
        Program.load(tmp_path / "p")


def test_program_missing_key_and_mismatched_pair(tmp_path):
    toy_program().save(tmp_path / "p")
    doc = json.loads((tmp_path / "p.json").read_text())
    del doc["ops"][0]["kind"]
    (tmp_path / "q.json").write_text(json.dumps(doc))
    (tmp_path / "q.npz").write_bytes((tmp_path / "p.npz").read_bytes())
    with pytest.raises(ProgramError, match="malformed program.*kind"):
        Program.load(tmp_path / "q")
    toy_program(seed=4).save(tmp_path / "r")
    (tmp_path / "p.npz").write_bytes((tmp_path / "r.npz").read_bytes())  # the other half of another
    with pytest.raises(ProgramError, match="do not belong together"):
        Program.load(tmp_path / "p")


def test_saving_a_program_onto_a_folder_leaves_nothing(tmp_path):
    (tmp_path / "p.json").mkdir()
    with pytest.raises(ProgramError, match="folder is in the way"):
        toy_program().save(tmp_path / "p")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]


# --- degenerate calibration: exact where possible, a warning where information is lost -----------

def _linear_graph(weight, bias):
    nodes = [Node("PatchEmbed", "embed", ["image"], ["embed"],
                  {"weight": np.ones((4, 1, 2, 2), np.float32), "bias": np.zeros(4, np.float32)},
                  {"patch": 2}),
             Node("Linear", "head", ["embed"], ["head"], {"weight": weight, "bias": bias})]
    return Graph("image", (1, 2, 2), nodes, "head").validate()


def test_zero_weight_channels_keep_their_bias_exactly():
    bias = np.array([0.1234567, -3.75e-3, 7.0], np.float32)
    weight = np.zeros((3, 4), np.float32)
    weight[2, 1] = 0.5                                        # one live channel
    g = _linear_graph(weight, bias)
    images = np.random.default_rng(0).integers(0, 256, (8, 1, 2, 2)).astype(np.uint8)
    p = ip.compile(g, ip.calibrate(g, images), QuantConfig())
    seen = {}
    Executable(p).infer(ip.to_model_input(images), observe=lambda op, i, o: seen.setdefault(op.name, o[0]))
    acc = p.tensors["head.acc"]
    np.testing.assert_array_equal(seen["head"][..., :2] * np.asarray(acc.scale)[:2], np.broadcast_to(
        bias[:2].astype(np.float64), seen["head"][..., :2].shape))


def test_zero_range_calibration_warns_naming_the_tensor():
    g = _linear_graph(np.ones((3, 4), np.float32), np.zeros(3, np.float32))
    with pytest.warns(IntsimWarning, match="tensor 'image' is 0 on every calibration value"):
        ip.compile(g, ip.calibrate(g, np.zeros((4, 1, 2, 2), np.uint8)), QuantConfig())


def test_a_huge_weight_is_named_not_the_layer_after_it():
    g = _linear_graph(np.ones((3, 4), np.float32), np.zeros(3, np.float32))
    g.nodes.append(Node("Relu", "relu", ["head"], ["relu"]))
    g.nodes.append(Node("Linear", "out", ["relu"], ["out"], {"weight": np.ones((2, 3), np.float32)}))
    g.output_name = "out"
    g.node("head").params["weight"][0, 0] = 1e30
    images = np.random.default_rng(0).integers(1, 256, (8, 1, 2, 2)).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        obs = ip.calibrate(g, images)
    with pytest.raises(CompileError, match="from relu 'relu' <- linear 'head' with weights up to 1e\\+30"):
        ip.compile(g, obs, QuantConfig())


# --- arguments are checked before any model is loaded ---------------------------------------------

@pytest.mark.parametrize("argv,match", [
    (["run", "--limit", "-5"], "--limit: must be >= 1, got -5"),
    (["run", "--batch", "-1"], "--batch: must be >= 1, got -1"),
    (["run", "--batch", "0"], "--batch: must be >= 1, got 0"),
    (["sweep", "--limit", "-5", "--out", "x"], "--limit: must be >= 1"),
    (["compare", "a", "b", "--max-rows", "-1"], "--max-rows: must be >= 0"),
    (["golden", "--images", "0", "--out", "x"], "--images: must be >= 1"),
])
def test_bad_counts_are_one_line_usage_errors(argv, match, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and match in err and len(err.strip().splitlines()) == 1


def test_settings_and_outputs_fail_before_the_model_loads(tmp_path, capsys):
    t0 = time.perf_counter()
    assert main(["run", str(tmp_path / "missing.onnx"), "--wbits", "9"]) == 1
    assert "wbits must be an integer in [2, 8]" in capsys.readouterr().err
    assert main(["run", "--save-program", str(tmp_path), "--limit", "1"]) == 1
    assert "is a directory" in capsys.readouterr().err
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "f").write_text("")
    assert main(["select", "--out", str(ro / "f" / "plan.json")]) == 1
    assert "not a folder" in capsys.readouterr().err
    assert time.perf_counter() - t0 < 10          # no model was loaded or calibrated


def test_calibration_count_is_the_real_one(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", images=np.random.default_rng(0).integers(0, 256, (8, 28, 28)).astype(np.uint8))
    assert main(["run", "--data", str(tmp_path / "d.npz"), "--calib", "1000", "--limit", "4"]) == 0
    cap = capsys.readouterr()
    assert "calibrated on 8" in cap.out and "has 8 calibration images" in cap.err


@pytest.mark.parametrize("labels,match", [(np.arange(3), "3 labels for 8 images"),
                                          (np.array(["a"] * 8), "1-D integer array")])
def test_bad_labels(tmp_path, labels, match):
    np.savez(tmp_path / "d.npz", images=np.zeros((8, 28, 28), np.uint8), labels=labels)
    with pytest.raises(DataError, match=match):
        ip.open_data(str(tmp_path / "d.npz"))


# --- interrupts, full disks and leftovers -----------------------------------------------------------

def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    from intsim.cli import commands as cli_main

    def interrupted(argv):
        raise KeyboardInterrupt
    monkeypatch.setitem(cli_main.COMMANDS, "run", (interrupted, ""))
    assert cli_main.main(["run"]) == 130
    assert capsys.readouterr().err.strip() == "intsim run: interrupted"


def test_a_full_disk_is_said_and_leaves_nothing(tmp_path, monkeypatch):
    import intsim.golden.writer as gw

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(gw.np, "save", full)
    with pytest.raises(golden.GoldenError, match="the disk is full"):
        golden.dump(toy_program(), toy_input(), tmp_path / "g")
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_of_killed_dumps_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".g.tmp-{dead}-abc"
    alive = tmp_path / f".g.tmp-{os.getpid()}-abc"
    for d in (stale, alive):
        d.mkdir()
        (d / "x.npy").write_bytes(b"")
    golden.dump(toy_program(), toy_input(), tmp_path / "g")
    assert not stale.exists() and alive.exists()


@pytest.mark.slow
def test_workers_die_with_their_parent(tmp_path):
    """kill -9 of the process running tasks takes its local workers with it."""
    script = (f"import sys, time; sys.path.insert(0, {str(REPO / 'tests')!r})\n"
              "from intsim.experiment.tasks import run_tasks\n"
              "from test_bad_input import sleeper\n"
              f"run_tasks(sleeper, {str(tmp_path)!r}, [1, 2], workers=2)\n")
    parent = subprocess.Popen([sys.executable, "-c", script])
    t0 = time.time()
    while len(list(tmp_path.glob("*.pid"))) < 2 and time.time() - t0 < 120:
        time.sleep(0.1)
    pids = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
    assert len(pids) == 2
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    t0 = time.time()
    while any(_alive(p) for p in pids) and time.time() - t0 < 10:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


def sleeper(folder, item):
    Path(folder, f"{os.getpid()}.pid").write_text(str(os.getpid()))
    time.sleep(60)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_an_edited_point_file_is_run_again(tmp_path):
    st = store.SweepStore(tmp_path, {"images": 1, "base": {}})
    point = {"wbits": 4}
    st.save(point, {"int_top1": 0.5, "config": QuantConfig(wbits=4).to_dict()})
    assert st.done(point)
    rec = json.loads(st.path(point).read_text())
    rec["row"]["int_top1"] = 0.99
    st.path(point).write_text(json.dumps(rec))
    with pytest.warns(IntsimWarning, match="edited"):
        assert not st.done(point)
    assert st.records() == []
    assert tasks.default_workers() >= 1


# --- models: a NaN weight is named; a model of zero weights gives its head bias ---------------------

def test_a_nan_weight_names_its_initializer():
    import onnx
    from onnx import numpy_helper
    from intsim.onnx_import import OnnxImportError, load_onnx
    m = onnx.load(str(REPO / "models" / "fmnist_vit_dynamo18.onnx"))
    t = next(t for t in m.graph.initializer if t.name == "pos_embed")
    v = numpy_helper.to_array(t).copy()
    v.flat[3] = np.nan
    t.CopyFrom(numpy_helper.from_array(v, t.name))
    with pytest.raises(OnnxImportError, match=r"initializer 'pos_embed' holds 1 NaN value\(s\), the first "
                                              r"at index \(0, 0, 3\)"):
        load_onnx(m)


@pytest.mark.slow
def test_a_model_of_zero_weights_gives_its_head_bias(tmp_path):
    """Every weight, bias and norm parameter zero but the head's: every activation is 0, so the
    logits are the head's bias; integer-only they come out within half an output LSB."""
    import onnx
    from onnx import numpy_helper
    from intsim.float_ref import run_float
    m = onnx.load(str(REPO / "models" / "fmnist_vit_dynamo18.onnx"))
    for t in m.graph.initializer:
        v = numpy_helper.to_array(t)
        if v.dtype.kind == "f" and v.size > 1 and "head" not in t.name:
            t.CopyFrom(numpy_helper.from_array(np.zeros_like(v), t.name))
    onnx.save(m, str(tmp_path / "zero.onnx"))
    g = ip.load(tmp_path / "zero.onnx")
    images = np.random.default_rng(0).integers(0, 256, (8, 1, 28, 28)).astype(np.uint8)
    with pytest.warns(IntsimWarning):
        p = ip.compile(g, ip.calibrate(g, images), QuantConfig())
    x = ip.to_model_input(images)
    f, q = run_float(g, x), Executable(p).infer(x)
    assert np.abs(f - q).max() <= p.output.scale / 2 * (1 + 1e-9)
