"""Per-image latency of intsim's integer-only execution against ONNX Runtime float32, same run.

    python benchmarks/latency.py [--models deit-tiny,deit-small] [--batches 1,32] [--repeat 3]

Models are the seeded random-weight DeiT graphs of models/make_models.py (generated with torch on
first use, then cached). intsim is calibrated on 16 photo crops and compiled at W8A8 with the
default kernels; its timed part is the integer program alone (input quantizer to output
dequantizer). ONNX Runtime runs the float ONNX file with its default CPU settings (all cores).
Target (issue 3): intsim <= 3x ONNX Runtime float32 at batch 32 on DeiT-Small.
"""
import argparse
import os

import intsim.pipeline as ip
from intsim import execute
from intsim.data import photo_crops
from timing import median_time


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="deit-tiny,deit-small")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    import onnxruntime as ort
    print(f"# cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}, onnxruntime {ort.__version__}")
    print("| model | batch | intsim ms/image | onnxruntime fp32 ms/image | ratio | target |")
    print("|---|---|---|---|---|---|")
    for name in a.models.split(","):
        path = ip.resolve_model(name)
        graph = ip.load(path)
        program = ip.compile(graph, ip.calibrate(graph, photo_crops(16, seed=0), batch=8))
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = sess.get_inputs()[0].name
        for batch in (int(b) for b in a.batches.split(",")):
            x = ip.to_model_input(photo_crops(batch, seed=2))
            t_int = median_time(lambda: execute.run(program, x), a.repeat) / batch
            t_ort = median_time(lambda: sess.run(None, {feed: x}), a.repeat) / batch
            target = "<= 3x" if (name == "deit-small" and batch == 32) else ""
            print(f"| {name} | {batch} | {1e3 * t_int:.1f} | {1e3 * t_ort:.1f} | {t_int / t_ort:.2f}x | {target} |",
                  flush=True)


if __name__ == "__main__":
    main()
