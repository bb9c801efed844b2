"""intsim.sweep: grids, the parallel runner (local processes, Dask), resume, results, plots."""
import csv
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from intsim import errors
from intsim.experiment import plots, store, tasks
from intsim.experiment import sweep as sw
from intsim.quantize import QuantConfig

INTSIM = [sys.executable, "-c", "import sys; from intsim.cli import main; sys.exit(main(sys.argv[1:]))"]


def test_grid_points_and_keys():
    pts = sw.grid_points({"wbits": [8, 4], "abits": [8, 7, 6], "gelu": ["poly-gelu"]})
    assert len(pts) == 6 and pts[0] == {"wbits": 8, "abits": 8, "gelu": "poly-gelu"}
    assert pts[-1] == {"wbits": 4, "abits": 6, "gelu": "poly-gelu"}
    keys = {store.point_key(p) for p in pts}
    assert len(keys) == 6
    # order of settings and the cosmetic label do not change a point's identity
    assert store.point_key({"abits": 8, "wbits": 8, "label": "x"}) == store.point_key({"wbits": 8, "abits": 8})
    assert store.point_key({"wbits": 8, "overrides": {"norm": "ivit-layernorm"}}) != store.point_key({"wbits": 8})
    # the key is the complete configuration: a default spelled out is the same point, and the
    # shared base settings are part of it
    assert store.point_key({"wbits": QuantConfig().wbits}) == store.point_key({})
    assert store.point_key({"wbits": 4}, {"act_calib": "minmax"}) != store.point_key({"wbits": 4})
    assert store.point_config({"act_calib": "minmax"}, {"wbits": 4, "label": "x"}) == \
        QuantConfig(wbits=4, act_calib="minmax")


def test_run_tasks_local_processes_match_in_process():
    got1, got2 = {}, {}
    tasks.run_tasks(pow, 3, [1, 2, 5], workers=1, on_result=got1.__setitem__)
    tasks.run_tasks(pow, 3, [1, 2, 5], workers=2, on_result=got2.__setitem__)
    assert got1 == got2 == {1: 3, 2: 9, 5: 243}
    with pytest.raises(errors.ExperimentError):
        tasks.run_tasks(pow, 3, [1], workers=-1)


def test_run_tasks_propagates_worker_errors():
    with pytest.raises(ZeroDivisionError):
        tasks.run_tasks(divmod, 1, [1, 0, 2], workers=2)


def test_run_tasks_on_a_dask_local_cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        got = {}
        tasks.run_tasks(pow, 2, [3, 4], scheduler=cluster.scheduler_address, on_result=got.__setitem__)
    assert got == {3: 8, 4: 16}


def test_store_refuses_another_sweeps_folder(tmp_path):
    store.SweepStore(tmp_path, {"images": 10, "base": {}})
    store.SweepStore(tmp_path, {"images": 10, "base": {}})          # same: resumes
    with pytest.raises(errors.SweepError, match="images"):
        store.SweepStore(tmp_path, {"images": 20, "base": {}})


def test_sqnr_grid_and_pick_row():
    blocks, subs, mat = plots.sqnr_grid({"blocks.0.norm1": 30.0, "blocks.1.norm1": 20.0,
                                      "blocks.1.mlp.act": 10.0, "head": 5.0, "image": np.inf})
    assert blocks == [0, 1] and subs == ["norm1", "mlp.act"]
    assert mat[1, 1] == 10.0 and np.isnan(mat[0, 1])
    rows = [{"wbits": 8, "abits": 8, "int_top1": 0.9, "agreement": 1.0, "error": ""},
            {"wbits": 4, "abits": 8, "int_top1": 0.7, "agreement": 0.8, "error": ""},
            {"wbits": 2, "abits": 8, "int_top1": None, "agreement": None, "error": "boom"}]
    assert sw.pick_row(rows, "worst")["wbits"] == 4
    assert sw.pick_row(rows, "best")["wbits"] == 8
    assert sw.pick_row(rows, "wbits=4")["int_top1"] == 0.7
    with pytest.raises(errors.SweepError, match="no finished point"):
        sw.pick_row(rows, "wbits=2")
    with pytest.raises(errors.SweepError, match="DIM=VALUE"):
        sw.pick_row(rows, "wbits")


# --- on the shipped model (10 images) ---------------------------------------------------------------

@pytest.fixture(scope="module")
def ctx():
    c, context = sw.prepare(calib=16, limit=10)
    return c, context


def test_evaluate_point_and_error_rows(ctx):
    import intsim.pipeline as ip
    c, _ = ctx
    row = sw.evaluate_point(c, {"wbits": 4})
    prog = ip.compile(c.graph, c.observers, QuantConfig(wbits=4))
    ref = ip.evaluate(c.graph, prog, c.images, c.labels)
    for k in ("float_top1", "int_top1", "agreement"):
        assert row[k] == pytest.approx(ref[k]), k
    assert row["logit_sqnr_db"] == pytest.approx(ref["logit_sqnr_db"], rel=1e-9)
    assert row["error"] == "" and row["config"]["wbits"] == 4 and row["nonlinear_ops"] > 0
    bad = sw.evaluate_point(c, {"overrides": {"blocks.0.mlp.act": "no-such-gelu"}})
    assert "no-such-gelu" in bad["error"] and "int_top1" not in bad


def test_resume_skips_finished_points_and_reruns_broken_ones(ctx, tmp_path, monkeypatch):
    c, context = ctx
    first = [{"wbits": 8}, {"wbits": 4}]
    rows, ran = sw.run_grid(c, first, tmp_path, context, workers=1)
    assert ran == 2 and len(rows) == 2
    grid = sw.grid_points({"wbits": [8, 6, 4]})
    # simulate a write cut short by a kill (a stray temp file) and a corrupt point file
    (tmp_path / "points" / ".x.json.123.tmp").write_text("{")
    st = store.SweepStore(tmp_path, context)
    st.path({"wbits": 4}).write_text('{"key": ')
    calls = []
    real = sw.evaluate_config
    monkeypatch.setattr(sw, "evaluate_config", lambda cc, cfg: calls.append(cfg) or real(cc, cfg))
    rows, ran = sw.run_grid(c, grid, tmp_path, context, workers=1)
    assert ran == 2 and sorted(cfg["wbits"] for cfg in calls) == [4, 6]      # 8 was kept
    with open(tmp_path / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [int(r["wbits"]) for r in table] == [8, 6, 4]                 # grid order
    assert set(store.csv_columns()) == set(table[0]) and table[0]["act_calib"] == "mse-top"
    assert all(r["error"] == "" and 0 <= float(r["int_top1"]) <= 1 for r in table)
    # nothing left to do: a rerun runs nothing
    assert sw.run_grid(c, grid, tmp_path, context, workers=1)[1] == 0


@pytest.mark.slow
def test_parallel_and_serial_sweeps_agree(ctx, tmp_path):
    c, context = ctx
    grid = sw.grid_points({"wbits": [8, 4], "abits": [8, 6]})
    r1, _ = sw.run_grid(c, grid, tmp_path / "a", context, workers=1)
    r2, _ = sw.run_grid(c, grid, tmp_path / "b", context, workers=2)
    for a, b in zip(r1, r2):
        diff = {k: (a[k], b[k]) for k in a if k != "seconds" and a[k] != b[k]}
        assert not diff, diff


@pytest.mark.slow
def test_plots_and_heatmap(ctx, tmp_path):
    pytest.importorskip("matplotlib")
    c, context = ctx
    rows, _ = sw.run_grid(c, sw.grid_points({"wbits": [8, 4], "abits": [8, 6]}), tmp_path, context, workers=1)
    written = plots.plot_accuracy(rows, tmp_path)
    assert sorted(p.name for p in written) == ["accuracy_vs_abits.png", "accuracy_vs_wbits.png"]
    hm = sw.write_heatmap(c, rows, tmp_path, "wbits=4,abits=6", n_images=4)
    assert hm.exists() and hm.stat().st_size > 1000
    lines = (tmp_path / "layer_sqnr.csv").read_text().splitlines()
    assert lines[0] == "tensor,sqnr_db" and any(l.startswith("blocks.3.attn.softmax,") for l in lines)


@pytest.mark.slow
def test_dask_sweep_matches_local(ctx, tmp_path):
    distributed = pytest.importorskip("distributed")
    c, context = ctx
    grid = sw.grid_points({"wbits": [8, 4]})
    local, _ = sw.run_grid(c, grid, tmp_path / "local", context, workers=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        remote, _ = sw.run_grid(c, grid, tmp_path / "dask", context, scheduler=cluster.scheduler_address)
    for a, b in zip(local, remote):
        assert a["int_top1"] == b["int_top1"] and a["logit_sqnr_db"] == b["logit_sqnr_db"]


@pytest.mark.slow
def test_cli_sweep_killed_then_resumed(tmp_path):
    out = tmp_path / "sw"
    cmd = INTSIM + ["sweep", "--wbits", "8,6,4", "--abits", "8,6", "--calib", "16", "--limit", "200",
                    "--workers", "1", "--no-plots", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while len(list((out / "points").glob("*.json"))) < 1 and time.time() - t0 < 300:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    done = len(list((out / "points").glob("*.json")))
    assert proc.returncode == 130 and "rerun the same command to resume" in err
    assert 1 <= done < 6
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert f"({6 - done} run now, {done} resumed)" in r.stdout
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 6


def test_cli_sweep_rejects_bad_grids(tmp_path):
    from intsim.cli import main
    assert main(["sweep", "--wbits", "8,1", "--out", str(tmp_path)]) == 1
    assert main(["sweep", "--gelu", "poly-gelu,nope", "--out", str(tmp_path)]) == 1
    with pytest.raises(SystemExit):
        main(["sweep", "--wbits", "8,x", "--out", str(tmp_path)])


@pytest.mark.slow
def test_cli_sweep_fixed_settings_reach_every_point(tmp_path):
    """`intsim sweep --layer-wbits / --qk-wbits / --weight-group / --bias-correction` (docs/sweep.md): every point
    is compiled with them (results.csv's columns), they are part of the folder's shared context, and
    a pattern that matches no layer is one clear error before any point runs."""
    from intsim.cli import main
    out = tmp_path / "sw"
    args = ["sweep", "--wbits", "4", "--calib", "16", "--limit", "20", "--workers", "1", "--no-plots"]
    assert main(args + ["--layer-wbits", r"attn\.qkv$=8", "--qk-wbits", "6", "--weight-group", "16",
                        "--bias-correction", "--out", str(out)]) == 0
    with open(out / "results.csv") as f:
        row, = list(csv.DictReader(f))
    assert row["layer_wbits"] == str({r"attn\.qkv$": 8}) and row["weight_group"] == "16" and row["qk_wbits"] == "6"
    assert row["bias_correction"] == "True" and float(row["matmul_mbops"]) > 0
    assert main(args + ["--out", str(out)]) == 1            # another context: refused, not mixed
    assert main(args + ["--layer-wbits", "nomatch=8", "--out", str(tmp_path / "other")]) == 1
