"""Image data sets intsim reads: Fashion-MNIST (Debian's dataset-fashion-mnist), 224x224 crops of
the sample photos inside scikit-image / scikit-learn, a folder of images, or an .npz file.

`open_data(spec)` returns a Dataset of uint8 images (N, C, H, W) with a calibration split and an
evaluation split (int64 labels or None); callers stream over them in batches."""
from dataclasses import dataclass
import functools
import gzip
import os
from pathlib import Path

import numpy as np

from .errors import DataError  # noqa: F401  (re-exported: intsim.data.DataError)
from .images import to_uint8

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
PHOTO_CROPS = 512


@dataclass
class Dataset:
    """Images as uint8 (N, C, H, W); the model sees pixels / 255 (docs: input convention)."""
    name: str
    calib_images: np.ndarray
    eval_images: np.ndarray
    eval_labels: object = None      # int64 (N,) or None

    def __post_init__(self):
        if self.eval_labels is not None:
            self.eval_labels = check_labels(self.eval_labels, len(self.eval_images), self.name)

    def calibration(self, count=256, seed=0):
        """`count` images drawn without replacement (seeded) from the calibration split."""
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


def open_data(spec="fashion-mnist", image_size=224):
    """'fashion-mnist' (calibrate on train, evaluate on test), 'photos' (image_size x image_size
    crops of the sample photos in scikit-image/scikit-learn, 224 unless the model takes another
    size: calibration and evaluation crops are drawn with different seeds), a .npz file (keys
    'images', optional 'labels'; calibrates on the same images) or a folder of image files."""
    if spec in (None, "fashion-mnist"):
        tr, _ = load_fashion_mnist("train")
        te, te_y = load_fashion_mnist("test")
        return Dataset("fashion-mnist", tr, te, te_y)
    if spec == "photos":
        return Dataset("photos", photo_crops(PHOTO_CROPS, image_size, seed=0),
                       photo_crops(PHOTO_CROPS, image_size, seed=1))
    p = Path(spec)
    if p.suffix == ".npz":
        return _npz_data(p)
    if p.is_dir():
        return _folder_data(p)
    raise DataError(f"--data {spec!r}: not 'fashion-mnist', 'photos', an existing .npz file or a folder")


def _npz_data(path):
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    if "images" not in z.files:
        raise DataError(f"{path}: no 'images' array (found {z.files})")
    images = to_uint8(z["images"], str(path))
    labels = z["labels"] if "labels" in z.files else None
    return Dataset(str(path), images, images, labels)


def check_labels(labels, n, what):
    """Class labels: one integer per image."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise DataError(f"{what}: labels must be a 1-D integer array, got dtype {labels.dtype} and "
                        f"shape {labels.shape}")
    if len(labels) != n:
        raise DataError(f"{what}: {len(labels)} labels for {n} images")
    return labels.astype(np.int64)


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
