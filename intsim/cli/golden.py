"""`intsim golden` (dump golden vectors) and `intsim compare` (exact comparison), docs/golden.md."""
import hashlib
import io
import json
from pathlib import Path

import numpy as np

from .. import golden
from .. import pipeline as ip
from ..errors import DataError
from ..execute import quantize_input
from ..images import check_batch, model_input
from .args import (Parser, add_model_args, add_program_arg, add_quant_args, build_program,
                   config_from_args, count, data_image_size, program_model, refuse_program_options,
                   saved_program)


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
    return model_input(x, f"--input {path}"), source


def golden_main(argv):
    p = Parser(
        prog="intsim golden", description="Quantize a model, run it integer-only on a few images and "
        "dump every op's integer inputs, outputs and constants with a manifest (docs/golden.md).")
    add_model_args(p)
    add_quant_args(p)
    add_program_arg(p)
    p.add_argument("--out", required=True, help="output directory (must not exist unless --force)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--images", type=count(1), default=None,
                     help="dump the first N evaluation images of --data (default 1)")
    src.add_argument("--input", default=None,
                     help=".npy/.npz of images (N,C,H,W) uint8 or float in [0,1] ('images' key in an .npz)")
    p.add_argument("--format", default="npy", help="comma list of npy, bin, hex (default npy)")
    p.add_argument("--pack", type=int, default=1,
                   help="elements per .hex word, element 0 least significant (default 1)")
    p.add_argument("--force", action="store_true", help="replace an existing dump (atomically)")
    a = p.parse_args(argv)
    if a.program:
        refuse_program_options(p, argv)
    formats = golden.check_formats(a.format)        # every check before the expensive part
    golden.check_pack(a.pack)
    golden.check_output(Path(a.out), a.force)
    x = source = None
    if a.input is not None:
        x, source = read_images(a.input)
    program, chw, data = _saved_program(a) if a.program else _built_program(a, x)
    if x is None:
        x, source = _evaluation_images(chw, data, a.images or 1)
    else:
        check_batch(x, chw)
    manifest = golden.dump(program, quantize_input(program, x), a.out, formats, a.pack, a.force, source)
    size = sum((Path(a.out) / f).stat().st_size for e in manifest["tensors"].values()
               for f in e["files"].values())
    print(f"wrote {a.out}: {len(manifest['ops'])} ops, {len(manifest['tensors'])} tensors, "
          f"{manifest['input']['images']} image(s), {','.join(formats)}, {size / 1e6:.2f} MB")
    return 0


def _built_program(a, x):
    """(program, model input (C, H, W), data set) calibrated and compiled from the options."""
    config = config_from_args(a)
    graph = ip.load(a.model)
    if x is not None:
        ip.check_images_fit(graph, x)
    graph, data, program, _ = build_program(a, config, graph=graph)
    return program, graph.input_shape, data


def _saved_program(a):
    """(program, model input (C, H, W), data set or None) for --program: the program as saved. The
    float model is not needed (the program knows its input); one given is checked all the same."""
    program = saved_program(a.program)
    if a.model:
        program_model(program, a.model, a.program)
    chw = program.input.shape
    data = None if a.input is not None else ip.open_data(a.data, image_size=data_image_size(chw))
    return program, chw, data


def _evaluation_images(chw, data, n):
    images, _ = data.evaluation(n)
    if len(images) < n:
        raise DataError(f"--images {n}: {data.name} has only {len(images)} evaluation images")
    check_batch(images, chw)
    return ip.to_model_input(images), {"data": Path(data.name).name, "split": "evaluation", "first": n}


def compare_main(argv):
    p = Parser(
        prog="intsim compare", description="Exact comparison of OTHER_DIR against GOLDEN_DIR. Tensors "
        "are matched by path without extension (act/NAME, const/OP.CONST, or NAME for activations in "
        "the root); any of .npy/.bin/.hex. Exit 0 when every present tensor matches.")
    p.add_argument("golden_dir")
    p.add_argument("other_dir")
    p.add_argument("--pack", type=int, default=None,
                   help="elements per word of the other side's .hex files (default: from its manifest, "
                        "else the golden one's)")
    p.add_argument("--require-all", action="store_true", help="missing tensors are failures too")
    p.add_argument("--max-rows", type=count(0), default=20, help="failing tensors listed (default 20)")
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
