"""Image data sets intsim reads: Fashion-MNIST (Debian's dataset-fashion-mnist), 224x224 crops of
the sample photos inside scikit-image / scikit-learn, a folder of images, or an .npz file.

`open_data(spec)` returns a Dataset of uint8 images (N, C, H, W) with a calibration split and an
evaluation split (int64 labels or None); callers stream over them in batches."""
from dataclasses import dataclass
import functools
import gzip
import importlib.metadata
import os
from pathlib import Path

import numpy as np

from .errors import DataError  # noqa: F401  (re-exported: intsim.data.DataError)
from .images import images_sha256, to_uint8

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
    crops of the pinned sample photos in scikit-image/scikit-learn, SAMPLE_PHOTOS, 224 unless the
    model takes another size: calibration and evaluation crops are drawn with different seeds), a
    .npz file (keys 'images', optional 'labels'; calibrates on the same images) or a folder of
    image files."""
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


def calibration_record(data_name, images):
    """What a program was calibrated on, for its meta and golden manifests: the data set's name (a
    file or folder by its base name, so records stay portable), the number of images and the
    images_sha256 of the exact uint8 images."""
    return {"data": Path(str(data_name)).name, "images": int(len(images)),
            "sha256": images_sha256(images, "calibration images")}


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


@dataclass(frozen=True)
class SamplePhoto:
    """One photo of the `photos` data set: where it comes from and its pinned pixels."""
    name: str           # scikit-image: the skimage.data function; scikit-learn: the sample image
    package: str        # "scikit-image" or "scikit-learn"
    sha256: str         # images_sha256 of the decoded (H, W, 3) uint8 pixels

    @property
    def source(self):
        if self.package == "scikit-image":
            return f"skimage.data.{self.name}()"
        return f"sklearn.datasets.load_sample_image({self.name!r})"


# The `photos` data set, in this order (the crops depend on it). Every photo is a file inside the
# package (nothing is downloaded) and is decoded by the package's own loader: scikit-image reads
# PNG / JPEG through imageio and Pillow, scikit-learn JPEG through Pillow. The pixels are pinned,
# so a decoder that gives other pixels is refused instead of silently giving other crops.
SAMPLE_PHOTOS = (
    SamplePhoto("astronaut", "scikit-image",
                "fab7e0f9cf68ec63ec7dc4575b988f06b447b017688c850b40ef98823829477e"),
    SamplePhoto("chelsea", "scikit-image",
                "211746e91d9b48a05a518d4d12d120f72fc81de63909469ed8dd6f115abe8576"),
    SamplePhoto("coffee", "scikit-image",
                "9f7822e60e74b567dfa695c2fffbb6ccc2fc3db99a6c499a1becd1d44a44c48d"),
    SamplePhoto("rocket", "scikit-image",
                "e0bc2fb64e466bc31ceec2940f9bdb61b6d8782fa9c2a237d6512d71d68aa40a"),
    SamplePhoto("immunohistochemistry", "scikit-image",
                "7bb8f1aaa1d1500d3e1d29a1bca4bfedf55a74a4379ac243a0493d3152773bd5"),
    SamplePhoto("retina", "scikit-image",
                "3513fb43b7d16585eff2206c8998b5e2c80aefec3eef7a0c7eba9bbe54cf2ddc"),
    SamplePhoto("hubble_deep_field", "scikit-image",
                "a5540c82f432a4bffc63c93247d770f6136a6f5a69d3aa7018006f07749fa56e"),
    SamplePhoto("china.jpg", "scikit-learn",
                "8bfefc1ae31a0fe9438828c5b3ae0b8218fa828ee30665e3eae8cf398c969123"),
    SamplePhoto("flower.jpg", "scikit-learn",
                "ae741b8105ebe0714de119cb5314e8bfcc3f86608a98ddc796281548c9205d87"),
)
PHOTOS_PINNED_WITH = {"scikit-image": "0.26.0", "scikit-learn": "1.9.1", "imageio": "2.38.2",
                      "Pillow": "13.0.0"}    # the versions that decoded the pinned pixels
_DECODERS = {"scikit-image": ("imageio", "Pillow"), "scikit-learn": ("Pillow",)}


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _photo_error(photo, problem):
    """One line: the photo, its package and decoders here, the problem and what to do."""
    here = ", ".join(f"{d} {_version(d)}" for d in (photo.package,) + _DECODERS[photo.package])
    pinned = " ".join(f"{d}=={v}" for d, v in PHOTOS_PINNED_WITH.items())
    return DataError(f"photos: sample photo {photo.name!r} ({photo.source}; here {here}) {problem}; "
                     f"the photos data set is pinned to the pixels these versions decode: install "
                     f"them (pip install {pinned}) or use --data with your own .npz or image folder")


def _decode_photo(photo):
    """The photo as its package decodes it, or a DataError saying why it cannot be had."""
    try:
        if photo.package == "scikit-image":
            from skimage import data as skd
            loader = getattr(skd, photo.name, None)
            if loader is None:
                raise _photo_error(photo, "does not exist in this scikit-image")
            return loader()
        from sklearn.datasets import load_sample_image
        return load_sample_image(photo.name)
    except ImportError as e:
        raise _photo_error(photo, f"cannot be loaded: {photo.package} is not installed or does not "
                                  f"import ({e})") from None
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - a decoder fails in its own ways, all the same here
        raise _photo_error(photo, f"could not be decoded ({type(e).__name__}: {e})") from None


def load_photo(photo):
    """One pinned photo as uint8 (H, W, 3), its pixels checked against the pinned SHA-256."""
    img = np.asarray(_decode_photo(photo))
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise _photo_error(photo, f"decodes to a {img.dtype} array of shape {img.shape}, not uint8 "
                                  f"(H, W, 3)")
    digest = images_sha256(img)
    if digest != photo.sha256:
        raise _photo_error(photo, f"decodes to other pixels than the pinned ones (shape {img.shape}, "
                                  f"SHA-256 {digest[:16]}..., pinned {photo.sha256[:16]}...)")
    return np.ascontiguousarray(img)


@functools.lru_cache(maxsize=1)
def load_sample_photos():
    """The `photos` data set: the CC0 / public-domain sample photos of SAMPLE_PHOTOS, shipped inside
    scikit-image and scikit-learn (the 'test' extra installs both), as uint8 RGB (H, W, 3) arrays
    in that order. A photo that is missing or decodes to other pixels is a DataError naming it."""
    return tuple(load_photo(photo) for photo in SAMPLE_PHOTOS)


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
