"""`intsim sweep`: what-if grids over bit widths and kernel choices (docs/sweep.md).

The float model runs once (calibration, float logits); every grid point compiles its own integer
program from the shared observers and runs it on the same images. Points run in parallel on local
cores (ProcessPoolExecutor) or on a Dask cluster through one entry point, `run_tasks`, which
`intsim select` uses as well. Each finished point is written atomically to DIR/points/<key>.json
and results.csv is rebuilt from those files, so an interrupted sweep resumes where it stopped.
"""
import argparse
import contextlib
from dataclasses import dataclass, field
import hashlib
import itertools
import json
import math
import os
from pathlib import Path
import sys
import textwrap
import time

import numpy as np

from .cli import command, add_model_args
from .quantize import QuantConfig

# grid dimensions: QuantConfig field -> option (ints are bit widths, strs are kernel candidates)
INT_DIMS = ("wbits", "abits", "residual_bits", "logit_bits", "softmax_bits", "multiplier_bits")
KERNEL_DIMS = ("gelu", "softmax", "layernorm")
METRICS = ("images", "float_top1", "int_top1", "agreement", "logit_sqnr_db", "nonlinear_ops",
           "matmul_mbops", "seconds", "error")
MANIFEST = "sweep.json"


class SweepError(ValueError):
    """A sweep that cannot run as asked (bad grid, an output folder of another sweep)."""


# --- running many tasks: in process, on local cores, or on a Dask cluster ------------------------------

def default_workers():
    return max(1, os.cpu_count() or 1)


def _limit_threads(threads):
    """Pin BLAS and numba to `threads` in this process; returns a function restoring them. The
    matmuls are small: several BLAS threads per worker only fight over the cores (measured 4-13x
    slower on a busy 2-core box)."""
    import numba
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(threads)
    except ImportError:         # optional: spawned workers still get OPENBLAS_NUM_THREADS (below)
        limits = None

    def restore():
        numba.set_num_threads(before)
        if limits is not None:
            limits.restore_original_limits()
    return restore


def _limited_call(fn, ctx, item, threads):
    _limit_threads(threads)
    return fn(ctx, item)


_WORKER = {}


def _pool_init(fn, ctx, threads):
    _WORKER.update(fn=fn, ctx=ctx)
    _limit_threads(threads)


def _pool_call(item):
    return _WORKER["fn"](_WORKER["ctx"], item)


def run_tasks(fn, ctx, items, workers=None, scheduler=None, on_result=None):
    """Call fn(ctx, item) for every item and on_result(item, result) in the caller as each one
    finishes (completion order). fn must be a module-level function (it is pickled by name).

    scheduler=None: local processes (`workers`, default all cores; 1 = in this process).
    scheduler='local': a Dask LocalCluster with `workers` processes; otherwise a Dask scheduler
    address (tcp://host:8786). ctx is shipped once per worker, not once per item."""
    items = list(items)
    workers = workers or default_workers()
    if workers < 1:
        raise SweepError(f"--workers must be >= 1, got {workers}")
    on_result = on_result or (lambda item, result: None)
    if scheduler:
        return _run_dask(fn, ctx, items, workers, scheduler, on_result)
    threads = max(1, default_workers() // workers)
    if workers == 1 or len(items) <= 1:
        restore = _limit_threads(threads)
        try:
            for item in items:
                on_result(item, fn(ctx, item))
        finally:
            restore()
        return
    import concurrent.futures as cf
    import multiprocessing as mp
    # spawn, not fork: the parent has run numba-parallel and BLAS code, whose thread pools are not
    # all fork-safe; the env var reaches BLAS in the children before NumPy loads it
    saved = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    try:
        with cf.ProcessPoolExecutor(min(workers, len(items)), mp.get_context("spawn"),
                                    initializer=_pool_init, initargs=(fn, ctx, threads)) as pool:
            futures = {pool.submit(_pool_call, item): item for item in items}
            try:
                for fut in cf.as_completed(futures):
                    on_result(futures[fut], fut.result())
            except BaseException:
                # interrupted (or a task failed): drop the queue and stop the running tasks now
                # rather than wait for them; their points simply run again on resume
                for fut in futures:
                    fut.cancel()
                for proc in list(getattr(pool, "_processes", {}).values()):
                    proc.terminate()
                raise
    finally:
        if saved is None:
            os.environ.pop("OPENBLAS_NUM_THREADS", None)
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = saved


def _run_dask(fn, ctx, items, workers, scheduler, on_result):
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise SweepError("running on Dask needs the 'dask' extra: pip install 'intsim[dask]' "
                         "(dask[distributed])") from None
    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        ctx_future = client.scatter(ctx, broadcast=True)
        futures = {client.submit(_limited_call, fn, ctx_future, item, 1, pure=False): item
                   for item in items}
        for fut in as_completed(futures):
            on_result(futures[fut], fut.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


@contextlib.contextmanager
def interrupt_on_term():
    """SIGTERM (kill) interrupts like Ctrl-C, so finished points stay and workers are stopped."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class Bar:
    """Progress over tasks on stderr (when it is a terminal): done/total, elapsed, ETA."""

    def __init__(self, total, label, enabled=None):
        self.total, self.label, self.done = total, label, 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.t0 = time.perf_counter()
        self.show()

    def step(self, note=""):
        self.done += 1
        self.show(note)

    def show(self, note=""):
        if not self.enabled:
            return
        el = time.perf_counter() - self.t0
        eta = el / self.done * (self.total - self.done) if self.done else float("nan")
        bar = "#" * int(30 * self.done / max(self.total, 1))
        sys.stderr.write(f"\r{self.label} [{bar:<30}] {self.done}/{self.total}  {_hms(el)} elapsed"
                         f"{'' if math.isnan(eta) else ', ETA ' + _hms(eta)}  {note[:40]:<40}")
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _hms(s):
    s = int(round(s))
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# --- one grid point ---------------------------------------------------------------------------------

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


class MemoObserver:
    """An Observer whose scale() is computed once per (format, method): each grid point or variant
    compiles a program from the same observers, and the MSE clipping search dominated compile."""

    def __init__(self, observer):
        self._obs = observer
        self._scales = {}

    def scale(self, fmt, method="mse", percentile=99.99):
        key = (fmt, method, float(percentile))
        if key not in self._scales:
            self._scales[key] = self._obs.scale(fmt, method, percentile)
        return self._scales[key]

    def __getattr__(self, name):
        if name.startswith("_"):        # unpickling looks attributes up before _obs exists
            raise AttributeError(name)
        return getattr(self._obs, name)


def memo_observers(observers):
    return {k: v if isinstance(v, MemoObserver) else MemoObserver(v) for k, v in observers.items()}


def float_logits(graph, images_u8, batch=100):
    from .float_ref import run_float
    from .pipeline import to_model_input
    return np.concatenate([run_float(graph, to_model_input(images_u8[i:i + batch])).astype(np.float64)
                           for i in range(0, len(images_u8), batch)])


def point_config(base, point):
    settings = {k: v for k, v in point.items() if k != "label"}
    return QuantConfig(**{**base, **settings})


def point_key(point, base=None):
    """A stable id of the complete configuration a point stands for (its label is cosmetic; a
    setting left at its default is part of it, so a changed default is a new point)."""
    settings = point_config(base or {}, point).to_dict()
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def logit_metrics(ref_logits, test_logits, labels=None):
    """Top-1 agreement, accuracy and SQNR of test logits against the float logits."""
    from .pipeline import sqnr_db
    fp, ip_ = ref_logits.argmax(1), test_logits.argmax(1)
    out = {"agreement": float((fp == ip_).mean()), "logit_sqnr_db": float(sqnr_db(ref_logits, test_logits))}
    out["int_top1"] = None if labels is None else float((ip_ == labels).mean())
    return out


def evaluate_point(ctx: EvalContext, point):
    return evaluate_config(ctx, point_config(ctx.base, point).to_dict())


def evaluate_config(ctx: EvalContext, config):
    """Compile and run one configuration (a complete QuantConfig dict, resolved by the caller so
    that a worker's own defaults never matter); a configuration that cannot be compiled or run
    (e.g. a multiplier too narrow for a scale) gives a row with its error instead of stopping the
    sweep."""
    from . import pipeline as ip
    from .compile import CompileError
    from .execute import ExecutionError
    from .select import program_cost
    t0 = time.perf_counter()
    cfg = QuantConfig.from_dict(config)
    row = {"images": len(ctx.images), "config": cfg.to_dict(),
           "float_top1": None if ctx.labels is None else float((ctx.float_logits.argmax(1) == ctx.labels).mean())}
    try:
        program = ip.compile(ctx.graph, ctx.observers, cfg)
        logits = ip.run_integer(program, ctx.images, batch=ctx.batch)
    except (ValueError, ExecutionError, CompileError) as e:
        row.update(error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - t0)
        return row
    row.update(logit_metrics(ctx.float_logits, logits, ctx.labels))
    row["predictions"] = logits.argmax(1).tolist()     # per image, for paired comparisons
    row.update(program_cost(program, ctx.cost_weights))
    row.update(seconds=time.perf_counter() - t0, error="")
    return row


# --- the grid, its files, resume ----------------------------------------------------------------------

def grid_points(dims):
    """dims: {QuantConfig field: [values]} -> list of point dicts (the Cartesian product, in order)."""
    names = list(dims)
    return [dict(zip(names, combo)) for combo in itertools.product(*(dims[n] for n in names))]


def atomic_write(path, text):
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class SweepStore:
    """DIR/sweep.json (what every point shares), DIR/points/<key>.json (one per finished point),
    DIR/results.csv (rebuilt from the point files after each one)."""

    def __init__(self, out, context):
        self.dir = Path(out)
        self.points_dir = self.dir / "points"
        context = json.loads(json.dumps(context, default=_json_default))   # as it reads back
        self.base = context.get("base") or {}
        self.points_dir.mkdir(parents=True, exist_ok=True)
        manifest = self.dir / MANIFEST
        if manifest.exists():
            try:
                old = json.loads(manifest.read_text())
            except json.JSONDecodeError as e:
                raise SweepError(f"{manifest}: unreadable ({e}); delete it to start afresh") from None
            if old.get("context") != context:
                diff = sorted(k for k in set(old.get("context", {})) | set(context)
                              if old.get("context", {}).get(k) != context.get(k))
                raise SweepError(f"{self.dir} holds a sweep with other shared settings ({', '.join(diff)}); "
                                 f"use another --out, or delete it to start afresh")
        else:
            atomic_write(manifest, json.dumps({"context": context}, indent=1) + "\n")

    def key(self, point):
        return point_key(point, self.base)

    def path(self, point):
        return self.points_dir / f"{self.key(point)}.json"

    def done(self, point):
        """A point is done when its file reads back whole (a corrupt one is run again)."""
        rec = self._read(self.path(point))
        return rec is not None and rec.get("key") == self.key(point)

    @staticmethod
    def _read(path):
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return rec if isinstance(rec, dict) and {"key", "point", "row"} <= set(rec) else None

    def save(self, point, row):
        rec = {"key": self.key(point), "point": point, "row": row}
        atomic_write(self.path(point), json.dumps(rec, indent=1, default=_json_default) + "\n")

    def records(self):
        recs = (self._read(f) for f in sorted(self.points_dir.glob("*.json")))
        return [r for r in recs if r is not None]     # a corrupt file: ignored, its point reruns

    def write_csv(self, order=None):
        """results.csv: one row per finished point, in grid order (then any others)."""
        import csv
        import io
        recs = self.records()
        rank = {k: i for i, k in enumerate(order or [])}
        recs.sort(key=lambda r: (rank.get(r["key"], len(rank)), r["key"]))
        rows = [csv_row(r) for r in recs]
        cols = csv_columns()
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        atomic_write(self.dir / "results.csv", buf.getvalue())
        return rows


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(f"not JSON-able: {type(o).__name__}")


def csv_columns():
    from dataclasses import fields
    settings = [f.name for f in fields(QuantConfig) if f.name != "overrides"]
    return ["label"] + settings + ["overrides"] + list(METRICS) + ["key"]


def csv_row(rec):
    """One results.csv row: every setting of the configuration, then the metrics."""
    point, row = rec["point"], rec["row"]
    cfg = row["config"]
    out = {k: v for k, v in cfg.items() if k != "overrides"}
    ov = cfg.get("overrides") or {}
    out["overrides"] = json.dumps(ov, sort_keys=True) if ov else ""
    out["label"] = point.get("label", "")
    out.update({k: row.get(k) for k in METRICS})
    out["key"] = rec["key"]
    return out


def run_grid(ctx, points, out, context, workers=None, scheduler=None, progress=None):
    """Run every point not already in `out`; returns the results.csv rows."""
    store = SweepStore(out, context)
    order = [store.key(p) for p in points]
    todo, seen = [], set()
    for p, k in zip(points, order):
        if k not in seen and not store.done(p):
            todo.append(p)
        seen.add(k)
    bar = Bar(len(todo), "sweep", progress)

    def finished(item, row):
        point = todo[item[0]]
        store.save(point, row)
        store.write_csv(order)
        bar.step(_point_note(point, row))

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
    from . import pipeline as ip
    from .data import DataError
    from .select import resolve_cost_weights
    graph = ip.load(model)
    ds = ip.open_data(data)
    observers = memo_observers(ip.calibrate(graph, ds.calibration(calib)))
    images, labels = ds.evaluation(limit)
    if len(images) == 0:
        raise DataError(f"{ds.name}: no evaluation images (--limit {limit})")
    ip.check_images_fit(graph, images)
    weights = resolve_cost_weights(cost_weights)
    base = dict(base or {})
    ctx = EvalContext(graph, observers, images, labels, float_logits(graph, images, batch), base,
                      weights, batch)
    return ctx, sweep_context(graph, ds.name, len(images), calib, base, weights)


# --- plots (matplotlib, optional) --------------------------------------------------------------------

def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_accuracy(rows, out):
    """accuracy_vs_<dim>.png for every bit-width dimension with more than one value: one line per
    setting of the other varying dimensions (their mean with a min-max band when there are many)."""
    plt = _pyplot()
    if plt is None:
        return []
    ok = [r for r in rows if not r.get("error") and r.get("int_top1") not in (None, "")]
    varying = [d for d in INT_DIMS + KERNEL_DIMS + ("overrides",) if len({r[d] for r in ok}) > 1]
    written = []
    for dim in (d for d in varying if d in INT_DIMS):
        others = [d for d in varying if d != dim]
        groups = {}
        for r in ok:
            groups.setdefault(tuple(r[d] for d in others), []).append(r)
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = sorted({int(r[dim]) for r in ok})
        if len(groups) <= 10:
            for key, rs in sorted(groups.items()):
                rs = sorted(rs, key=lambda r: int(r[dim]))
                lab = ", ".join(f"{d}={v}" for d, v in zip(others, key)) or "integer"
                ax.plot([int(r[dim]) for r in rs], [100 * float(r["int_top1"]) for r in rs], "o-", label=lab)
        else:
            ys = [[100 * float(r["int_top1"]) for r in ok if int(r[dim]) == x] for x in xs]
            ax.plot(xs, [np.mean(y) for y in ys], "o-", label=f"mean over {len(groups)} settings")
            ax.fill_between(xs, [min(y) for y in ys], [max(y) for y in ys], alpha=0.25, label="min-max")
        ft = ok[0].get("float_top1")
        if ft not in (None, ""):
            ax.axhline(100 * float(ft), ls="--", c="k", lw=1, label="float")
        ax.set_xlabel(dim)
        ax.set_ylabel("top-1 (%)")
        ax.set_xticks(xs)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = Path(out) / f"accuracy_vs_{dim}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def layer_sqnr(graph, program, images_u8):
    """{graph tensor: SQNR dB} of a program: per float tensor, the worst of the integer tensors
    that realise it (a requantized copy is what its consumer sees)."""
    from .analysis import tensor_sqnr
    per_int = tensor_sqnr(graph, program, images_u8)
    out = {}
    for name, db in per_int.items():
        src = program.tensors[name].source or name
        out[src] = min(out.get(src, math.inf), db)
    return out


def sqnr_grid(sqnr):
    """Blocks x sub-layers matrix of SQNR values from {tensor: dB} (names blocks.<i>.<sub>)."""
    cells, blocks, subs = {}, set(), []
    for name, db in sqnr.items():
        parts = name.split(".", 2)
        if len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit():
            b, sub = int(parts[1]), parts[2]
            cells[(b, sub)] = db
            blocks.add(b)
            if sub not in subs:
                subs.append(sub)
    blocks = sorted(blocks)
    mat = np.full((len(blocks), len(subs)), np.nan)
    for (b, sub), db in cells.items():
        mat[blocks.index(b), subs.index(sub)] = db
    return blocks, subs, mat


def plot_heatmap(sqnr, title, path):
    plt = _pyplot()
    if plt is None:
        return None
    blocks, subs, mat = sqnr_grid(sqnr)
    if not blocks:
        return None
    fig, ax = plt.subplots(figsize=(1 + 0.55 * len(subs), 1.5 + 0.45 * len(blocks)))
    shown = np.where(np.isfinite(mat), mat, np.nan)
    im = ax.imshow(shown, cmap="viridis", aspect="auto")
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            if np.isfinite(mat[i, j]):
                ax.text(j, i, f"{mat[i, j]:.0f}", ha="center", va="center", fontsize=7, color="w")
    ax.set_xticks(range(len(subs)), subs, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(blocks)), [f"block {b}" for b in blocks], fontsize=8)
    ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=ax, label="SQNR (dB)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    from . import pipeline as ip
    r = pick_row(rows, spec)
    if r is None:
        return None
    cfg = {k: r[k] for k in csv_columns() if k in INT_DIMS + KERNEL_DIMS}
    cfg = {k: (int(v) if k in INT_DIMS else v) for k, v in cfg.items()}
    if r.get("overrides"):
        cfg["overrides"] = json.loads(r["overrides"])
    program = ip.compile(ctx.graph, ctx.observers, point_config(ctx.base, cfg))
    sq = layer_sqnr(ctx.graph, program, ctx.images[:n_images])
    lines = ["tensor,sqnr_db"] + [f"{k},{v:.3f}" for k, v in sq.items()]
    atomic_write(Path(out) / "layer_sqnr.csv", "\n".join(lines) + "\n")
    desc = " ".join(f"{k}={v}" for k, v in cfg.items() if k != "overrides")
    if r.get("overrides"):
        desc += f" + {len(cfg['overrides'])} per-layer overrides"
    title = textwrap.fill(f"per-layer SQNR ({len(ctx.images[:n_images])} images): {desc}", 90)
    return plot_heatmap(sq, title, Path(out) / "sqnr_heatmap.png")


# --- command line ----------------------------------------------------------------------------------------

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
    from .kernels import DEFAULTS
    d = QuantConfig()
    for dim in INT_DIMS:
        opt = dim.replace("_", "-")
        p.add_argument(f"--{opt}", type=_int_list(opt), default=[getattr(d, dim)],
                       help=f"comma-separated values (default {getattr(d, dim)})")
    for fam in KERNEL_DIMS:
        p.add_argument(f"--{fam}", type=_str_list, default=[DEFAULTS[fam]],
                       help=f"comma-separated {fam} candidates (default {DEFAULTS[fam]})")


def add_run_args(p, default_workers_help="all cores"):
    p.add_argument("--workers", type=int, default=None, help=f"local processes (default {default_workers_help})")
    p.add_argument("--scheduler", "--dask", dest="scheduler", default=None, metavar="ADDRESS|local",
                   help="run on a Dask cluster: a scheduler address (tcp://host:8786) or 'local' "
                        "for a LocalCluster (needs the 'dask' extra)")
    p.add_argument("--cost-weights", default=None, metavar="KIND=W,...",
                   help="integer-op weights for costs (default mul=4,div=16,shift=1,add=1,cmp=1)")


@command("sweep", "accuracy over a grid of bit widths and kernel choices (parallel, resumable)")
def cmd_sweep(argv):
    p = argparse.ArgumentParser(prog="intsim sweep", description="Run a grid of quantization "
                                "settings; writes DIR/results.csv and plots. Rerun the same command "
                                "to resume after an interruption.")
    add_model_args(p)
    add_grid_args(p)
    add_run_args(p)
    p.add_argument("--act-calib", default="mse", choices=["minmax", "percentile", "mse"])
    p.add_argument("--plan", default=None, help="a selection plan (intsim select --out) for every point")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--out", required=True, help="output folder (resumed if it exists)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots and the SQNR heatmap")
    p.add_argument("--heatmap", default="worst", help="point of the SQNR heatmap: worst, best or "
                   "DIM=VALUE,... (default worst)")
    p.add_argument("--heatmap-images", type=int, default=64)
    a = p.parse_args(argv)
    from .select import load_plan, check_overrides
    dims = {d: getattr(a, d) for d in INT_DIMS + KERNEL_DIMS}
    base = {"act_calib": a.act_calib}
    if a.plan:
        base["overrides"] = load_plan(a.plan)
    from .kernels import get_kernel
    for fam in KERNEL_DIMS:     # every point must be a valid configuration before anything runs
        for name in dims[fam]:
            get_kernel(fam, name)
    points = grid_points(dims)
    for pt in points:
        point_config(base, pt)
    t0 = time.perf_counter()
    ctx, context = prepare(a.model, a.data, a.calib, a.limit, base, a.cost_weights, a.batch)
    check_overrides(ctx.graph, base.get("overrides", {}))
    with interrupt_on_term():
        try:
            rows, ran = run_grid(ctx, points, a.out, context, a.workers, a.scheduler)
        except KeyboardInterrupt:
            done = sum(SweepStore(a.out, context).done(pt) for pt in points)
            print(f"\ninterrupted: {done} of {len(points)} points are in {a.out}; rerun the same "
                  f"command to resume", file=sys.stderr)
            return 130
    wall = time.perf_counter() - t0
    print(f"{len(points)} points ({ran} run now, {len(points) - ran} resumed) on {context['images']} "
          f"images in {wall:.0f} s -> {Path(a.out) / 'results.csv'}")
    _print_rows(rows, [k for k in INT_DIMS + KERNEL_DIMS if len(dims[k]) > 1])
    if not a.no_plots:
        if _pyplot() is None:
            print("plots skipped: matplotlib is not installed (pip install 'intsim[plots]')")
        else:
            for path in plot_accuracy(rows, a.out):
                print(f"wrote {path}")
        hm = write_heatmap(ctx, rows, a.out, a.heatmap, a.heatmap_images)
        print(f"wrote {Path(a.out) / 'layer_sqnr.csv'}" + (f" and {hm}" if hm else ""))
    return 0


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
