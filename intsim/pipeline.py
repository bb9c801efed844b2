"""The Python API: load, calibrate, compile, run, evaluate.

    import intsim.pipeline as ip
    graph = ip.load()                                   # the shipped Fashion-MNIST ViT
    data = ip.open_data("fashion-mnist")
    observers = ip.calibrate(graph, data.calibration(256))
    program = ip.compile(graph, observers, ip.QuantConfig(wbits=4))
    report = ip.evaluate(graph, program, *data.evaluation(limit=1000))
"""
import hashlib
import time

import numpy as np

from . import metrics
from .arith import ArithSpecError
from .compile import compile_program
from .data import open_data
from .errors import DataError
from .execute import Executable
from .float_ref import run_float
from .images import check_batch, model_input
from .model_files import resolve_model
from .onnx_import import load_onnx
from .progress import bar
from .quantize import Observer, QuantConfig

__all__ = ["QuantConfig", "load", "open_data", "calibrate", "compile", "evaluate", "run_integer",
           "float_outputs", "ArithSpecError", "DataError"]


def load(model=None):
    """The semantic graph of an ONNX ViT (default: the shipped Fashion-MNIST model)."""
    path = resolve_model(model)
    graph = load_onnx(path)
    graph.meta.setdefault("path", str(path))
    if path.exists():
        graph.meta.setdefault("sha256", hashlib.sha256(path.read_bytes()).hexdigest())
    return graph


def to_model_input(images_u8):
    return model_input(images_u8)


def check_images_fit(graph, images):
    check_batch(images, graph.input_shape)


def calibrate(graph, images_u8, batch=64, seed=0):
    """Stream the calibration images through the float graph; per-tensor observers."""
    if len(images_u8) == 0:
        raise DataError("the calibration set is empty")
    check_images_fit(graph, images_u8)
    observers = {}

    def observe(name, arr):
        obs = observers.get(name)
        if obs is None:
            obs = observers[name] = Observer(name, seed)
        obs.update(arr)

    for i in range(0, len(images_u8), batch):
        run_float(graph, to_model_input(images_u8[i:i + batch]), observe=observe)
    return observers


def compile(graph, observers, config=None):  # noqa: A001 - the API's verb
    return compile_program(graph, observers, config or QuantConfig(),
                           model_path=graph.meta.get("path"), model_sha256=graph.meta.get("sha256"))


def batches(n, batch):
    if batch < 1:
        raise DataError(f"batch size must be >= 1, got {batch}")
    return range(0, n, batch)


def run_integer(program, images_u8, batch=100, progress=False, engine="auto"):
    """Integer outputs (dequantized) for uint8 images, streamed in batches."""
    exe = Executable(program, engine=engine)
    out = []
    with bar(len(images_u8), "integer", progress or None, "img") as b:
        for i in batches(len(images_u8), batch):
            out.append(exe.infer(to_model_input(images_u8[i:i + batch])))
            b.update(len(out[-1]))
    return np.concatenate(out)


def float_outputs(graph, images_u8, batch=100):
    """The float model's outputs (float64) for uint8 images, streamed in batches."""
    return np.concatenate([run_float(graph, to_model_input(images_u8[i:i + batch])).astype(np.float64)
                           for i in batches(len(images_u8), batch)])


def evaluate(graph, program, images_u8, labels=None, batch=100, progress=None, engine="auto"):
    """Float and integer top-1, their agreement, logit SQNR and integer images/s, streamed; the
    integer path's matmuls run on `engine` (execute.Executable)."""
    check_images_fit(graph, images_u8)
    n = len(images_u8)
    exe = Executable(program, engine=engine)      # untimed: weights prepared once
    exe.infer(to_model_input(images_u8[:1]))       # untimed: numba cache load
    f_correct = i_correct = agree = 0
    sqnr, t_int = metrics.Sqnr(), 0.0
    with bar(n, "evaluate", progress, "img") as b:
        for i in batches(n, batch):
            x = to_model_input(images_u8[i:i + batch])
            f = run_float(graph, x).astype(np.float64)
            t0 = time.perf_counter()
            q = exe.infer(x)
            t_int += time.perf_counter() - t0
            fp, ip = f.argmax(1), q.argmax(1)
            agree += int((fp == ip).sum())
            if labels is not None:
                y = labels[i:i + batch]
                f_correct += int((fp == y).sum())
                i_correct += int((ip == y).sum())
            sqnr.add(f, q)
            b.update(len(x))
    return {
        "images": n,
        "float_top1": f_correct / n if labels is not None else None,
        "int_top1": i_correct / n if labels is not None else None,
        "agreement": agree / n,
        "logit_sqnr_db": sqnr.db,
        "images_per_s": n / t_int if t_int > 0 else None,
    }
