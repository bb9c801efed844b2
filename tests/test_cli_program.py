"""`intsim run --program P` and `intsim golden --program P`: the program `intsim run --save-program P`
wrote, used as it is (no calibration, no compile). Golden vectors from it equal those of the same
build; a model other than the program's, options that would change the program and a missing
program are refused with one line, before any work."""
import contextlib
import io
import json
from pathlib import Path
import shutil
import subprocess
import sys

import numpy as np
import pytest

from intsim import golden
from intsim.cli import main
from intsim.data import open_data
from intsim.golden.formats import PROVENANCE
from intsim.images import images_sha256
from intsim.model_files import default_model
from intsim.program import Program
from intsim.version import library_versions

BUILD = ["--calib", "16"]
OTHER_MODEL = Path(default_model()).with_name("fmnist_vit_legacy13.onnx")    # same task, other file


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def _run_json(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["run", *argv, "--json"]) == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(program path, the build's run report, a golden dump of the same build on 2 images)."""
    root = tmp_path_factory.mktemp("program")
    report = _run_json(BUILD + ["--limit", "8", "--save-program", str(root / "sub" / "prog")])
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["golden", *BUILD, "--images", "2", "--out", str(root / "built")]) == 0
    return root / "sub" / "prog", report, root / "built"


def test_the_saved_program_records_its_calibration_and_versions(saved):
    prog, _, _ = saved
    meta = Program.load(prog).meta
    calib = open_data("fashion-mnist").calibration(16)
    assert meta["calibration"] == {"data": "fashion-mnist", "images": 16, "sha256": images_sha256(calib)}
    assert meta["versions"] == library_versions()
    manifest = golden.read_manifest(saved[2])
    assert {k: manifest[k] for k in PROVENANCE} == {k: meta[k] for k in PROVENANCE}


@pytest.mark.slow
def test_golden_from_a_saved_program_equals_golden_from_the_build(saved, tmp_path, capsys):
    prog, _, built = saved
    assert main(["golden", "--program", str(prog), "--images", "2", "--out", str(tmp_path / "g")]) == 0
    r = golden.compare(built, tmp_path / "g", require_all=True)
    assert r.ok and not r.warnings and not r.missing and not r.extra
    assert _files(tmp_path / "g") == _files(built)                  # manifest included
    # the model is not needed, but one given on the command line is checked (and passes)
    assert main(["golden", str(default_model()), "--program", f"{prog}.json", "--images", "2",
                 "--out", str(tmp_path / "g2")]) == 0
    assert _files(tmp_path / "g2") == _files(built)


def test_golden_from_a_saved_program_takes_an_input_file(saved, tmp_path, capsys):
    prog, _, built = saved
    images, _ = open_data("fashion-mnist").evaluation(2)
    np.save(tmp_path / "x.npy", images)
    assert main(["golden", "--program", str(prog), "--input", str(tmp_path / "x.npy"),
                 "--out", str(tmp_path / "g")]) == 0
    r = golden.compare(built, tmp_path / "g", require_all=True)
    assert r.ok and not r.warnings and not r.missing
    assert golden.read_manifest(tmp_path / "g")["input"]["source"]["file"] == "x.npy"


def test_run_from_a_saved_program_gives_the_build_s_report(saved):
    prog, built, _ = saved
    report = _run_json(["--program", str(prog), "--limit", "8"])
    assert report["program"] == str(prog) and report["calibration_images"] == 16
    for key in ("images", "float_top1", "int_top1", "agreement", "logit_sqnr_db", "config", "data",
                "matmul_gbitops"):
        assert report[key] == built[key], key
    again = _run_json([str(default_model()), "--program", str(prog), "--limit", "8"])
    assert again["agreement"] == built["agreement"]


def test_a_model_other_than_the_program_s_is_refused(saved, tmp_path, capsys):
    prog, _, _ = saved
    for argv in (["run", str(OTHER_MODEL), "--program", str(prog)],
                 ["golden", str(OTHER_MODEL), "--program", str(prog), "--out", str(tmp_path / "g")]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "is not the model the program was built from (fmnist_vit_dynamo18.onnx, SHA-256" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("command", ["run", "golden"])
def test_options_that_would_change_the_program_are_refused(command, tmp_path, capsys):
    """Before anything is read: the program named here does not even exist."""
    base = [command, "--program", str(tmp_path / "nope")] + (["--out", str(tmp_path / "g")]
                                                             if command == "golden" else [])
    for extra, named in ((["--wbits", "4", "--calib", "8"], "--calib, --wbits would change it"),
                         (["--wbits", "8"], "--wbits would change it"),        # the default, but given
                         (["--softmax", "ivit-shiftmax"], "--softmax"),
                         (["--override", "blocks.0.mlp.act=ibert-gelu"], "--override"),
                         (["--wide", r"fc2\.in$=12"], "--wide"),
                         (["--no-bias-correction"], "--bias-correction"),
                         (["--plan", "plan.json"], "--plan")):
        with pytest.raises(SystemExit) as e:
            main(base + extra)
        err = capsys.readouterr().err
        assert e.value.code == 2 and named in err and "--program uses a saved program as it is" in err
    assert not (tmp_path / "g").exists()


def test_a_missing_program_is_one_clear_line(tmp_path, capsys):
    assert main(["run", "--program", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nope'}.json and {tmp_path / 'nope'}.npz not found" in err
    assert "intsim run --save-program" in err and "Traceback" not in err
    (tmp_path / "half.json").write_text("{}")
    assert main(["golden", "--program", str(tmp_path / "half"), "--out", str(tmp_path / "g")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'half'}.npz not found" in err and "half.json not" not in err


def _edited_copy(prog, dst, **meta):
    """A copy of the saved program with meta entries replaced (None: removed); the fingerprint
    leaves meta out, so the copy loads."""
    for suffix in (".json", ".npz"):
        shutil.copy(f"{prog}{suffix}", f"{dst}{suffix}")
    doc = json.loads(Path(f"{dst}.json").read_text())
    for key, value in meta.items():
        if value is None:
            del doc["meta"][key]
        else:
            doc["meta"][key] = value
    Path(f"{dst}.json").write_text(json.dumps(doc))
    return dst


@pytest.mark.slow
def test_an_older_program_without_provenance_still_runs_and_dumps(saved, tmp_path, capsys):
    prog, _, built = saved
    old = _edited_copy(prog, tmp_path / "old", calibration=None, versions=None)
    assert main(["run", "--program", str(old), "--limit", "4"]) == 0
    assert "calibration not recorded" in capsys.readouterr().out
    assert main(["golden", "--program", str(old), "--images", "2", "--out", str(tmp_path / "g")]) == 0
    assert not set(PROVENANCE) & set(golden.read_manifest(tmp_path / "g"))
    assert golden.compare(built, tmp_path / "g", require_all=True).ok


def test_the_recorded_model_is_found_or_asked_for(saved, tmp_path, capsys):
    prog, _, _ = saved
    gone = _edited_copy(prog, tmp_path / "gone", model=str(tmp_path / "elsewhere" / "model.onnx"))
    assert main(["run", "--program", str(gone), "--limit", "4"]) == 1
    err = capsys.readouterr().err
    assert "model.onnx not found (the program's record); give the model on the command line" in err
    assert main(["run", str(default_model()), "--program", str(gone), "--limit", "4"]) == 0
    # the shipped model recorded at another checkout's path is this installation's shipped model
    moved = _edited_copy(prog, tmp_path / "moved",
                         model=str(tmp_path / "checkout" / Path(default_model()).name))
    assert main(["run", "--program", str(moved), "--limit", "4"]) == 0


@pytest.mark.slow
def test_cli_golden_from_a_saved_program_in_a_second_process(saved, tmp_path):
    prog, _, built = saved
    cmd = [sys.executable, "-m", "intsim"]
    out = subprocess.run(cmd + ["golden", "--program", str(prog), "--images", "2", "--format", "npy,hex",
                                "--out", str(tmp_path / "g")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(cmd + ["compare", str(built), str(tmp_path / "g"), "--require-all"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run(cmd + ["run", "--program", str(prog), "--gelu", "ibert-gelu"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 2 and "--gelu would change it" in out.stderr and "Traceback" not in out.stderr
