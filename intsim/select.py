"""`intsim select`: per-layer choice of the non-linear approximation by the unified metric Omega
(docs/selection.md).

For every Softmax, GELU and LayerNorm node and every candidate of its family:
  Q  SQNR (dB) of the layer's integer output against float, on the selection images;
  P  the perturbation at the model output: mean KL(softmax(float logits) || softmax(integer
     logits)) of the program that differs from the baseline in that layer's candidate only;
  C  integer operations per element from kernel.cost(), weighted (COST_WEIGHTS).
Each term becomes a gap in dB to the layer's best candidate, and Omega is their weighted sum
(lower is better):
  Omega = wQ (Q* - Q) + wP 10 log10(P / P*) + wC 10 log10(C / C*)
i.e. 10 log10 of the product of the candidate's noise-power, perturbation and cost ratios.

The float model and the baseline program run once; each variant program is compiled from the same
observers and run on the same images (in parallel through sweep.run_tasks).
"""
import argparse
from dataclasses import dataclass
import inspect
import json
import math
from pathlib import Path
import time

import numpy as np

from .arith import ArithSpecError
from .cli import command, add_model_args, add_quant_args, config_from_args
from .kernels import FAMILIES, candidates, get_kernel
from .kernels.base import KernelPlan

PLAN_SCHEMA = 1
FAMILY_OF = {"GELU": "gelu", "Softmax": "softmax", "LayerNorm": "layernorm"}
OP_KINDS = ("mul", "div", "shift", "add", "cmp")
# relative price of one integer op (docs/selection.md S3): a 32-bit multiplier costs a few adders
# in area and 3-4 adder delays (CPU imul: 3 cycles vs 1); a divider is iterative, one
# subtract-and-shift per quotient bit, 16+ steps (CPU idiv: 20-40 cycles)
COST_WEIGHTS = {"mul": 4.0, "div": 16.0, "shift": 1.0, "add": 1.0, "cmp": 1.0}
OMEGA_WEIGHTS = {"Q": 1.0, "P": 1.0, "C": 1.0}
Q_CAP_DB = 120.0        # an exact layer (no noise) counts as 120 dB: keeps the gaps finite
P_FLOOR = 1e-12         # KL below this is numerically zero


class PlanError(ValueError):
    """A plan file that cannot be used: missing, not JSON, unknown layer or candidate."""


# --- costs ----------------------------------------------------------------------------------------------

def _parse_weights(spec, defaults, what):
    if spec is None:
        return dict(defaults)
    if isinstance(spec, dict):
        items = spec.items()
    else:
        items = []
        for part in str(spec).split(","):
            if "=" not in part:
                raise ArithSpecError(f"{what} {spec!r}: use NAME=VALUE,...")
            k, v = part.split("=", 1)
            items.append((k.strip(), v))
    out = dict(defaults)
    for k, v in items:
        if k not in defaults:
            raise ArithSpecError(f"{what}: unknown name {k!r}; names: {', '.join(defaults)}")
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise ArithSpecError(f"{what}: {k}={v!r} is not a number") from None
        if not math.isfinite(v) or v < 0:
            raise ArithSpecError(f"{what}: {k}={v} must be finite and >= 0")
        out[k] = v
    return out


def resolve_cost_weights(spec=None):
    """'mul=4,div=16' or a dict (missing kinds keep their defaults) -> {kind: weight}."""
    w = _parse_weights(spec, COST_WEIGHTS, "--cost-weights")
    if not any(w.values()):
        raise ArithSpecError("--cost-weights: at least one weight must be positive")
    return w


def resolve_omega_weights(spec=None):
    """'Q=1,P=1,C=0' or a dict -> {term: weight}."""
    return _parse_weights(spec, OMEGA_WEIGHTS, "--omega-weights")


def kernel_ops(program, op):
    """Integer ops per output element of a compiled kernel op, by kind, from kernel.cost() with
    the op's own plan and shape (row length = the last axis)."""
    kernel = get_kernel(op.attrs["family"], op.attrs["kernel"])
    out = program.tensors[op.outputs[0]]
    shape = out.shape
    plan = KernelPlan(kernel.name, op.consts, program.tensors[op.inputs[0]].fmt, out.fmt, out.scale,
                      op.attrs.get("info", {}))
    offer = {"row_len": int(shape[-1]), "row": int(shape[-1]), "plan": plan,
             "rowmax": bool(op.consts.get("rowmax", True))}
    params = inspect.signature(kernel.cost).parameters
    ops = kernel.cost(**{k: v for k, v in offer.items() if k in params})
    unknown = set(ops) - set(OP_KINDS)
    if unknown:
        raise ArithSpecError(f"{kernel.name}.cost() reports op kinds {sorted(unknown)} that have no weight")
    return {k: float(ops.get(k, 0.0)) for k in OP_KINDS}


def weighted(ops, weights):
    return sum(weights[k] * v for k, v in ops.items())


def program_cost(program, weights=None):
    """Per image: weighted integer ops of the non-linear kernels, and the matmuls' bit operations
    (MACs x operand bits x operand bits) in millions."""
    weights = weights or COST_WEIGHTS
    nl = 0.0
    bops = 0
    for op in program.ops:
        if op.kind in FAMILIES:
            elements = int(np.prod(program.tensors[op.outputs[0]].shape))
            nl += weighted(kernel_ops(program, op), weights) * elements
        elif op.kind in ("linear", "patch_embed"):
            out = program.tensors[op.outputs[0]].shape
            w = op.consts["weight"]
            macs = int(np.prod(out[:-1])) * w.shape[0] * w.shape[1]
            bops += macs * program.tensors[op.inputs[0]].fmt.bits * int(op.attrs["weight_fmt"]["bits"])
        elif op.kind in ("attn_scores", "attn_context"):
            a, b = (program.tensors[t] for t in op.inputs)
            inner = a.shape[-1] if op.kind == "attn_scores" else b.shape[-2]
            macs = int(np.prod(a.shape[:-1])) * inner * (b.shape[-2] if op.kind == "attn_scores" else b.shape[-1])
            bops += macs * a.fmt.bits * b.fmt.bits
    return {"nonlinear_ops": nl, "matmul_mbops": bops / 1e6}


# --- layers, overrides, plans -------------------------------------------------------------------------

def nonlinear_layers(graph):
    """[(node name, family)] of every Softmax, GELU and LayerNorm node, in graph order."""
    return [(n.name, FAMILY_OF[n.op]) for n in graph.nodes if n.op in FAMILY_OF]


def check_overrides(graph, overrides):
    """Every overridden layer must be a non-linear node of the graph and its candidate one of that
    node's family (compile would silently ignore an unknown layer name)."""
    layers = dict(nonlinear_layers(graph))
    for layer, cand in overrides.items():
        if layer not in layers:
            near = [n for n in layers if n.split(".")[-1] == layer.split(".")[-1]][:4]
            raise PlanError(f"layer {layer!r} is not a Softmax/GELU/LayerNorm node of the model"
                            + (f" (e.g. {', '.join(near)})" if near else ""))
        if cand not in candidates(layers[layer]):
            raise PlanError(f"layer {layer!r} ({layers[layer]}): unknown candidate {cand!r}; "
                            f"candidates: {', '.join(candidates(layers[layer]))}")


def load_plan(path, graph=None):
    """{layer: candidate} of a plan written by `intsim select --out`. Checks the candidates (and,
    with `graph`, that every layer is one of its non-linear nodes)."""
    p = Path(path)
    if not p.is_file():
        raise PlanError(f"plan {p}: no such file")
    try:
        doc = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PlanError(f"plan {p}: not a readable JSON file ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("plan"), dict):
        raise PlanError(f"plan {p}: no 'plan' object mapping layers to candidates")
    if doc.get("schema", PLAN_SCHEMA) != PLAN_SCHEMA:
        raise PlanError(f"plan {p}: schema {doc.get('schema')}, expected {PLAN_SCHEMA}")
    plan = doc["plan"]
    families = {r.get("layer"): r.get("family") for r in doc.get("table", []) if isinstance(r, dict)}
    for layer, cand in plan.items():
        if not isinstance(cand, str):
            raise PlanError(f"plan {p}: layer {layer!r}: candidate must be a string, got {cand!r}")
        fams = [families[layer]] if families.get(layer) in FAMILIES else FAMILIES
        if not any(cand in candidates(f) for f in fams):
            known = sorted({c for f in fams for c in candidates(f)})
            raise PlanError(f"plan {p}: layer {layer!r}: unknown candidate {cand!r}; candidates: "
                            f"{', '.join(known)}")
    if graph is not None:
        try:
            check_overrides(graph, plan)
        except PlanError as e:
            raise PlanError(f"plan {p}: {e}") from None
    return dict(plan)


# --- measuring Q, P, C ------------------------------------------------------------------------------------

@dataclass
class SelectContext:
    """Shared by the variant runs (shipped once per worker)."""
    graph: object
    observers: dict
    config: dict            # the baseline QuantConfig as a dict
    images: np.ndarray      # uint8 selection images (from the calibration split)
    layers: list            # [(layer, family)]
    cost_weights: dict
    batch: int = 64


def _run_capture(program, images, names, batch):
    """Integer logits (dequantized) and the integer outputs of the named ops, over all images."""
    from . import execute
    from .pipeline import to_model_input
    logits, caps = [], {n: [] for n in names}

    def observe(op, ins, outs):
        if op.name in caps:
            caps[op.name].append(np.array(outs[0]))

    for i in range(0, len(images), batch):
        logits.append(execute.run(program, to_model_input(images[i:i + batch]), observe=observe))
    return np.concatenate(logits), {n: np.concatenate(v) for n, v in caps.items()}


def _measure_variant(ctx: SelectContext, item):
    """item = (layer, candidate): compile the baseline with that one override and run it;
    item = None: the baseline itself, capturing every non-linear layer's output."""
    from . import pipeline as ip
    from .quantize import QuantConfig
    cfg = dict(ctx.config)
    if item is not None:
        cfg["overrides"] = {**cfg.get("overrides", {}), item[0]: item[1]}
    program = ip.compile(ctx.graph, ctx.observers, QuantConfig.from_dict(cfg))
    names = [layer for layer, _ in ctx.layers] if item is None else [item[0]]
    logits, caps = _run_capture(program, ctx.images, names, ctx.batch)
    layers = {}
    for name in names:
        op = program.op(name)
        info = program.tensors[op.outputs[0]]
        ops = kernel_ops(program, op)
        layers[name] = {"candidate": op.attrs["kernel"], "out": caps[name], "scale": info.scale,
                        "ops": ops, "cost": weighted(ops, ctx.cost_weights),
                        "elements": int(np.prod(info.shape))}
    return {"logits": logits, "layers": layers}


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def kl_divergence(ref_logits, test_logits):
    """Mean over images of KL(softmax(ref) || softmax(test)), in nats."""
    lp, lq = _log_softmax(ref_logits), _log_softmax(test_logits)
    return float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=1)))


def _float_outputs(graph, images, names, batch):
    from .float_ref import run_float
    from .pipeline import to_model_input
    caps, logits = {n: [] for n in names}, []
    layer_of = {n.outputs[0]: n.name for n in graph.nodes if n.name in caps}   # tensor -> layer

    def observe(tensor, arr):
        if tensor in layer_of:
            caps[layer_of[tensor]].append(np.array(arr, dtype=np.float32))

    for i in range(0, len(images), batch):
        logits.append(run_float(graph, to_model_input(images[i:i + batch]), observe=observe))
    return np.concatenate(logits).astype(np.float64), {n: np.concatenate(v) for n, v in caps.items()}


def measure(graph, observers, images, config, cost_weights=None, workers=1, scheduler=None,
            progress=None, batch=64, layers=None):
    """Q, P, C of every (non-linear layer, candidate): the table `choose` ranks. The float model
    and the baseline program run once; each other candidate is one variant program.
    layers: only these layer names (default: every Softmax, GELU and LayerNorm node)."""
    from .pipeline import sqnr_db
    from .sweep import run_tasks, Bar, memo_observers
    known = nonlinear_layers(graph)
    if layers is not None:
        unknown = sorted(set(layers) - {name for name, _ in known})
        if unknown:
            raise PlanError(f"layer {unknown[0]!r} is not a Softmax/GELU/LayerNorm node of the model")
        known = [(name, fam) for name, fam in known if name in set(layers)]
    layers = known
    observers = memo_observers(observers)
    if not layers:
        raise ArithSpecError("the model has no Softmax, GELU or LayerNorm layer to select for")
    weights = resolve_cost_weights(cost_weights)
    check_overrides(graph, config.overrides)
    ctx = SelectContext(graph, observers, config.to_dict(), images, layers, weights, batch)
    ref_logits, ref_out = _float_outputs(graph, images, [l for l, _ in layers], batch)
    base = _measure_variant(ctx, None)
    base_kl = kl_divergence(ref_logits, base["logits"])
    base_mse = float(np.mean((ref_logits - base["logits"]) ** 2))
    rows = {}

    def record(item, res):
        for layer, m in res["layers"].items():
            deq = m["out"].astype(np.float64) * np.asarray(m["scale"], dtype=np.float64)
            ref = ref_out[layer]
            is_base = item is None
            rows[(layer, m["candidate"])] = {
                "layer": layer, "family": dict(layers)[layer], "candidate": m["candidate"],
                "baseline": is_base, "q_db": float(sqnr_db(ref, deq)),
                "mse": float(np.mean((ref - deq) ** 2)),
                "p_kl": base_kl if is_base else kl_divergence(ref_logits, res["logits"]),
                "logit_mse": base_mse if is_base else float(np.mean((ref_logits - res["logits"]) ** 2)),
                "c": m["cost"], "ops": m["ops"], "elements": m["elements"]}

    record(None, base)
    todo = [(layer, cand) for layer, fam in layers for cand in candidates(fam)
            if (layer, cand) not in rows]
    bar = Bar(len(todo), "select", progress)
    run_tasks(_measure_variant, ctx, todo, workers, scheduler,
              lambda item, res: (record(item, res), bar.step(f"{item[0]} {item[1]}")))
    order = {(layer, cand): i for i, (layer, cand) in
             enumerate((layer, c) for layer, fam in layers for c in candidates(fam))}
    return sorted(rows.values(), key=lambda r: order[(r["layer"], r["candidate"])])


# --- Omega ------------------------------------------------------------------------------------------------

def choose(table, omega_weights=None):
    """Add the gaps and Omega to every row (copies) and pick each layer's minimum.
    Returns (plan {layer: candidate}, rows). Ties go to the cheaper, then the earlier candidate."""
    w = resolve_omega_weights(omega_weights)
    by_layer = {}
    for r in table:
        by_layer.setdefault(r["layer"], []).append(dict(r))
    plan, out = {}, []
    for layer, rows in by_layer.items():
        q = [min(r["q_db"], Q_CAP_DB) for r in rows]
        p = [max(r["p_kl"], P_FLOOR) for r in rows]
        c = [r["c"] for r in rows]
        if min(c) <= 0:
            raise ArithSpecError(f"layer {layer!r}: a candidate has cost {min(c)} <= 0 under these "
                                 f"cost weights; Omega needs positive costs")
        for r, qi, pi, ci in zip(rows, q, p, c):
            r["q_gap"] = max(q) - qi
            r["p_gap"] = 10 * math.log10(pi / min(p))
            r["c_gap"] = 10 * math.log10(ci / min(c))
            r["omega"] = w["Q"] * r["q_gap"] + w["P"] * r["p_gap"] + w["C"] * r["c_gap"]
        best = min(range(len(rows)), key=lambda i: (round(rows[i]["omega"], 9), rows[i]["c"], i))
        for i, r in enumerate(rows):
            r["chosen"] = i == best
        plan[layer] = rows[best]["candidate"]
        out.extend(rows)
    return plan, out


def plan_cost(table, plan):
    """Weighted non-linear ops per image of a plan (from the table's per-element costs)."""
    cost = {(r["layer"], r["candidate"]): r["c"] * r["elements"] for r in table}
    return sum(cost[(layer, cand)] for layer, cand in plan.items())


def plan_document(plan, rows, config, graph, data_name, n_calib, n_select, omega_weights, cost_weights):
    return {"schema": PLAN_SCHEMA, "model": graph.meta.get("path"),
            "model_sha256": graph.meta.get("sha256"), "data": data_name, "calib": n_calib,
            "select_images": n_select, "config": {k: v for k, v in config.to_dict().items()
                                                  if k != "overrides"},
            "omega_weights": resolve_omega_weights(omega_weights),
            "cost_weights": resolve_cost_weights(cost_weights), "plan": plan,
            "nonlinear_ops_per_image": plan_cost(rows, plan), "table": rows}


def format_table(rows):
    head = f"{'layer':<24}{'candidate':<18}{'Q dB':>7}{'MSE':>10}{'P (KL)':>10}{'C':>7}{'Omega':>8}  chosen"
    lines = [head, "-" * len(head)]
    last = None
    for r in rows:
        layer = r["layer"] if r["layer"] != last else ""
        last = r["layer"]
        lines.append(f"{layer:<24}{r['candidate']:<18}{r['q_db']:>7.2f}{r['mse']:>10.3g}{r['p_kl']:>10.3g}"
                     f"{r['c']:>7.1f}{r['omega']:>8.2f}  {'*' if r['chosen'] else ''}")
    return "\n".join(lines)


@command("select", "choose each non-linear layer's approximation by the unified metric Omega")
def cmd_select(argv):
    p = argparse.ArgumentParser(prog="intsim select", description="Measure Q (layer SQNR), P (logit "
                                "KL) and C (integer ops) of every candidate of every Softmax/GELU/"
                                "LayerNorm layer, pick each layer's best Omega, write a plan.")
    add_model_args(p)
    add_quant_args(p)
    p.add_argument("--select-images", type=int, default=128,
                   help="calibration images Q and P are measured on (default 128)")
    p.add_argument("--omega-weights", default=None, metavar="Q=1,P=1,C=1",
                   help="weights of Omega's three terms (0 drops a term)")
    p.add_argument("--cost-weights", default=None, metavar="KIND=W,...",
                   help="integer-op weights (default mul=4,div=16,shift=1,add=1,cmp=1)")
    p.add_argument("--workers", type=int, default=None, help="local processes (default all cores)")
    p.add_argument("--scheduler", "--dask", dest="scheduler", default=None, metavar="ADDRESS|local")
    p.add_argument("--out", default=None, help="write the plan (JSON) here")
    p.add_argument("--json", action="store_true", help="print the plan document as JSON")
    a = p.parse_args(argv)
    from . import pipeline as ip
    if a.select_images < 1:
        raise ArithSpecError(f"--select-images must be >= 1, got {a.select_images}")
    omega_w = resolve_omega_weights(a.omega_weights)
    cost_w = resolve_cost_weights(a.cost_weights)
    t0 = time.perf_counter()
    graph = ip.load(a.model)
    data = ip.open_data(a.data)
    cfg = config_from_args(a)
    calib = data.calibration(a.calib)
    observers = ip.calibrate(graph, calib)
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
    print(f"non-linear cost: baseline {plan_cost(rows, base):.4g}, selected {doc['nonlinear_ops_per_image']:.4g} "
          f"weighted ops/image")
    if a.out:
        print(f"wrote {a.out} (use: intsim run --plan {a.out})")
    return 0
