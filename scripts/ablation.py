"""Ablation of the unified metric Omega (docs/selection.md, section S6).

For each setting (W8A8, W4A8): accuracy and non-linear cost of every single-candidate model
(one candidate per family for all its layers), of the Omega-selected model, and of Omega without
each of its three terms. Selection uses calibration (training-split) images only; accuracy is
measured on the test set. Resumable: rerun the same command after an interruption.

    python scripts/ablation.py                      # full Fashion-MNIST test set (10k images)
    python scripts/ablation.py --limit 1000         # quicker
Writes OUT/results.csv (every configuration), OUT/plan_<setting>_<variant>.json (the plans,
usable with `intsim run --plan`) and OUT/ablation.md (the tables of docs/selection.md).
"""
import argparse
import itertools
import json
import math
from pathlib import Path
import sys
import time

import numpy as np

from intsim import pipeline as ip
from intsim.experiment import cost, plans, store
from intsim.experiment import select as sel
from intsim.experiment import sweep as sw
from intsim.kernels import FAMILIES, candidates
from intsim.quantize import QuantConfig

SETTINGS = {"W8A8": {"wbits": 8, "abits": 8}, "W4A8": {"wbits": 4, "abits": 8}}
VARIANTS = {"omega": {"Q": 1, "P": 1, "C": 1}, "omega-noQ": {"Q": 0, "P": 1, "C": 1},
            "omega-noP": {"Q": 1, "P": 0, "C": 1}, "omega-noC": {"Q": 1, "P": 1, "C": 0}}
SHORT = {"poly-gelu": "poly", "ibert-gelu": "ibert", "ivit-shiftgelu": "ivit",
         "bitshift-softmax": "bitshift", "ivit-shiftmax": "ivit", "ibert-softmax": "ibert",
         "isqrt-layernorm": "isqrt", "ivit-layernorm": "ivit"}


def selection_table(out, name, graph, observers, images, bits, args, cost_w):
    """The Q/P/C table of one setting, measured once and cached in OUT/select_<name>.json."""
    path = Path(out) / f"select_{name}.json"
    key = {"model_sha256": graph.meta.get("sha256"), "calib": args.calib,
           "select_images": len(images), "bits": bits, "cost_weights": cost_w}
    if path.exists():
        doc = json.loads(path.read_text())
        if doc.get("key") == json.loads(json.dumps(key)):
            return doc["table"]
    t0 = time.perf_counter()
    table = sel.measure(graph, observers, images, QuantConfig(**bits), cost_w, args.workers,
                        args.scheduler, progress=None)
    print(f"{name}: selection measured in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    store.atomic_write(path, json.dumps({"key": key, "table": table}) + "\n")
    return table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", default=None)
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--calib", type=int, default=256)
    p.add_argument("--select-images", type=int, default=128)
    p.add_argument("--limit", type=int, default=None, help="test images (default: all)")
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma list of " + ", ".join(SETTINGS))
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--scheduler", "--dask", dest="scheduler", default=None)
    p.add_argument("--out", default="out/ablation")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cost_w = cost.resolve_cost_weights()
    graph = ip.load(a.model)
    ds = ip.open_data(a.data)
    calib = ds.calibration(a.calib)
    observers = ip.calibrate(graph, calib)
    images, labels = ds.evaluation(a.limit)
    ctx = sw.EvalContext(graph, observers, images, labels, ip.float_outputs(graph, images), {}, cost_w)
    context = sw.sweep_context(graph, ds.name, len(images), a.calib, {}, cost_w)

    points, groups = [], {}
    for name in a.settings.split(","):
        bits = SETTINGS[name]
        table = selection_table(out, name, graph, observers, calib[:a.select_images], bits, a, cost_w)
        pts = groups[name] = []
        for vname, w in VARIANTS.items():
            plan, rows = sel.choose(table, w)
            doc = plans.plan_document(plan, rows, QuantConfig(**bits), graph, ds.name, a.calib,
                                      a.select_images, sel.resolve_omega_weights(w), cost_w)
            store.atomic_write(out / f"plan_{name}_{vname}.json", json.dumps(doc, indent=1) + "\n")
            pts.append({**bits, "overrides": plan, "label": f"{name} {vname}"})
        for combo in itertools.product(*(candidates(f) for f in FAMILIES)):
            pt = {**bits, **dict(zip(FAMILIES, combo))}
            pts.append({**pt, "label": f"{name} single " + "/".join(SHORT.get(c, c) for c in combo)})
        points += pts

    _, ran = sw.run_grid(ctx, points, out, context, a.workers, a.scheduler)
    by_key = {rec["key"]: rec["row"] for rec in store.SweepStore(out, context).records()}
    report = [f"Fashion-MNIST, {len(images)} test images, calibration {a.calib} and selection "
              f"{a.select_images} training images; cost = weighted integer ops of the non-linear "
              f"layers per image (mul 4, div 16, shift/add/cmp 1). 'single g/s/l' = one GELU/Softmax/"
              f"LayerNorm candidate for all layers; 'omega-noX' = Omega without term X.", ""]
    for name, pts in groups.items():
        report += table_md(name, pts, by_key, labels)
    text = "\n".join(report)
    (out / "ablation.md").write_text(text + "\n")
    print(text)
    print(f"\n{len(points)} configurations ({ran} run now) in {time.perf_counter() - t0:.0f} s; "
          f"results in {out}", file=sys.stderr)
    return 0


def table_md(name, pts, by_key, labels):
    rows = []
    for pt in pts:
        r = by_key[store.point_key(pt, {})]
        rows.append((pt["label"].split(" ", 1)[1], r))
    lines = [f"### {name}", "", "| configuration | top-1 % | agreement % | logit SQNR dB | cost (ops/image) |",
             "|---|---:|---:|---:|---:|"]
    for label, r in rows:
        if r.get("error"):
            lines.append(f"| {label} | error: {r['error'][:60]} | | | |")
            continue
        lines.append(f"| {label} | {100 * r['int_top1']:.2f} | {100 * r['agreement']:.2f} | "
                     f"{r['logit_sqnr_db']:.2f} | {r['nonlinear_ops']:,.0f} |")
    singles = [(lab, r) for lab, r in rows if lab.startswith("single") and not r.get("error")]
    omega = dict(rows)["omega"]
    best = max(singles, key=lambda lr: (lr[1]["int_top1"], -lr[1]["nonlinear_ops"]))
    ok_acc = omega["int_top1"] >= best[1]["int_top1"]
    ok_cost = omega["nonlinear_ops"] <= best[1]["nonlinear_ops"]
    lines += ["", f"Best single-candidate model: {best[0]} ({100 * best[1]['int_top1']:.2f} %, "
              f"{best[1]['nonlinear_ops']:,.0f} ops). Omega-selected: {100 * omega['int_top1']:.2f} %, "
              f"{omega['nonlinear_ops']:,.0f} ops: accuracy {'>=' if ok_acc else '<'} best single, "
              f"cost {'<=' if ok_cost else '>'} best single. {paired(omega, best[1], labels)}", ""]
    return lines


def paired(a, b, labels):
    """McNemar's exact test on the images one model classifies right and the other wrong."""
    if labels is None or "predictions" not in a or "predictions" not in b:
        return ""
    ra = np.asarray(a["predictions"]) == labels
    rb = np.asarray(b["predictions"]) == labels
    n01, n10 = int((ra & ~rb).sum()), int((~ra & rb).sum())
    k, n = min(n01, n10), n01 + n10
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
    return (f"Paired: Omega right where it is wrong on {n01} images, wrong where it is right on "
            f"{n10} (McNemar exact p = {p:.2f}).")


if __name__ == "__main__":
    sys.exit(main())
