"""Shared fixtures: the repository scripts as modules, and generated ONNX ViTs (cached on disk by
models/make_models.py, so a model is exported once per machine, not once per test or per run)."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative_path):
    """A repository script (models/, scripts/: not packages) as a module."""
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(f"intsim_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def make_models():
    return load_script("models/make_models.py")


@pytest.fixture(scope="session")
def make_golden():
    return load_script("scripts/make_golden.py")


@pytest.fixture(scope="session")
def onnx_model(make_models):
    """Factory: onnx_model(config, form, depth=None) -> Path of a generated model with seeded random
    weights, from the cache ($INTSIM_MODEL_CACHE or ~/.cache/intsim/models). Skips the test when
    torch (or, for the dynamo form, onnxscript) is not installed."""
    pytest.importorskip("torch", reason="torch is needed to generate ONNX models")
    paths = {}

    def get(config, form, depth=None):
        if form == "dynamo":
            pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
        key = (config, form, depth)
        if key not in paths:
            paths[key] = make_models.generated_model(config, form, depth=depth)
        return paths[key]
    return get
