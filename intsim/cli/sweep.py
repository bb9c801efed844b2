"""`intsim sweep`: accuracy over a grid of bit widths and kernel choices, in parallel, resumable
(docs/sweep.md)."""
import argparse
from pathlib import Path
import sys
import time

from ..compile import check_layer_wbits, qk_wbits_layers
from ..experiment import plots
from ..experiment.plans import check_overrides, load_plan
from ..experiment.store import SweepStore, point_config
from ..experiment.sweep import grid_points, prepare, run_grid, write_heatmap
from ..kernels import DEFAULTS, get_kernel
from ..quantize import ACT_CALIB, QuantConfig
from .args import Parser, add_model_args, count, model_label, patterns_arg, writable_dir

DIMS = plots.INT_DIMS + plots.KERNEL_DIMS


def _int_list(name):
    def parse(s):
        try:
            vals = [int(v) for v in s.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name}: a comma-separated list of integers, got {s!r}") from None
        if not vals:
            raise argparse.ArgumentTypeError(f"--{name}: empty list")
        return vals
    return parse


def _str_list(s):
    return [v.strip() for v in s.split(",") if v.strip()]


def add_grid_args(p):
    d = QuantConfig()
    for dim in plots.INT_DIMS:
        opt = dim.replace("_", "-")
        p.add_argument(f"--{opt}", type=_int_list(opt), default=[getattr(d, dim)],
                       help=f"comma-separated values (default {getattr(d, dim)})")
    for fam in plots.KERNEL_DIMS:
        p.add_argument(f"--{fam}", type=_str_list, default=[DEFAULTS[fam]],
                       help=f"comma-separated {fam} candidates (default {DEFAULTS[fam]})")


def parser():
    p = Parser(prog="intsim sweep", description="Run a grid of quantization "
                                "settings; writes DIR/results.csv and plots. Rerun the same command "
                                "to resume after an interruption.")
    add_model_args(p)
    add_grid_args(p)
    p.add_argument("--workers", type=count(1), default=None, help="local processes (default all cores)")
    p.add_argument("--scheduler", "--dask", dest="scheduler", default=None, metavar="ADDRESS|local",
                   help="run on a Dask cluster: a scheduler address (tcp://host:8786) or 'local' "
                        "for a LocalCluster (needs the 'dask' extra)")
    p.add_argument("--cost-weights", default=None, metavar="KIND=W,...",
                   help="integer-op weights for costs (default mul=4,div=16,shift=1,add=1,cmp=1)")
    p.add_argument("--act-calib", default=QuantConfig().act_calib, choices=list(ACT_CALIB))
    p.add_argument("--plan", default=None, help="a selection plan (intsim select --out) for every point")
    p.add_argument("--layer-wbits", action="append", default=[], metavar="REGEX=BITS",
                   help="every point: the weights of the layers whose name matches REGEX at BITS "
                        "(2..8) instead of the point's wbits (repeatable; docs/quantization.md Q14)")
    p.add_argument("--qk-wbits", type=int, default=0, metavar="BITS",
                   help="every point: the weights of the layers that make attention queries and keys "
                        "at BITS (2..8) instead of the point's wbits (docs/quantization.md Q17)")
    p.add_argument("--weight-group", type=int, default=0, metavar="G",
                   help="every point: Linear weights with one scale per G input columns (Q13)")
    p.add_argument("--bias-correction", action="store_true",
                   help="every point: Linear biases corrected for the weights' mean rounding error (Q15)")
    p.add_argument("--limit", type=count(1), default=None, help="evaluate only the first N images")
    p.add_argument("--batch", type=count(1), default=100, help="images per batch (default 100)")
    p.add_argument("--out", required=True, help="output folder (resumed if it exists)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots and the SQNR heatmap")
    p.add_argument("--heatmap", default="worst", help="point of the SQNR heatmap: worst, best or "
                   "DIM=VALUE,... (default worst)")
    p.add_argument("--heatmap-images", type=count(1), default=64)
    return p


def main(argv):
    a = parser().parse_args(argv)
    writable_dir(a.out, "--out")
    dims = {d: getattr(a, d) for d in DIMS}
    base = {"act_calib": a.act_calib}
    if a.plan:
        base["overrides"] = load_plan(a.plan)
    fixed = {"layer_wbits": patterns_arg(a, "layer_wbits"), "qk_wbits": a.qk_wbits, "weight_group": a.weight_group,
             "bias_correction": a.bias_correction}
    base.update({k: v for k, v in fixed.items() if v != getattr(QuantConfig(), k)})   # old folders resume
    for fam in plots.KERNEL_DIMS:     # every point must be a valid configuration before anything runs
        for name in dims[fam]:
            get_kernel(fam, name)
    points = grid_points(dims)
    for pt in points:
        point_config(base, pt)
    t0 = time.perf_counter()
    ctx, context = prepare(a.model, a.data, a.calib, a.limit, base, a.cost_weights, a.batch)
    check_overrides(ctx.graph, base.get("overrides", {}))
    check_layer_wbits(ctx.graph, base.get("layer_wbits", {}))
    qk_wbits_layers(ctx.graph, base.get("qk_wbits", 0))          # none to widen: an error now
    try:                                # Ctrl-C, or SIGTERM (the command's interrupt_on_term)
        rows, ran = run_grid(ctx, points, a.out, context, a.workers, a.scheduler)
    except KeyboardInterrupt:
        done = sum(SweepStore(a.out, context).done(pt) for pt in points)
        print(f"\ninterrupted: {done} of {len(points)} points are in {a.out}; rerun the same "
              f"command to resume", file=sys.stderr)
        return 130
    print(f"{len(points)} points ({ran} run now, {len(points) - ran} resumed) on {context['images']} "
          f"images in {time.perf_counter() - t0:.0f} s -> {Path(a.out) / 'results.csv'}")
    _print_rows(rows, [k for k in DIMS if len(dims[k]) > 1])
    if not a.no_plots:
        _write_plots(ctx, rows, a)
    return 0


def _write_plots(ctx, rows, a):
    if not plots.available():
        print("plots skipped: matplotlib is not installed (pip install 'intsim[plots]')")
    else:
        for path in plots.plot_accuracy(rows, a.out, f"{model_label(ctx.graph, a)} on {a.data}"):
            print(f"wrote {path}")
    hm = write_heatmap(ctx, rows, a.out, a.heatmap, a.heatmap_images)
    print(f"wrote {Path(a.out) / 'layer_sqnr.csv'}" + (f" and {hm}" if hm else ""))


def _print_rows(rows, dims):
    head = [*(d.replace("_bits", "") for d in dims), "int top-1", "agree", "SQNR dB", "nl ops/img"]
    print("  ".join(f"{h:>10}" for h in head))
    for r in rows:
        vals = [str(r[d]) for d in dims]
        if r.get("error"):
            vals += [f"error: {r['error'][:60]}"]
        else:
            t1 = r.get("int_top1")
            vals += [f"{100 * t1:.2f} %" if t1 not in (None, "") else "-", f"{100 * r['agreement']:.2f} %",
                     f"{r['logit_sqnr_db']:.2f}", f"{r['nonlinear_ops']:.3g}"]
        print("  ".join(f"{v:>10}" for v in vals))
