"""The one image validator: every path that takes images (data sets, golden --input, the float
interpreter, the executor) checks them here, so one rule gives one message.

Images are (N, C, H, W). Pixels arrive as uint8 (the model sees pixels / 255) or as floats in
[0, 1]; the float interpreter also accepts any finite real input of the model's shape."""
import hashlib

import numpy as np

from .errors import DataError


def _first_bad(x):
    bad = np.argwhere(~np.isfinite(x))[0]
    return f"image {bad[0]} at {tuple(int(i) for i in bad[1:])}"


def check_batch(x, chw, what="images"):
    """x as an (N, C, H, W) array of a real numeric dtype matching the model's (C, H, W)."""
    x = np.asarray(x)
    shape_txt = f"(N, {', '.join(map(str, chw))})"
    if x.dtype.kind not in "fiub":
        raise DataError(f"{what} must be a real numeric array, got dtype {x.dtype}")
    if x.ndim != 4:
        raise DataError(f"{what} must have 4 dimensions {shape_txt}, got shape {x.shape}")
    if x.shape[0] == 0:
        raise DataError(f"{what}: empty batch (N = 0)")
    if x.shape[1] != chw[0]:
        raise DataError(f"{what} have {x.shape[1]} channels, the model expects {chw[0]} "
                        f"(shape {shape_txt}, got {x.shape})")
    if tuple(x.shape[2:]) != tuple(chw[1:]):
        raise DataError(f"{what} are {x.shape[2]}x{x.shape[3]}, the model expects "
                        f"{chw[1]}x{chw[2]} (shape {shape_txt}, got {x.shape})")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"{what}: NaN/Inf in {_first_bad(x)}")
    return x


def pixels(x, what="images"):
    """(N, C, H, W) or (N, H, W) pixels: uint8 as they are, floats in [0, 1] (finite) as given.
    Returns an (N, C, H, W) array (uint8 or float64)."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[0] == 0:
        raise DataError(f"{what}: images must be (N, C, H, W) or (N, H, W) with N >= 1, "
                        f"got shape {x.shape}")
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind != "f":
        raise DataError(f"{what}: images must be uint8 pixels or floats in [0, 1], got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise DataError(f"{what}: NaN/Inf in {_first_bad(x)}")
    if x.min() < 0 or x.max() > 1:
        raise DataError(f"{what}: float images must lie in [0, 1], found [{x.min():g}, {x.max():g}]")
    return x


def to_uint8(x, what="images"):
    """pixels() rounded to uint8 (floats in [0, 1] scaled by 255, ties to even)."""
    x = pixels(x, what)
    return x if x.dtype == np.uint8 else np.rint(x * 255).astype(np.uint8)


def model_input(x, what="images"):
    """What the model sees: uint8 pixels / 255 in float32; floats in [0, 1] unchanged (float64)."""
    x = pixels(x, what)
    return x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x


def images_sha256(x, what="images"):
    """The identity of uint8 pixels: SHA-256 of the ASCII header 'uint8[D0,D1,...]' (the shape)
    followed by the pixel bytes in C order. The shape is part of it, so the same bytes cut into
    other images are another identity."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise DataError(f"{what}: an image identity is taken of uint8 pixels, got dtype {x.dtype}")
    h = hashlib.sha256(f"uint8[{','.join(str(d) for d in x.shape)}]".encode("ascii"))
    h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()
