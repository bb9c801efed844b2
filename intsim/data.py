"""Image data sets intsim reads: Fashion-MNIST (Debian's dataset-fashion-mnist), a folder of
images, or an .npz file. All loaders return uint8 images (N, C, H, W) and int64 labels (or None),
and stream in batches so that nothing holds more than one batch of float activations."""
import functools
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


@functools.lru_cache(maxsize=1)
def load_sample_photos():
    """The CC0 / public-domain sample photos inside scikit-image and scikit-learn, as uint8 RGB
    (H, W, 3) arrays. Needs either package (the 'test' extra installs both)."""
    photos = []
    try:
        from skimage import data as skd
        for name in ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right",
                     "immunohistochemistry", "retina", "hubble_deep_field"):
            try:
                img = getattr(skd, name)()
            except Exception:  # noqa: BLE001 - a photo missing from this version is skipped
                continue
            if img.ndim == 3 and img.shape[2] == 3:
                photos.append(np.ascontiguousarray(img, dtype=np.uint8))
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images
        photos += [np.ascontiguousarray(im, dtype=np.uint8) for im in load_sample_images().images]
    except ImportError:
        pass
    if not photos:
        raise DataError("no sample photos: install scikit-image or scikit-learn (pip install -e .[test])")
    return tuple(photos)


def photo_crops(count, size=224, seed=0):
    """`count` seeded random size x size crops (N, 3, size, size) uint8 from the sample photos, at
    full resolution and at half resolution (2x2 mean), so crops show whole objects as well as detail."""
    photos = load_sample_photos()
    pyramid = []
    for p in photos:
        pyramid.append(p)
        h, w = (p.shape[0] // 2) * 2, (p.shape[1] // 2) * 2
        half = p[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
        pyramid.append(np.rint(half).astype(np.uint8))
    pyramid = [p for p in pyramid if p.shape[0] >= size and p.shape[1] >= size]
    rng = np.random.default_rng(seed)
    out = np.empty((count, 3, size, size), dtype=np.uint8)
    for i in range(count):
        p = pyramid[rng.integers(len(pyramid))]
        y = rng.integers(0, p.shape[0] - size + 1)
        x = rng.integers(0, p.shape[1] - size + 1)
        out[i] = p[y:y + size, x:x + size].transpose(2, 0, 1)
    return out
