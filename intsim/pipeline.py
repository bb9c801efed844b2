"""The Python API: load, calibrate, compile, run, evaluate.

    import intsim.pipeline as ip
    graph = ip.load()                                   # the shipped Fashion-MNIST ViT
    data = ip.open_data("fashion-mnist")
    observers = ip.calibrate(graph, data.calibration(256))
    program = ip.compile(graph, observers, ip.QuantConfig(wbits=4))
    report = ip.evaluate(graph, program, data.evaluation(limit=1000))
"""
from dataclasses import dataclass
import hashlib
import os
from pathlib import Path
import sys
import time

import numpy as np

from . import execute
from .arith import ArithSpecError
from .compile import compile_program
from .data import DataError, load_fashion_mnist, photo_crops
from .quantize import QuantConfig, Observer

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_NAME = "fmnist_vit_dynamo18.onnx"


def models_dir():
    return Path(os.environ.get("INTSIM_MODELS", REPO / "models"))


def default_model():
    path = models_dir() / DEFAULT_MODEL_NAME
    if not path.exists():
        raise DataError(f"the shipped model {path} is missing (set INTSIM_MODELS to the models/ folder)")
    return path


GENERATED = ("deit-tiny", "deit-small", "vit-base")


def resolve_model(model=None):
    """A model path; the names deit-tiny, deit-small, vit-base (optionally ':legacy') give the
    cached seeded random-weight graphs of models/make_models.py (generated with torch on first use)."""
    if not model:
        return default_model()
    name, _, form = str(model).partition(":")
    if name in GENERATED and not Path(model).exists():
        sys.path.insert(0, str(REPO / "models"))
        try:
            from make_models import generated_model
        except ImportError as e:
            raise DataError(f"model {model!r}: generating it needs models/make_models.py and torch ({e})") from None
        finally:
            sys.path.pop(0)
        return generated_model(name, form or "dynamo")
    return Path(model)


def load(model=None):
    """The semantic graph of an ONNX ViT (default: the shipped Fashion-MNIST model)."""
    from .onnx_import import load_onnx
    path = resolve_model(model)
    graph = load_onnx(path)
    graph.meta.setdefault("path", str(path))
    if path.exists():
        graph.meta.setdefault("sha256", hashlib.sha256(path.read_bytes()).hexdigest())
    return graph


# --- data ---------------------------------------------------------------------------------------------

@dataclass
class Dataset:
    """Images as uint8 (N, C, H, W); the model sees pixels / 255 (docs: input convention)."""
    name: str
    calib_images: np.ndarray
    eval_images: np.ndarray
    eval_labels: object = None      # int64 (N,) or None

    def calibration(self, count=256, seed=0):
        if count <= 0:
            raise DataError(f"calibration needs at least one image, got --calib {count}")
        n = len(self.calib_images)
        if n == 0:
            raise DataError(f"{self.name}: the calibration set is empty")
        idx = np.sort(np.random.default_rng(seed).permutation(n)[:count])
        return self.calib_images[idx]

    def evaluation(self, limit=None):
        n = len(self.eval_images) if limit is None else min(limit, len(self.eval_images))
        labels = None if self.eval_labels is None else self.eval_labels[:n]
        return self.eval_images[:n], labels


PHOTO_CROPS = 512


def open_data(spec="fashion-mnist"):
    """'fashion-mnist' (calibrate on train, evaluate on test), 'photos' (224x224 crops of the
    sample photos in scikit-image/scikit-learn: calibration and evaluation crops are drawn with
    different seeds), a .npz file (keys 'images', optional 'labels'; calibrates on the same
    images) or a folder of image files."""
    if spec in (None, "fashion-mnist"):
        tr, _ = load_fashion_mnist("train")
        te, te_y = load_fashion_mnist("test")
        return Dataset("fashion-mnist", tr, te, te_y)
    if spec == "photos":
        return Dataset("photos", photo_crops(PHOTO_CROPS, seed=0), photo_crops(PHOTO_CROPS, seed=1))
    p = Path(spec)
    if p.suffix == ".npz":
        return _npz_data(p)
    if p.is_dir():
        return _folder_data(p)
    raise DataError(f"--data {spec!r}: not 'fashion-mnist', an existing .npz file or a folder")


def _as_uint8_images(x, what):
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{what}: images must be (N, C, H, W) or (N, H, W), got shape {x.shape}")
    if x.dtype == np.uint8:
        return x
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise DataError(f"{what}: NaN/Inf in image {bad[0]} at {tuple(bad[1:])}")
    if x.min() < 0 or x.max() > 1:
        raise DataError(f"{what}: float images must lie in [0, 1], found [{x.min():g}, {x.max():g}]")
    return np.rint(x * 255).astype(np.uint8)


def _npz_data(path):
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    if "images" not in z.files:
        raise DataError(f"{path}: no 'images' array (found {z.files})")
    images = _as_uint8_images(z["images"], str(path))
    labels = z["labels"].astype(np.int64) if "labels" in z.files else None
    return Dataset(str(path), images, images, labels)


def _folder_data(path):
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading an image folder needs Pillow (pip install pillow)") from None
    files = sorted(f for f in path.rglob("*") if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    if not files:
        raise DataError(f"{path}: no .png/.jpg/.bmp images found")
    images = [np.asarray(Image.open(f)) for f in files]
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise DataError(f"{path}: images differ in shape ({sorted(shapes)[:3]}...); resize them first")
    arr = np.stack(images)
    arr = arr[:, None] if arr.ndim == 3 else arr.transpose(0, 3, 1, 2)
    return Dataset(str(path), arr, arr, None)


def to_model_input(images_u8):
    return images_u8.astype(np.float32) / np.float32(255.0)


def check_images_fit(graph, images):
    want = tuple(graph.input_shape)
    if tuple(images.shape[1:]) != want:
        raise DataError(f"images of shape {tuple(images.shape[1:])} (C, H, W) do not fit the model's "
                        f"input {want}")


# --- calibrate / compile ------------------------------------------------------------------------------

def calibrate(graph, images_u8, batch=64, seed=0):
    """Stream the calibration images through the float graph; per-tensor observers."""
    from .float_ref import run_float
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
        x = to_model_input(images_u8[i:i + batch])
        observe(graph.input_name, x)
        run_float(graph, x, observe=observe)
    return observers


def compile(graph, observers, config=None):  # noqa: A001 - the API's verb
    return compile_program(graph, observers, config or QuantConfig(),
                           model_path=graph.meta.get("path"), model_sha256=graph.meta.get("sha256"))


# --- run / evaluate ---------------------------------------------------------------------------------------

class Progress:
    """A one-line progress bar on stderr when it is a terminal."""

    def __init__(self, total, label, enabled=None):
        self.total, self.label = total, label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.t0 = time.perf_counter()

    def update(self, done):
        if not self.enabled:
            return
        frac = done / max(self.total, 1)
        rate = done / max(time.perf_counter() - self.t0, 1e-9)
        bar = "#" * int(30 * frac)
        sys.stderr.write(f"\r{self.label} [{bar:<30}] {done}/{self.total}  {rate:7.1f} img/s")
        if done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run_integer(program, images_u8, batch=100, progress=False):
    """Integer logits (dequantized) for uint8 images, streamed in batches."""
    out = []
    bar = Progress(len(images_u8), "integer", progress or None)
    for i in range(0, len(images_u8), batch):
        out.append(execute.run(program, to_model_input(images_u8[i:i + batch])))
        bar.update(min(i + batch, len(images_u8)))
    return np.concatenate(out)


def sqnr_db(ref, test):
    ref = np.asarray(ref, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(test, dtype=np.float64)) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * np.log10(signal / noise)


def evaluate(graph, program, images_u8, labels=None, batch=100, progress=None):
    """Float and integer top-1, their agreement, logit SQNR and integer images/s, streamed."""
    from .float_ref import run_float
    check_images_fit(graph, images_u8)
    n = len(images_u8)
    if n == 0:
        raise DataError("no images to evaluate")
    f_correct = i_correct = agree = 0
    sig = noise = 0.0
    t_int = 0.0
    execute.run(program, to_model_input(images_u8[:1]))   # untimed: numba cache load, weight copies
    bar = Progress(n, "evaluate", progress)
    for i in range(0, n, batch):
        x = to_model_input(images_u8[i:i + batch])
        f = run_float(graph, x).astype(np.float64)
        t0 = time.perf_counter()
        q = execute.run(program, x)
        t_int += time.perf_counter() - t0
        fp, ip = f.argmax(1), q.argmax(1)
        agree += int((fp == ip).sum())
        if labels is not None:
            y = labels[i:i + batch]
            f_correct += int((fp == y).sum())
            i_correct += int((ip == y).sum())
        sig += float((f ** 2).sum())
        noise += float(((f - q) ** 2).sum())
        bar.update(min(i + batch, n))
    return {
        "images": n,
        "float_top1": f_correct / n if labels is not None else None,
        "int_top1": i_correct / n if labels is not None else None,
        "agreement": agree / n,
        "logit_sqnr_db": float("inf") if noise == 0 else 10.0 * np.log10(sig / noise),
        "images_per_s": n / t_int if t_int > 0 else None,
    }


__all__ = ["QuantConfig", "load", "open_data", "calibrate", "compile", "evaluate", "run_integer",
           "sqnr_db", "ArithSpecError", "DataError"]
