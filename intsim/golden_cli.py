"""The `intsim golden` and `intsim compare` commands (docs/golden.md)."""
import argparse
import hashlib
import io
import json
from pathlib import Path

import numpy as np

from . import golden
from .cli import command, add_model_args, add_quant_args, build_program
from .data import DataError


def read_images(path):
    """An .npy/.npz of images, (N, C, H, W) or (N, H, W), uint8 pixels or floats in [0, 1], as the
    float model input (uint8 / 255 in float32, as the pipeline feeds the model) and a source record."""
    p = Path(path)
    try:
        raw = p.read_bytes()
        x = np.load(io.BytesIO(raw), allow_pickle=False)
        if isinstance(x, np.lib.npyio.NpzFile):
            with x as z:
                key = "images" if "images" in z.files else (z.files[0] if len(z.files) == 1 else None)
                if key is None:
                    raise DataError(f"--input {path}: an .npz needs an 'images' array (found {z.files})")
                x = z[key]
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise DataError(f"--input {path}: not a readable .npy/.npz file ({e})") from None
    source = {"file": p.name, "sha256": hashlib.sha256(raw).hexdigest()}
    return _model_input(x, f"--input {path}"), source


def _model_input(x, what):
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[0] == 0:
        raise DataError(f"{what}: images must be (N, C, H, W) or (N, H, W) with N >= 1, got shape {x.shape}")
    if x.dtype == np.uint8:
        from .pipeline import to_model_input
        return to_model_input(x)
    if x.dtype.kind != "f":
        raise DataError(f"{what}: images must be uint8 pixels or floats in [0, 1], got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise DataError(f"{what}: NaN/Inf in the images")
    if x.min() < 0 or x.max() > 1:
        raise DataError(f"{what}: float images must lie in [0, 1], found [{x.min():g}, {x.max():g}]")
    return x


@command("golden", "dump golden vectors (every op's integer tensors and constants) for RTL")
def cmd_golden(argv):
    p = argparse.ArgumentParser(
        prog="intsim golden", description="Quantize a model, run it integer-only on a few images and "
        "dump every op's integer inputs, outputs and constants with a manifest (docs/golden.md).")
    add_model_args(p)
    add_quant_args(p)
    p.add_argument("--out", required=True, help="output directory (must not exist unless --force)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--images", type=int, default=None,
                     help="dump the first N evaluation images of --data (default 1)")
    src.add_argument("--input", default=None,
                     help=".npy/.npz of images (N,C,H,W) uint8 or float in [0,1] ('images' key in an .npz)")
    p.add_argument("--format", default="npy", help="comma list of npy, bin, hex (default npy)")
    p.add_argument("--pack", type=int, default=1,
                   help="elements per .hex word, element 0 least significant (default 1)")
    p.add_argument("--force", action="store_true", help="replace an existing dump (atomically)")
    a = p.parse_args(argv)
    from . import pipeline as ip
    from .execute import quantize_input

    formats = golden.check_formats(a.format)
    golden.check_pack(a.pack)
    golden.check_output(Path(a.out), a.force)          # fail before the expensive part
    if a.images is not None and a.images < 1:
        raise DataError(f"--images must be at least 1, got {a.images}")
    x = source = None
    if a.input is not None:
        x, source = read_images(a.input)
    graph = ip.load(a.model)
    if x is not None:
        ip.check_images_fit(graph, x)
    graph, data, program = build_program(a, graph=graph)
    if x is None:
        n = a.images or 1
        images, _ = data.evaluation(n)
        if len(images) < n:
            raise DataError(f"--images {n}: {data.name} has only {len(images)} evaluation images")
        ip.check_images_fit(graph, images)
        x = ip.to_model_input(images)
        source = {"data": Path(data.name).name, "split": "evaluation", "first": n}
    manifest = golden.dump(program, quantize_input(program, x), a.out, formats, a.pack, a.force, source)
    size = sum((Path(a.out) / f).stat().st_size for e in manifest["tensors"].values()
               for f in e["files"].values())
    print(f"wrote {a.out}: {len(manifest['ops'])} ops, {len(manifest['tensors'])} tensors, "
          f"{manifest['input']['images']} image(s), {','.join(formats)}, {size / 1e6:.2f} MB")
    return 0


@command("compare", "compare a dump (RTL, another tool) with a golden dump, bit for bit")
def cmd_compare(argv):
    p = argparse.ArgumentParser(
        prog="intsim compare", description="Exact comparison of OTHER_DIR against GOLDEN_DIR. Tensors "
        "are matched by path without extension (act/NAME, const/OP.CONST, or NAME for activations in "
        "the root); any of .npy/.bin/.hex. Exit 0 when every present tensor matches.")
    p.add_argument("golden_dir")
    p.add_argument("other_dir")
    p.add_argument("--pack", type=int, default=None,
                   help="elements per word of the other side's .hex files (default: from its manifest, "
                        "else the golden one's)")
    p.add_argument("--require-all", action="store_true", help="missing tensors are failures too")
    p.add_argument("--max-rows", type=int, default=20, help="failing tensors listed (default 20)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    a = p.parse_args(argv)
    if a.pack is not None:
        golden.check_pack(a.pack)
    report = golden.compare(a.golden_dir, a.other_dir, pack=a.pack, require_all=a.require_all)
    if a.json:
        print(json.dumps(report.to_dict()))
    else:
        print(report.text(golden.op_labels(golden.read_manifest(a.golden_dir)), a.max_rows))
    return 0 if report.ok else 1
