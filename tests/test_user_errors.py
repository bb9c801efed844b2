"""A user's mistakes end in one clear line before the work, never a traceback or a silent result:
duplicate and unmatched patterns, abbreviated options, mistyped model names, empty output paths,
damaged dumps, shifts outside the spec, hand-edited kernel plans, and plots of models whose layers
are not called blocks.N."""
import ctypes
import dataclasses
import io
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
from onnx import numpy_helper
import pytest
from tqdm import tqdm

from conftest import toy_program
from intsim import __version__, arith, errors, golden, pipeline as ip
from intsim.arith import ArithSpecError, IntFormat
from intsim.cli import commands, main
from intsim.errors import ProgramError
from intsim.experiment import plots
import intsim.golden.writer as gw
from intsim.kernels import get_kernel
from intsim.model_files import default_model
from intsim.program import Program
from intsim.progress import advance
from intsim.quantize import QuantConfig


def one_line_error(capsys, argv, code=1):
    try:
        status = main(argv)
    except SystemExit as e:             # argparse's usage errors exit 2 from inside the parser
        status = e.code
    assert status == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def no_calibration(monkeypatch):
    """Fails the test if a command starts calibrating: its error must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("calibration started before the error")
    monkeypatch.setattr(ip, "calibrate", refuse)


def test_a_pattern_given_twice_is_refused(capsys, no_calibration):
    err = one_line_error(capsys, ["run", "--layer-wbits", "qkv=8", "--layer-wbits", "qkv=4"])
    assert "'qkv' given twice (8 and 4 bits)" in err
    err = one_line_error(capsys, ["run", "--wide", "fc2.in$=12", "--wide", "fc2.in$=10"])
    assert "--wide" in err and "given twice" in err


def test_a_wide_pattern_that_matches_no_operand_is_refused(capsys, no_calibration):
    err = one_line_error(capsys, ["run", "--wide", "nomatch=12"])
    assert "wide pattern 'nomatch' matches no operand" in err and "blocks.0.attn.qkv.in" in err


def test_a_wide_pattern_on_a_tensor_that_is_no_operand_is_refused_at_compile(capsys):
    # a LayerNorm's input is named like an operand but never read as one: found by the lowering
    err = one_line_error(capsys, ["run", "--calib", "8", "--limit", "8", "--wide", r"norm1\.in$=12"])
    assert r"wide pattern 'norm1\.in$' matches no operand" in err


def test_options_are_not_abbreviated(capsys):
    err = one_line_error(capsys, ["run", "--wbit", "4"], code=2)
    assert "unrecognized arguments: --wbit" in err


def test_a_mistyped_model_name_lists_the_names(capsys, no_calibration):
    err = one_line_error(capsys, ["run", "deit-tinny"])
    assert "did you mean deit-tiny" in err and "not a model name" in err


def test_conformance_refuses_an_empty_output_path(capsys):
    err = one_line_error(capsys, ["conformance", "--out", ""], code=2)
    assert "--out: an empty path" in err


def test_coverage_names_a_damaged_file_before_any_bin(capsys, tmp_path):
    out = tmp_path / "conf"
    assert main(["conformance", "--out", str(out), "--kernels", "requantize"]) == 0
    capsys.readouterr()
    victim = sorted((out / "act").glob("*.npy"))[0]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0x40
    victim.write_bytes(bytes(data))
    err = one_line_error(capsys, ["coverage", str(out)])
    assert f"{victim} is corrupted (CRC32" in err and "refusing to measure its coverage" in err
    assert golden.load(out) is not None          # the dump itself still opens: only the file is bad


@pytest.mark.parametrize("k", [70, -63, np.array([1, 63])])
def test_round_shift_refuses_shifts_outside_the_spec(k):
    with pytest.raises(ArithSpecError, match="outside -62..62"):
        arith.round_shift(np.array([5, 6]), k)
    assert arith.round_shift(np.array([5]), 62)[0] == 0 and arith.round_shift(np.array([5]), -3)[0] == 40


@pytest.mark.parametrize("candidate", ["isqrt-layernorm", "ivit-layernorm"])
@pytest.mark.parametrize("which", ["g", "B"])
def test_a_layernorm_plan_with_a_short_vector_is_refused_by_both_paths(candidate, which):
    kernel = get_kernel("layernorm", candidate)
    gamma = np.linspace(0.5, 1.5, 16)
    plan = kernel.plan(1e-3, IntFormat(16), gamma=gamma, beta=0.1 * gamma)
    edited = dataclasses.replace(plan, consts={**plan.consts, which: plan.consts[which][:8]})
    q = np.random.default_rng(0).integers(-3000, 3000, (4, 16))
    for path in (kernel.reference, kernel.fast):
        with pytest.raises(ArithSpecError, match=rf"{which} has shape \(8,\), expected \(16,\)"):
            path([q], edited)


def test_the_block_stack_is_found_whatever_its_name():
    sqnr = {"backbone.embeddings.patch": 40.0, "backbone.encoder.layer.0.norm1": 30.0,
            "backbone.encoder.layer.1.norm1": 20.0, "backbone.encoder.layer.1.attention.output.dense": 10.0,
            "decoder.upconv3": 5.0}
    assert plots.block_stack(sqnr) == "backbone.encoder.layer"
    blocks, subs, mat = plots.sqnr_grid(sqnr)
    assert blocks == [0, 1] and subs == ["norm1", "attention.output.dense"] and mat[1, 1] == 10.0
    assert plots.block_stack({"stem": 1.0, "head": 2.0}) is None


@pytest.mark.skipif(not plots.available(), reason="no matplotlib")
def test_a_depth_plot_is_drawn_for_a_model_without_numbered_blocks(tmp_path):
    path = plots.plot_depth({"stem": 30.0, "body": 25.0, "head": np.inf}, "a model", tmp_path / "d" / "x.png")
    assert path is not None and path.stat().st_size > 5_000


# --- a saved program is what it says: formats and configuration inside the fingerprint -------------

def saved_toy(tmp_path, config):
    program = toy_program()
    program.meta["config"] = config
    path = tmp_path / "prog"
    program.save(path)
    return path, json.loads(path.with_suffix(".json").read_text())


def edit_and_load(path, doc, edit):
    edit(doc)
    path.with_suffix(".json").write_text(json.dumps(doc))
    with pytest.raises(ProgramError) as e:
        Program.load(path)
    return str(e.value)


def test_an_edited_tensor_format_in_a_saved_program_is_refused(tmp_path):
    path, doc = saved_toy(tmp_path, QuantConfig().to_dict())

    def narrow_the_output(d):
        out = next(t for t in d["tensors"] if t["name"] == d["output"])
        out["fmt"]["bits"] = 4
    assert "do not belong together" in edit_and_load(path, doc, narrow_the_output)


@pytest.mark.parametrize("edit, why", [
    (lambda c: c.update(layer_wbits={"qkv": 3}), "do not belong together"),       # valid, but not the program's
    (lambda c: c.update(wbits=11), "not a valid configuration"),
    (lambda c: c.update(colour="blue"), "unknown quantization settings"),
])
def test_an_edited_configuration_in_a_saved_program_is_refused(tmp_path, edit, why):
    path, doc = saved_toy(tmp_path, QuantConfig().to_dict())
    assert why in edit_and_load(path, doc, lambda d: edit(d["meta"]["config"]))


def test_a_batch_that_cannot_fit_in_memory_is_refused_before_the_work(capsys, monkeypatch, no_calibration):
    monkeypatch.setattr(ip, "available_memory", lambda: 1 << 30)
    per_image = ip.peak_bytes_per_image(ip.load())
    err = one_line_error(capsys, ["run", "--batch", "100000000", "--limit", "5000"])
    fits = int(0.8 * (1 << 30) // per_image)
    assert "--batch 100000000: a batch of 5000 images needs about" in err and f"use --batch {fits} or less" in err


def test_the_memory_estimate_counts_the_widest_point_of_the_graph():
    graph = ip.load()
    shapes = graph.tensor_shapes()
    widest = max(int(np.prod(s)) for s in shapes.values())
    assert widest * ip.BYTES_PER_ELEMENT < ip.peak_bytes_per_image(graph) < \
        sum(int(np.prod(s)) for s in shapes.values()) * ip.BYTES_PER_ELEMENT


def test_sigterm_during_a_golden_dump_cleans_up_like_ctrl_c(tmp_path, monkeypatch, capsys):
    save, calls = gw.np.save, []

    def save_then_terminate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:                 # mid-dump: files written into the hidden folder
            os.kill(os.getpid(), signal.SIGTERM)
        return save(*args, **kwargs)
    monkeypatch.setattr(gw.np, "save", save_then_terminate)
    out = tmp_path / "g"
    status = main(["golden", "--calib", "16", "--images", "1", "--out", str(out)])
    assert status == 128 + signal.SIGTERM and len(calls) >= 5
    assert capsys.readouterr().err.strip().endswith("intsim golden: terminated")
    assert list(tmp_path.iterdir()) == []                   # no dump, no hidden temporary
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL   # the handler is the command's only


def scaled_weights(tmp_path, factor):
    """The shipped model with every weight matrix (2-D and more) multiplied by `factor`."""
    model = onnx.load(str(default_model()))
    for init in model.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype.kind == "f" and a.ndim >= 2:
            init.CopyFrom(numpy_helper.from_array((a * factor).astype(a.dtype), init.name))
    path = tmp_path / f"weights_x{factor:g}.onnx"
    onnx.save(model, str(path))
    return path


def test_a_model_whose_weights_are_all_zero_is_named_as_such(capsys, tmp_path, no_calibration):
    err = one_line_error(capsys, ["run", str(scaled_weights(tmp_path, 0.0))])
    assert "weight tensors is all zero" in err and "Transpose" not in err


def test_weights_tiny_beside_their_bias_are_named_as_such(capsys, tmp_path):
    err = one_line_error(capsys, ["run", str(scaled_weights(tmp_path, 1e-30)), "--calib", "8", "--limit", "8"])
    assert "a bias does not fit int32" in err and "weights are tiny beside its bias" in err


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.2, 0.5, 1.0, 2.0])
def test_ctrl_c_at_any_moment_of_start_up_is_one_line(delay):
    """SIGINT while the command is still importing (numba, onnx, ...) or already running."""
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "intsim", "run", "--limit", "50"], cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, err
    assert not err.strip() or err.strip().endswith("interrupted")


def command_interrupted_inside_a_c_callback(interrupt, steps):
    """A command whose interrupt lands while C code runs a Python callback (as in numba's compiler,
    which LLVM calls back through ctypes): ctypes prints the exception as 'Exception ignored'."""
    def command(argv):
        @ctypes.CFUNCTYPE(None)
        def callback():
            raise interrupt
        callback()
        for _ in range(100):                # the command goes on unless the interrupt comes back
            steps.append(1)
            time.sleep(0.01)
        raise RuntimeError("half-saved cache entry")   # what numba raises after the lost interrupt
    return command


@pytest.mark.parametrize("interrupt, status", [(KeyboardInterrupt(), 130),
                                               (errors.Terminated("signal 15"), 143)])
def test_an_interrupt_inside_a_c_callback_still_stops_the_command(monkeypatch, capsys, interrupt, status):
    steps = []
    monkeypatch.setitem(commands.COMMANDS, "fake", (command_interrupted_inside_a_c_callback(interrupt, steps), ""))
    err = one_line_error(capsys, ["fake"], code=status)
    assert len(steps) < 50 and "Exception ignored" not in err


def test_an_error_caused_by_a_lost_interrupt_counts_as_the_interrupt(monkeypatch, capsys):
    steps = []
    monkeypatch.setitem(commands.COMMANDS, "fake", (command_interrupted_inside_a_c_callback(KeyboardInterrupt(), steps), ""))
    monkeypatch.setattr(commands._InterruptsInCallbacks, "REDELIVER_AFTER_S", 60)   # not delivered in time
    assert one_line_error(capsys, ["fake"], code=130) == "intsim fake: interrupted"


@pytest.mark.slow
def test_ctrl_c_during_a_parallel_sweep_is_one_message_not_a_traceback_per_worker(tmp_path):
    """The terminal sends SIGINT to every process of the group: the workers leave it to the parent,
    which stops them and says how to resume."""
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "intsim", "sweep", "--wbits", "8,7,6,5,4,3",
                             "--abits", "8,7", "--limit", "300", "--calib", "16", "--workers", "2",
                             "--out", str(out), "--no-plots"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "points").glob("*.json")):
        time.sleep(0.2)                 # the workers are up and have finished a point
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "rerun the same command to resume" in err


def test_the_calibration_bar_moves_inside_a_batch_and_ends_at_the_image_count(monkeypatch):
    """A batch of many images through a large graph is one long step: the bar advances per
    observed tensor (never past the batch) and ends exactly at the number of images."""
    seen = []

    class Recording:
        def __init__(self, b):
            self.b = b

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            seen.append(("end", self.b.n))

        def update(self, by):
            self.b.update(by)
            seen.append(("at", self.b.n))

        @property
        def n(self):
            return self.b.n
    monkeypatch.setattr(ip, "bar", lambda total, *a, **k: Recording(tqdm(total=total, file=io.StringIO())))
    graph = ip.load()
    images = ip.open_data("fashion-mnist").calibration(12)
    ip.calibrate(graph, images, batch=8, gram=False)
    steps = [n for kind, n in seen if kind == "at"]
    assert len(steps) > len(graph.nodes)                 # many moves, not one per batch
    assert all(a <= b for a, b in zip(steps, steps[1:])) and seen[-1] == ("end", 12)
    assert 8 in steps and steps[-1] == 12                # each batch ends exactly at its images


def test_a_bar_advances_by_fractions_but_never_past_its_mark():
    with tqdm(total=10, file=io.StringIO()) as b:
        for _ in range(3):
            advance(b, 0.4, 2)
        assert abs(b.n - 1.2) < 1e-12
        advance(b, 5, 2)
        assert b.n == 2
        advance(b, 1, 2)
        assert b.n == 2


@pytest.mark.slow
def test_the_seconds_of_start_up_are_announced_on_a_terminal_and_cleared():
    """The imports take seconds before any bar: on a terminal one line says so and is cleared when
    the command starts; piped output never carries it."""
    import pty
    repo = Path(__file__).resolve().parent.parent
    pid, fd = pty.fork()
    if pid == 0:                                    # the child: intsim --version on the terminal
        os.chdir(repo)
        os.execv(sys.executable, [sys.executable, "-m", "intsim", "--version"])
    out = b""
    try:
        while chunk := os.read(fd, 4096):
            out += chunk
    except OSError:                                 # the terminal closes with the child
        pass
    os.waitpid(pid, 0)
    text = out.decode()
    assert text.startswith("intsim: starting") and text.index("\x1b[K") < text.index(__version__), text
    piped = subprocess.run([sys.executable, "-m", "intsim", "--version"], cwd=repo, capture_output=True, text=True)
    assert piped.returncode == 0 and "starting" not in piped.stderr + piped.stdout
