"""Image data sets intsim reads: Fashion-MNIST (Debian's dataset-fashion-mnist), a folder of
images, or an .npz file. All loaders return uint8 images (N, C, H, W) and int64 labels (or None),
and stream in batches so that nothing holds more than one batch of float activations."""
import gzip
import os
from pathlib import Path

import numpy as np

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")


class DataError(ValueError):
    """Input data that cannot be used: missing, wrong shape, NaN/Inf, empty."""


def _fashion_mnist_dir():
    candidates = [os.environ.get("INTSIM_FASHION_MNIST")] + list(FASHION_MNIST_DIRS)
    for d in candidates:
        if d and (Path(d) / "t10k-images-idx3-ubyte.gz").exists():
            return Path(d)
    raise DataError("Fashion-MNIST not found in " + ", ".join(c for c in candidates if c)
                    + ": install it with 'apt-get install dataset-fashion-mnist' or set "
                    "INTSIM_FASHION_MNIST to the folder holding the four idx .gz files")


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte idx file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims}, file holds {data.size} bytes")
    return data.reshape(dims)


def load_fashion_mnist(split="test"):
    """(images uint8 (N, 1, 28, 28), labels int64 (N,)) for split 'train' (60k) or 'test' (10k)."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise DataError(f"Fashion-MNIST split {split!r}: use 'train' or 'test'")
    d = _fashion_mnist_dir()
    images = _read_idx(d / f"{prefix}-images-idx3-ubyte.gz")[:, None, :, :]
    labels = _read_idx(d / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return images, labels
