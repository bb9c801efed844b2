#!/usr/bin/env python
"""Regenerate the committed golden sets in golden/ (docs/golden.md, "Committed sets").

    python scripts/make_golden.py            # rewrite golden/fmnist_w8a8 and golden/fmnist_w4a8
    python scripts/make_golden.py --out DIR  # write them somewhere else (tests do this)

Each set equals what `intsim golden --calib 64 --images N --wbits W --out golden/NAME` writes
(same calibration subset, same first N evaluation images, npy only); tests/test_golden.py checks
that and regenerates the sets to compare them bit for bit. Re-run this script after any intended
change to the arithmetic, the kernels, the compiler or the shipped model, and commit the result.
"""
import argparse
from pathlib import Path
import sys

REPO = Path(__file__).resolve().parent.parent
CALIB = 64                                          # cheap, deterministic (seeded subset)
SETS = {                                            # name -> (quantization settings, images)
    "fmnist_w8a8": ({"wbits": 8, "abits": 8}, 2),
    "fmnist_w4a8": ({"wbits": 4, "abits": 8}, 1),
}


def cli_args(name):
    """The `intsim golden` options that reproduce set `name` (without --out)."""
    settings, images = SETS[name]
    return ["--calib", str(CALIB), "--images", str(images),
            "--wbits", str(settings["wbits"]), "--abits", str(settings["abits"])]


def make(out_root, names=None, force=True):
    """Write the sets into out_root/NAME; returns {name: manifest}. Calibrates once (every set
    uses the same images and observers; only the QuantConfig differs)."""
    sys.path.insert(0, str(REPO))
    import intsim.pipeline as ip
    from intsim import golden
    from intsim.data import calibration_record
    from intsim.execute import quantize_input
    from intsim.quantize import QuantConfig

    graph = ip.load()
    data = ip.open_data("fashion-mnist")
    calib = data.calibration(CALIB)
    observers = ip.calibrate(graph, calib, gram=True)   # both sets round with GPTQ
    out = {}
    for name in names or SETS:
        settings, n = SETS[name]
        program = ip.compile(graph, observers, QuantConfig(**settings))
        program.meta["calibration"] = calibration_record(data.name, calib)   # as intsim golden records it
        images, _ = data.evaluation(n)
        q = quantize_input(program, ip.to_model_input(images))
        source = {"data": data.name, "split": "evaluation", "first": n}
        out[name] = golden.dump(program, q, Path(out_root) / name, ("npy",), 1, force, source)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(REPO / "golden"), help="parent directory (default golden/)")
    p.add_argument("--only", choices=sorted(SETS), action="append", help="regenerate only this set")
    a = p.parse_args(argv)
    for name, m in make(a.out, a.only).items():
        size = sum((Path(a.out) / name / f).stat().st_size for f in
                   ["manifest.json"] + [f for e in m["tensors"].values() for f in e["files"].values()])
        print(f"{Path(a.out) / name}: {len(m['ops'])} ops, {len(m['tensors'])} tensors, "
              f"{m['input']['images']} image(s), {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
