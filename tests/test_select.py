"""intsim.select: Omega, costs, plans, and the Q/P measurement on the shipped model (tiny sizes)."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from intsim import compile, errors, metrics
from intsim.experiment import cost, plans
from intsim.experiment import select as sel
from intsim.arith import ArithSpecError
from intsim.kernels import DEFAULTS, candidates
from intsim.quantize import QuantConfig


def _row(layer, cand, q, p, c, family="gelu", elements=10):
    return {"layer": layer, "family": family, "candidate": cand, "q_db": q, "mse": 0.0, "p_kl": p,
            "logit_mse": 0.0, "c": c, "ops": {}, "elements": elements, "baseline": False}


# --- Omega ------------------------------------------------------------------------------------------

def test_omega_trades_accuracy_against_cost():
    # A: 3 dB better SQNR; B: half the cost (3.01 dB): B wins by 0.01 dB; without C, A wins
    table = [_row("L", "A", 30.0, 0.01, 10.0), _row("L", "B", 27.0, 0.01, 5.0)]
    plan, rows = sel.choose(table)
    assert plan == {"L": "B"}
    a, b = rows
    assert a["c_gap"] == pytest.approx(10 * math.log10(2)) and a["q_gap"] == 0
    assert b["q_gap"] == pytest.approx(3.0) and b["c_gap"] == 0
    assert a["omega"] - b["omega"] == pytest.approx(10 * math.log10(2) - 3)
    assert sel.choose(table, {"C": 0})[0] == {"L": "A"}
    assert sel.choose(table, "Q=0")[0] == {"L": "B"}


def test_omega_perturbation_term_is_a_power_ratio_in_db():
    table = [_row("L", "A", 30.0, 0.04, 10.0), _row("L", "B", 30.0, 0.01, 10.0)]
    plan, rows = sel.choose(table)
    assert plan == {"L": "B"}
    assert rows[0]["p_gap"] == pytest.approx(10 * math.log10(4))
    assert sel.choose(table, {"P": 0})[0] == {"L": "A"}     # all equal: tie goes to the first


def test_omega_ties_prefer_cheaper_and_layers_are_independent():
    table = [_row("L1", "A", 30.0, 0.01, 10.0), _row("L1", "B", 30.0, 0.01, 10.0),
             _row("L2", "A", 20.0, 0.02, 8.0), _row("L2", "B", 20.0, 0.02, 4.0)]
    plan, rows = sel.choose(table, {"C": 0})
    assert plan == {"L1": "A", "L2": "B"}               # equal Omega: the cheaper one
    assert sum(r["chosen"] for r in rows) == 2


def test_omega_caps_exact_layers_and_rejects_zero_cost():
    plan, rows = sel.choose([_row("L", "A", math.inf, 0.0, 1.0), _row("L", "B", 100.0, 0.0, 1.0)])
    assert plan == {"L": "A"} and rows[1]["q_gap"] == pytest.approx(sel.Q_CAP_DB - 100.0)
    assert all(math.isfinite(r["omega"]) for r in rows)
    with pytest.raises(ArithSpecError, match="cost"):
        sel.choose([_row("L", "A", 1.0, 1.0, 0.0)])


finite = st.floats(0.1, 80.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(finite, st.floats(1e-6, 1.0), st.floats(1.0, 100.0)), min_size=2, max_size=4),
       st.tuples(finite, st.floats(1e-6, 1.0), st.floats(1.0, 100.0)),
       st.fixed_dictionaries({k: st.sampled_from([0.0, 0.5, 1.0, 2.0]) for k in "QPC"}))
def test_omega_differences_do_not_depend_on_other_candidates(cands, extra, w):
    """Log-ratio normalisation: adding a candidate shifts every Omega of the layer by the same
    amount, so it never reorders the others (min-max or rank normalisation can)."""
    table = [_row("L", f"c{i}", *c) for i, c in enumerate(cands)]
    _, before = sel.choose(table, w)
    _, after = sel.choose(table + [_row("L", "new", *extra)], w)
    d0 = [r["omega"] - before[0]["omega"] for r in before]
    d1 = [r["omega"] - after[0]["omega"] for r in after[:len(before)]]
    assert d1 == pytest.approx(d0, abs=1e-9)
    assert all(r["omega"] >= -1e-9 for r in after)            # gaps to the best are never negative


@pytest.mark.parametrize("spec, err", [("mul=x", "finite number >= 0, got 'x'"), ("mul=-1", ">= 0"), ("pow=2", "unknown"),
                                       ("mul", "NAME=VALUE"), ("mul=0,div=0,shift=0,add=0,cmp=0", "positive")])
def test_cost_weight_errors(spec, err):
    with pytest.raises(ArithSpecError, match=err):
        cost.resolve_cost_weights(spec)


def test_cost_weights_defaults_and_override():
    w = cost.resolve_cost_weights("mul=2, div=8")
    assert w == {**cost.COST_WEIGHTS, "mul": 2.0, "div": 8.0}
    assert cost.weighted({"mul": 1, "div": 1, "shift": 1, "add": 1, "cmp": 1}, cost.COST_WEIGHTS) == 23.0
    with pytest.raises(ArithSpecError, match="unknown"):
        sel.resolve_omega_weights("R=1")


def test_kl_divergence():
    a = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]])
    assert metrics.kl_divergence(a, a) == pytest.approx(0.0, abs=1e-15)
    assert metrics.kl_divergence(a, a + 7.0) == pytest.approx(0.0, abs=1e-12)   # shift-invariant
    b = a[:, ::-1]
    p = np.exp(a) / np.exp(a).sum(1, keepdims=True)
    q = np.exp(b) / np.exp(b).sum(1, keepdims=True)
    assert metrics.kl_divergence(a, b) == pytest.approx(np.mean(np.sum(p * np.log(p / q), 1)))


# --- plans ----------------------------------------------------------------------------------------------

def _write(tmp_path, doc, name="plan.json"):
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return p


def test_load_plan_errors(tmp_path):
    with pytest.raises(errors.PlanError, match="no such file"):
        plans.load_plan(tmp_path / "missing.json")
    with pytest.raises(errors.PlanError, match="JSON"):
        plans.load_plan(_write(tmp_path, "{not json"))
    with pytest.raises(errors.PlanError, match="'plan'"):
        plans.load_plan(_write(tmp_path, {"layers": {}}))
    with pytest.raises(errors.PlanError, match="unknown candidate 'fast-gelu'"):
        plans.load_plan(_write(tmp_path, {"plan": {"blocks.0.mlp.act": "fast-gelu"}}))
    # a candidate of another family than the table records for the layer
    doc = {"plan": {"blocks.0.mlp.act": "ibert-softmax"},
           "table": [{"layer": "blocks.0.mlp.act", "family": "gelu"}]}
    with pytest.raises(errors.PlanError, match="unknown candidate 'ibert-softmax'"):
        plans.load_plan(_write(tmp_path, doc))
    with pytest.raises(errors.PlanError, match="string"):
        plans.load_plan(_write(tmp_path, {"plan": {"x": 3}}))


def test_load_plan_roundtrip(tmp_path):
    plan = {"blocks.0.mlp.act": "ibert-gelu", "norm": "ivit-layernorm"}
    assert plans.load_plan(_write(tmp_path, {"schema": 1, "plan": plan})) == plan


# --- on the shipped model ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model():
    import intsim.pipeline as ip
    graph = ip.load()
    data = ip.open_data()
    calib = data.calibration(16)
    return graph, ip.calibrate(graph, calib), calib


def test_plan_layers_checked_against_the_graph(model, tmp_path):
    graph, _, _ = model
    layers = dict(compile.nonlinear_layers(graph))
    assert sum(f == "softmax" for f in layers.values()) == 4 and layers["norm"] == "layernorm"
    good = _write(tmp_path, {"plan": {"blocks.1.attn.softmax": "ibert-softmax"}})
    assert plans.load_plan(good, graph) == {"blocks.1.attn.softmax": "ibert-softmax"}
    bad = _write(tmp_path, {"plan": {"blocks.9.mlp.act": "ibert-gelu"}}, "bad.json")
    with pytest.raises(errors.PlanError, match="blocks.9.mlp.act.*not a Softmax, GELU or LayerNorm"):
        plans.load_plan(bad, graph)
    wrong = _write(tmp_path, {"plan": {"blocks.0.norm1": "ibert-gelu"}}, "wrong.json")
    with pytest.raises(errors.PlanError, match="unknown candidate 'ibert-gelu'"):
        plans.load_plan(wrong, graph)


def test_program_cost_counts_kernels_and_matmuls(model):
    import intsim.pipeline as ip
    graph, obs, _ = model
    p8 = ip.compile(graph, obs, QuantConfig())
    p4 = ip.compile(graph, obs, QuantConfig(wbits=4, gelu="ibert-gelu", weight_round="nearest"))
    c8, c4 = cost.program_cost(p8), cost.program_cost(p4)
    # matmul bit-ops: only the weight operand narrows; linear MACs counted from the graph itself
    macs = 0
    for n in graph.nodes:
        if n.op == "Linear":
            tokens = 1 if n.name == "head" else 50
            macs += tokens * n.params["weight"].shape[0] * n.params["weight"].shape[1]
        elif n.op == "PatchEmbed":
            macs += 49 * int(np.prod(n.params["weight"].shape))
    assert c8["matmul_mbops"] - c4["matmul_mbops"] == pytest.approx(macs * 8 * (8 - 4) / 1e6)
    # non-linear ops: only the 4 GELU layers changed, each (50 tokens x 192) elements
    op8, op4 = p8.op("blocks.0.mlp.act"), p4.op("blocks.0.mlp.act")
    diff = cost.weighted(cost.kernel_ops(p8, op8), cost.COST_WEIGHTS) - cost.weighted(cost.kernel_ops(p4, op4), cost.COST_WEIGHTS)
    assert diff != 0
    assert c8["nonlinear_ops"] - c4["nonlinear_ops"] == pytest.approx(4 * 50 * 192 * diff)


@pytest.mark.slow
def test_measure_matches_independent_measurements(model):
    """Q of the baseline equals analysis.tensor_sqnr; P of a variant equals the KL of a separately
    compiled program with that one override; C follows kernel.cost."""
    import intsim.pipeline as ip
    from intsim.analysis import tensor_sqnr
    from intsim.float_ref import run_float
    graph, obs, calib = model
    images = calib[:6]
    layers = ["blocks.1.mlp.act", "blocks.2.norm1"]
    table = sel.measure(graph, obs, images, QuantConfig(), layers=layers)
    assert [(r["layer"], r["candidate"]) for r in table] == \
        [(l, c) for l in layers for c in candidates("gelu" if "act" in l else "layernorm")]
    base = ip.compile(graph, obs, QuantConfig())
    sq = tensor_sqnr(graph, base, images)
    f = run_float(graph, ip.to_model_input(images)).astype(np.float64)
    for r in table:
        fam = r["family"]
        if r["candidate"] == DEFAULTS[fam]:
            assert r["baseline"] and r["q_db"] == pytest.approx(sq[r["layer"]], abs=1e-6)
            assert r["p_kl"] == pytest.approx(metrics.kl_divergence(f, ip.run_integer(base, images)))
    var = next(r for r in table if r["candidate"] == "ibert-gelu")
    prog = ip.compile(graph, obs, QuantConfig(overrides={"blocks.1.mlp.act": "ibert-gelu"}))
    assert var["p_kl"] == pytest.approx(metrics.kl_divergence(f, ip.run_integer(prog, images)), rel=1e-9)
    assert var["q_db"] == pytest.approx(tensor_sqnr(graph, prog, images)["blocks.1.mlp.act"], abs=1e-6)
    assert var["c"] == pytest.approx(cost.weighted(cost.kernel_ops(prog, prog.op("blocks.1.mlp.act")), cost.COST_WEIGHTS))
    assert var["elements"] == 50 * 192
    with pytest.raises(errors.PlanError, match="not a Softmax"):
        sel.measure(graph, obs, images, QuantConfig(), layers=["head"])


# `python -m intsim.cli` would run cli as __main__, a module the commands do not register in
INTSIM = [sys.executable, "-c", "import sys; from intsim.cli import main; sys.exit(main(sys.argv[1:]))"]


@pytest.mark.slow
def test_select_cli_writes_a_plan_that_run_uses(tmp_path):
    plan = tmp_path / "plan.json"
    r = subprocess.run([*INTSIM, "select", "--calib", "16", "--select-images", "4",
                        "--workers", "1", "--out", str(plan)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads(plan.read_text())
    assert len(doc["plan"]) == 17 and doc["config"]["wbits"] == 8
    assert sum(row["chosen"] for row in doc["table"]) == 17
    assert "Omega" in r.stdout and "chosen" in r.stdout
    r = subprocess.run([*INTSIM, "run", "--plan", str(plan), "--calib", "16",
                        "--limit", "20", "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["config"]["overrides"] == doc["plan"]
