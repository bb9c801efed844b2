"""What-if sweeps over bit widths and kernel choices (docs/sweep.md).

The float model runs once (calibration, float outputs); every grid point compiles its own integer
program from the shared observers and runs it on the same images. Points run in parallel through
`tasks.run_tasks`; each finished point is saved in the resumable store (`store.SweepStore`).
"""
from dataclasses import dataclass, field
import itertools
import json
from pathlib import Path
import textwrap
import time

import numpy as np

from .. import metrics
from .. import pipeline as ip
from ..analysis import layer_sqnr
from ..errors import DataError, SweepError
from ..quantize import QuantConfig
from ..progress import bar
from .cost import program_cost, resolve_cost_weights
from .plots import INT_DIMS, KERNEL_DIMS, plot_heatmap
from .store import SweepStore, atomic_write, csv_columns, point_config
from .tasks import run_tasks


@dataclass
class EvalContext:
    """What every point shares; computed once in the parent and shipped to the workers."""
    graph: object
    observers: dict
    images: np.ndarray              # uint8 (N, C, H, W)
    labels: object                  # int64 (N,) or None
    float_logits: np.ndarray        # float64 (N, classes): the float model, run once
    base: dict = field(default_factory=dict)          # QuantConfig settings common to all points
    cost_weights: dict = None
    batch: int = 100


def logit_metrics(ref_logits, test_logits, labels=None):
    """Top-1 agreement, accuracy and SQNR of test logits against the float logits."""
    return {"agreement": metrics.agreement(ref_logits, test_logits),
            "logit_sqnr_db": metrics.sqnr_db(ref_logits, test_logits),
            "int_top1": None if labels is None else metrics.top1(test_logits, labels)}


def evaluate_point(ctx: EvalContext, point):
    return evaluate_config(ctx, point_config(ctx.base, point).to_dict())


def evaluate_config(ctx: EvalContext, config):
    """Compile and run one configuration (a complete QuantConfig dict, resolved by the caller so
    that a worker's own defaults never matter); a configuration that cannot be compiled or run
    (e.g. a multiplier too narrow for a scale) gives a row with its error instead of stopping the
    sweep."""
    t0 = time.perf_counter()
    cfg = QuantConfig.from_dict(config)
    row = {"images": len(ctx.images), "config": cfg.to_dict(),
           "float_top1": None if ctx.labels is None else metrics.top1(ctx.float_logits, ctx.labels)}
    try:
        program = ip.compile(ctx.graph, ctx.observers, cfg, progress=False)      # one of many points
        logits = ip.run_integer(program, ctx.images, batch=ctx.batch)
    except ValueError as e:
        row.update(error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - t0)
        return row
    row.update(logit_metrics(ctx.float_logits, logits, ctx.labels))
    row["predictions"] = logits.argmax(1).tolist()     # per image, for paired comparisons
    row.update(program_cost(program, ctx.cost_weights))
    row.update(seconds=time.perf_counter() - t0, error="")
    return row


def grid_points(dims):
    """dims: {QuantConfig field: [values]} -> list of point dicts (the Cartesian product, in order)."""
    names = list(dims)
    return [dict(zip(names, combo)) for combo in itertools.product(*(dims[n] for n in names))]


def run_grid(ctx, points, out, context, workers=None, scheduler=None, progress=None):
    """Run every point not already in `out`; returns (the results.csv rows, points run now)."""
    store = SweepStore(out, context)
    order = [store.key(p) for p in points]
    todo, seen = [], set()
    for p, k in zip(points, order):
        if k not in seen and not store.done(p):
            todo.append(p)
        seen.add(k)
    with bar(len(todo), "sweep", progress, "point") as b:
        def finished(item, row):
            point = todo[item[0]]
            store.save(point, row)
            store.write_csv(order)
            b.set_postfix_str(_point_note(point, row), refresh=False)
            b.update(1)

        items = [(i, point_config(ctx.base, p).to_dict()) for i, p in enumerate(todo)]
        run_tasks(_evaluate_item, ctx, items, workers, scheduler, finished)
    return store.write_csv(order), len(todo)


def _evaluate_item(ctx, item):
    return evaluate_config(ctx, item[1])


def _point_note(point, row):
    s = " ".join(f"{k}={v}" for k, v in point.items() if k not in ("overrides", "label"))
    top1 = row.get("int_top1")
    return f"{point.get('label') or s}: " + ("error" if row.get("error") else
                                             f"{100 * top1:.1f}%" if top1 is not None else "ok")


def sweep_context(graph, data_name, n_images, calib, base, cost_weights):
    """The settings every point of a sweep folder shares (checked on resume)."""
    return {"model_sha256": graph.meta.get("sha256"), "data": data_name, "images": n_images,
            "calib": calib, "base": base, "cost_weights": cost_weights}


def prepare(model=None, data="fashion-mnist", calib=256, limit=None, base=None, cost_weights=None,
            batch=100):
    """Load, calibrate once, run the float model once: an EvalContext and its sweep context."""
    graph = ip.load(model)
    ds = ip.open_data(data)
    observers = ip.calibrate(graph, ds.calibration(calib), gram=True)     # points round with GPTQ (weight_round auto)
    images, labels = ds.evaluation(limit)
    if len(images) == 0:
        raise DataError(f"{ds.name}: no evaluation images (--limit {limit})")
    ip.check_images_fit(graph, images)
    weights = resolve_cost_weights(cost_weights)
    base = dict(base or {})
    ctx = EvalContext(graph, observers, images, labels, ip.float_outputs(graph, images, batch), base,
                      weights, batch)
    return ctx, sweep_context(graph, ds.name, len(images), calib, base, weights)


def pick_row(rows, spec):
    """The results row the heatmap shows: 'worst' / 'best' (integer top-1) or 'dim=value,...'."""
    ok = [r for r in rows if not r.get("error")]
    if not ok:
        return None
    if spec in ("worst", "best"):
        key = (lambda r: float(r["int_top1"] if r["int_top1"] not in (None, "") else r["agreement"]))
        return (min if spec == "worst" else max)(ok, key=key)
    want = {}
    for item in spec.split(","):
        if "=" not in item:
            raise SweepError(f"--heatmap {spec!r}: use worst, best or DIM=VALUE[,DIM=VALUE...]")
        k, v = item.split("=", 1)
        want[k.strip().replace("-", "_")] = v.strip()
    for r in ok:
        if all(str(r.get(k)) == v for k, v in want.items()):
            return r
    raise SweepError(f"--heatmap {spec!r}: no finished point matches")


def write_heatmap(ctx, rows, out, spec="worst", n_images=64):
    """layer_sqnr.csv (always) and sqnr_heatmap.png (with matplotlib) for one chosen point."""
    r = pick_row(rows, spec)
    if r is None:
        return None
    cfg = {k: r[k] for k in csv_columns() if k in INT_DIMS + KERNEL_DIMS}
    cfg = {k: (int(v) if k in INT_DIMS else v) for k, v in cfg.items()}
    if r.get("overrides"):
        cfg["overrides"] = json.loads(r["overrides"])
    program = ip.compile(ctx.graph, ctx.observers, point_config(ctx.base, cfg), progress=False)
    sq = layer_sqnr(ctx.graph, program, ctx.images[:n_images])
    lines = ["tensor,sqnr_db"] + [f"{k},{v:.3f}" for k, v in sq.items()]
    atomic_write(Path(out) / "layer_sqnr.csv", "\n".join(lines) + "\n")
    desc = " ".join(f"{k}={v}" for k, v in cfg.items() if k != "overrides")
    if r.get("overrides"):
        desc += f" + {len(cfg['overrides'])} per-layer overrides"
    title = textwrap.fill(f"per-layer SQNR ({len(ctx.images[:n_images])} images): {desc}", 90)
    return plot_heatmap(sq, title, Path(out) / "sqnr_heatmap.png")


