"""Per-layer choice of the non-linear approximation by the unified metric Omega
(docs/selection.md).

For every Softmax, GELU and LayerNorm node and every candidate of its family:
  Q  SQNR (dB) of the layer's integer output against float, on the selection images;
  P  the perturbation at the model output: mean KL(softmax(float logits) || softmax(integer
     logits)) of the program that differs from the baseline in that layer's candidate only;
  C  integer operations per element from the kernel's cost(), weighted (cost.COST_WEIGHTS).
Each term becomes a gap in dB to the layer's best candidate, and Omega is their weighted sum
(lower is better):
  Omega = wQ (Q* - Q) + wP 10 log10(P / P*) + wC 10 log10(C / C*)
i.e. 10 log10 of the product of the candidate's noise-power, perturbation and cost ratios.

The float model and the baseline program run once; each variant program is compiled from the same
observers and run on the same images (in parallel through tasks.run_tasks).
"""
from dataclasses import dataclass

import numpy as np

from .. import metrics
from .. import pipeline as ip
from ..arith import ArithSpecError
from ..compile import nonlinear_layers
from ..errors import PlanError
from ..execute import Executable
from ..float_ref import run_float
from ..images import model_input
from ..kernels import candidates
from ..progress import bar
from ..quantize import QuantConfig
from .cost import kernel_ops, parse_weights, resolve_cost_weights, weighted
from .plans import check_overrides
from .tasks import run_tasks

OMEGA_WEIGHTS = {"Q": 1.0, "P": 1.0, "C": 1.0}
Q_CAP_DB = 120.0        # an exact layer (no noise) counts as 120 dB: keeps the gaps finite
P_FLOOR = 1e-12         # KL below this is numerically zero


def resolve_omega_weights(spec=None):
    """'Q=1,P=1,C=0' or a dict -> {term: weight}."""
    return parse_weights(spec, OMEGA_WEIGHTS, "--omega-weights")


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
    logits, caps = [], {n: [] for n in names}
    exe = Executable(program)

    def observe(op, ins, outs):
        if op.name in caps:
            caps[op.name].append(np.array(outs[0]))

    for i in range(0, len(images), batch):
        logits.append(exe.infer(model_input(images[i:i + batch]), observe=observe))
    return np.concatenate(logits), {n: np.concatenate(v) for n, v in caps.items()}


def _measure_variant(ctx: SelectContext, item):
    """item = (layer, candidate): compile the baseline with that one override and run it;
    item = None: the baseline itself, capturing every non-linear layer's output."""
    cfg = dict(ctx.config)
    if item is not None:
        cfg["overrides"] = {**cfg.get("overrides", {}), item[0]: item[1]}
    program = ip.compile(ctx.graph, ctx.observers, QuantConfig.from_dict(cfg), progress=False)
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


def _float_outputs(graph, images, names, batch):
    caps, logits = {n: [] for n in names}, []
    layer_of = {n.outputs[0]: n.name for n in graph.nodes if n.name in caps}   # tensor -> layer

    def observe(tensor, arr):
        if tensor in layer_of:
            caps[layer_of[tensor]].append(np.array(arr, dtype=np.float32))

    for i in range(0, len(images), batch):
        logits.append(run_float(graph, model_input(images[i:i + batch]), observe=observe))
    return np.concatenate(logits).astype(np.float64), {n: np.concatenate(v) for n, v in caps.items()}


def _selected_layers(graph, layers):
    known = nonlinear_layers(graph)
    if layers is not None:
        unknown = sorted(set(layers) - {name for name, _ in known})
        if unknown:
            raise PlanError(f"layer {unknown[0]!r} is not a Softmax/GELU/LayerNorm node of the model")
        known = [(name, fam) for name, fam in known if name in set(layers)]
    if not known:
        raise ArithSpecError("the model has no Softmax, GELU or LayerNorm layer to select for")
    return known


def _row(layer, family, m, baseline, ref, p_kl, logit_mse):
    deq = m["out"].astype(np.float64) * np.asarray(m["scale"], dtype=np.float64)
    return {"layer": layer, "family": family, "candidate": m["candidate"], "baseline": baseline,
            "q_db": float(metrics.sqnr_db(ref, deq)), "mse": float(np.mean((ref - deq) ** 2)),
            "p_kl": p_kl, "logit_mse": logit_mse, "c": m["cost"], "ops": m["ops"],
            "elements": m["elements"]}


def measure(graph, observers, images, config, cost_weights=None, workers=1, scheduler=None,
            progress=None, batch=64, layers=None):
    """Q, P, C of every (non-linear layer, candidate): the table `choose` ranks. The float model
    and the baseline program run once; each other candidate is one variant program.
    layers: only these layer names (default: every Softmax, GELU and LayerNorm node)."""
    layers = _selected_layers(graph, layers)
    weights = resolve_cost_weights(cost_weights)
    check_overrides(graph, config.overrides)
    ctx = SelectContext(graph, observers, config.to_dict(), images, layers, weights, batch)
    ref_logits, ref_out = _float_outputs(graph, images, [name for name, _ in layers], batch)
    family = dict(layers)
    rows = {}

    def record(item, res):
        p_kl = metrics.kl_divergence(ref_logits, res["logits"])
        logit_mse = float(np.mean((ref_logits - res["logits"]) ** 2))
        for layer, m in res["layers"].items():
            rows[(layer, m["candidate"])] = _row(layer, family[layer], m, item is None, ref_out[layer],
                                                 p_kl, logit_mse)

    with bar(None, "select", progress, "variant") as b:     # the total is known after the baseline
        record(None, _measure_variant(ctx, None))            # the baseline program: one per layer
        todo = [(layer, cand) for layer, fam in layers for cand in candidates(fam)
                if (layer, cand) not in rows]
        b.total = 1 + len(todo)
        b.update(1)
        run_tasks(_measure_variant, ctx, todo, workers, scheduler,
                  lambda item, res: (record(item, res), b.update(1)))
    order = {(layer, cand): i for i, (layer, cand) in
             enumerate((layer, c) for layer, fam in layers for c in candidates(fam))}
    return sorted(rows.values(), key=lambda r: order[(r["layer"], r["candidate"])])


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
            r["p_gap"] = metrics.db(pi / min(p))
            r["c_gap"] = metrics.db(ci / min(c))
            r["omega"] = w["Q"] * r["q_gap"] + w["P"] * r["p_gap"] + w["C"] * r["c_gap"]
        best = min(range(len(rows)), key=lambda i: (round(rows[i]["omega"], 9), rows[i]["c"], i))
        for i, r in enumerate(rows):
            r["chosen"] = i == best
        plan[layer] = rows[best]["candidate"]
        out.extend(rows)
    return plan, out




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


