"""Shared fixtures: the repository scripts as modules, and generated ONNX ViTs (cached on disk by
models/make_models.py, so a model is exported once per machine, not once per test or per run)."""
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from intsim.arith import IntFormat
from intsim.kernels import get_kernel
from intsim.program import Op, Program, TensorInfo, new_meta

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


# --- a small synthetic integer program: linear -> per-channel requant -> bitshift softmax ---------

def toy_program(seed=0):
    """A three-op program with every kind of constant (weight, bias, per-channel (m, k), a kernel
    plan), built by hand: for tests of the program, the executor and golden dumps."""
    rng = np.random.default_rng(seed)
    s8, s32 = IntFormat(8), IntFormat(32)
    wfmt = IntFormat(8, narrow=True)
    sm = get_kernel("softmax", "bitshift-softmax").plan(0.05, s8, out_bits=8)
    tensors = {
        "x": TensorInfo("x", s8, 0.02, (3, 8)),
        "fc.acc": TensorInfo("fc.acc", s32, [0.001, 0.002, 0.003, 0.004], (3, 4)),
        "fc.out": TensorInfo("fc.out", s8, 0.05, (3, 4)),
        "sm": TensorInfo("sm", sm.out_fmt, sm.out_scale, (3, 4)),
    }
    ops = [
        Op("linear", "fc", ["x"], ["fc.acc"],
           {"weight": rng.integers(-127, 128, (4, 8)).astype(np.int8),
            "bias": rng.integers(-500, 500, 4).astype(np.int64)},
           {"weight_fmt": wfmt.to_dict()}, "K1"),
        Op("requant", "fc.out", ["fc.acc"], ["fc.out"],
           {"m": np.array([1 << 30] * 4, dtype=np.int64), "k": np.array([32, 33, 34, 35], dtype=np.int64)},
           {}, "A6"),
        Op("softmax", "sm", ["fc.out"], ["sm"], sm.consts,
           {"family": "softmax", "kernel": "bitshift-softmax"}, "K2.1"),
    ]
    return Program(ops, tensors, "x", "sm", new_meta({"wbits": 8}, "/somewhere/toy.onnx", "ab" * 32))


def toy_input(n=2, seed=1):
    return np.random.default_rng(seed).integers(-128, 128, (n, 3, 8)).astype(np.int8)


# --- the fuzzing tier's seed: printed in the session header, fixed with INTSIM_FUZZ_SEED -----------

FUZZ_SEED = int(os.environ.get("INTSIM_FUZZ_SEED") or int.from_bytes(os.urandom(4), "little"))


def pytest_report_header(config):
    return f"intsim fuzz seed: {FUZZ_SEED} (reproduce: INTSIM_FUZZ_SEED={FUZZ_SEED})"
