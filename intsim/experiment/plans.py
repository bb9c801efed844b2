"""Selection plan files: {layer: candidate} chosen per non-linear layer (`intsim select --out`),
read back by `--plan` (docs/selection.md)."""
import json
from pathlib import Path

from ..compile import check_layer_overrides
from ..errors import CompileError, PlanError
from ..kernels import FAMILIES, candidates
from .cost import resolve_cost_weights

PLAN_SCHEMA = 1


def check_overrides(graph, overrides):
    """compile's check of per-layer overrides, as a plan error."""
    try:
        check_layer_overrides(graph, overrides)
    except CompileError as e:
        raise PlanError(str(e)) from None


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


def plan_cost(table, plan):
    """Weighted non-linear ops per image of a plan (from the table's per-element costs)."""
    cost = {(r["layer"], r["candidate"]): r["c"] * r["elements"] for r in table}
    return sum(cost[(layer, cand)] for layer, cand in plan.items())


def plan_document(plan, rows, config, graph, data_name, n_calib, n_select, omega_weights, cost_weights):
    """The plan file: the choice, its settings and weights (omega_weights resolved), and the table."""
    return {"schema": PLAN_SCHEMA, "model": graph.meta.get("path"),
            "model_sha256": graph.meta.get("sha256"), "data": data_name, "calib": n_calib,
            "select_images": n_select, "config": {k: v for k, v in config.to_dict().items()
                                                  if k != "overrides"},
            "omega_weights": omega_weights, "cost_weights": resolve_cost_weights(cost_weights),
            "plan": plan, "nonlinear_ops_per_image": plan_cost(rows, plan), "table": rows}
