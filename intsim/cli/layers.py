"""`intsim layers`: where a model loses fidelity. For every integer tensor of the program, its SQNR
against its float twin through depth (the error accumulated up to there, analysis.tensor_sqnr) and,
with --local, the error its op adds on its own when fed exact inputs (analysis.local_sqnr); as a
table, JSON (--json) and a PNG (--png: a line per tensor kind over block index)."""
import json
import math

from ..analysis import local_sqnr, tensor_sqnr
from ..errors import IntsimError
from ..experiment import plots
from .args import (
    Parser,
    add_model_args,
    add_quant_args,
    build_program,
    config_from_args,
    count,
    model_label,
    writable_file,
)


def main(argv):
    p = Parser(prog="intsim layers", description="Per-tensor SQNR of the integer program against the "
                                                 "float model, through depth.")
    add_model_args(p)
    add_quant_args(p)
    p.add_argument("--limit", type=count(1), default=16, help="evaluation images (default 16)")
    p.add_argument("--local", action="store_true",
                   help="also the error each op adds on its own (its inputs exact)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--png", default=None, help="write a plot: a line per tensor kind over block index")
    a = p.parse_args(argv)
    config = config_from_args(a)
    if a.png:
        problem = plots.check_image_path(a.png, "--png")
        if problem:
            raise IntsimError(problem)
        writable_file(a.png, "--png")
    graph, data, program, n_calib = build_program(a, config)
    images, _ = data.evaluation(a.limit)
    rows = layer_rows(program, tensor_sqnr(graph, program, images),
                      local_sqnr(graph, program, images) if a.local else None)
    if a.png:
        plots.plot_depth({r["tensor"]: r["sqnr_db"] for r in rows},
                         f"{model_label(graph, a)}: SQNR against float through depth ({data.name}, {len(images)} "
                         f"images, calibrated on {n_calib})", a.png, {r["tensor"]: r["op"] for r in rows})
    if a.json:
        print(json.dumps({"model": graph.meta.get("path"), "data": data.name, "images": len(images),
                          "calibration_images": n_calib, "config": program.meta["config"],
                          "tensors": _json_safe(rows)}))
    else:
        print_rows(rows, a.local)
    return 0


def layer_rows(program, accumulated, local=None):
    """One record per integer tensor with a float twin, in execution order."""
    op_of = {t: op for op in program.ops for t in op.outputs}
    rows = []
    for name, db in accumulated.items():
        row = {"tensor": name, "op": op_of[name].kind, "source": program.tensors[name].source,
               "sqnr_db": db}
        if local is not None:
            row["local_db"] = local.get(name, math.nan)
        rows.append(row)
    return rows


def _json_safe(rows):
    """JSON has no inf: an exact tensor (no error at all) is reported as null."""
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
            for r in rows]


def print_rows(rows, local):
    width = max([len(r["tensor"]) for r in rows] + [6])
    print(f"{'tensor':<{width}}  {'op':<14} {'SQNR dB':>8}" + (f" {'local dB':>9}" if local else ""))
    for r in rows:
        line = f"{r['tensor']:<{width}}  {r['op']:<14} {_show(r['sqnr_db']):>8}"
        print(line + (f" {_show(r['local_db']):>9}" if local else ""))


def _show(db):
    return "exact" if db == math.inf else f"{db:.1f}"
