"""`intsim select`: choose each non-linear layer's approximation by the unified metric Omega and
write a plan (docs/selection.md)."""
import json
from pathlib import Path
import time

from .. import pipeline as ip
from ..compile import nonlinear_layers
from ..experiment.cost import resolve_cost_weights
from ..experiment.plans import plan_cost, plan_document
from ..experiment.select import choose, format_table, measure, resolve_omega_weights
from .args import Parser, add_model_args, add_quant_args, config_from_args, count, writable_file


def main(argv):
    p = Parser(prog="intsim select", description="Measure Q (layer SQNR), P (logit "
                                "KL) and C (integer ops) of every candidate of every Softmax/GELU/"
                                "LayerNorm layer, pick each layer's best Omega, write a plan.")
    add_model_args(p)
    add_quant_args(p)
    p.add_argument("--select-images", type=count(1), default=128,
                   help="calibration images Q and P are measured on (default 128)")
    p.add_argument("--omega-weights", default=None, metavar="Q=1,P=1,C=1",
                   help="weights of Omega's three terms (0 drops a term)")
    p.add_argument("--cost-weights", default=None, metavar="KIND=W,...",
                   help="integer-op weights (default mul=4,div=16,shift=1,add=1,cmp=1)")
    p.add_argument("--workers", type=count(1), default=None, help="local processes (default all cores)")
    p.add_argument("--scheduler", "--dask", dest="scheduler", default=None, metavar="ADDRESS|local")
    p.add_argument("--out", default=None, help="write the plan (JSON) here")
    p.add_argument("--json", action="store_true", help="print the plan document as JSON")
    a = p.parse_args(argv)
    if a.out:
        writable_file(a.out, "--out")
    omega_w = resolve_omega_weights(a.omega_weights)
    cost_w = resolve_cost_weights(a.cost_weights)
    cfg = config_from_args(a)
    t0 = time.perf_counter()
    graph = ip.load(a.model)
    data = ip.open_data(a.data)
    calib = data.calibration(a.calib)
    observers = ip.calibrate(graph, calib, gram=cfg.gptq, rotate=cfg.rotate)
    images = calib[:a.select_images]
    table = measure(graph, observers, images, cfg, cost_w, a.workers, a.scheduler)
    plan, rows = choose(table, omega_w)
    doc = plan_document(plan, rows, cfg, graph, data.name, a.calib, len(images), omega_w, cost_w)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
    if a.json:
        print(json.dumps(doc))
        return 0
    print(format_table(rows))
    base = {layer: cfg.overrides.get(layer, getattr(cfg, fam)) for layer, fam in nonlinear_layers(graph)}
    print(f"\nW{cfg.wbits}A{cfg.abits}, {len(images)} selection images; Omega weights "
          f"{','.join(f'{k}={v:g}' for k, v in omega_w.items())}; {time.perf_counter() - t0:.0f} s")
    print(f"non-linear cost: baseline {plan_cost(rows, base):.4g}, selected "
          f"{doc['nonlinear_ops_per_image']:.4g} weighted ops/image")
    if a.out:
        print(f"wrote {a.out} (use: intsim run --plan {a.out})")
    return 0
