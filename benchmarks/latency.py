"""Per-image latency of intsim's integer-only execution against ONNX Runtime float32, same run.

    python benchmarks/latency.py [--models deit-tiny,deit-small] [--batches 1,32] [--repeat 3]
                                 [--engines auto] [--per-op]

Models are the seeded random-weight DeiT graphs of models/make_models.py (generated with torch on
first use, then cached). intsim is calibrated on 16 photo crops and compiled at W8A8 with the
default kernels; its timed part is the integer program alone (input quantizer to output
dequantizer). ONNX Runtime runs the float ONNX file with its default CPU settings (all cores), or
with INTSIM_BENCH_THREADS threads, as BLAS, numba and intsim's ONNX Runtime engine then do.
Each batch times ONNX Runtime and every engine in interleaved rounds (timing.median_times).
--engines: the matmul engines to run intsim with (intsim.kernels.gemm.use_engine), e.g. blas,ort;
'auto' is the default choice (the engine it ran is printed).
--per-op: where intsim's time goes, by op kind (matmuls by role), from the executor's observe hook.
Target (issue 12): intsim <= 1.0x ONNX Runtime float32 per image at batch 32 (<= 1.5x at batch 1).
"""
import argparse
import collections
import os
import time

_THREADS = os.environ.get("INTSIM_BENCH_THREADS")
if _THREADS:       # before NumPy / numba load: BLAS, numba and both ONNX Runtime uses get this many
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[_var] = _THREADS

import intsim.pipeline as ip
from intsim import execute
from intsim.data import photo_crops
from intsim.model_files import resolve_model
from intsim.kernels import gemm
from timing import median_times


def engine_label(engine):
    if engine != "auto":
        return engine
    return "auto: ort" if "ort" in gemm.available_engines() else "auto: blas"


def op_role(op):
    """Matmuls by their role in the block, every other op by its kind."""
    if op.kind == "linear":
        return "linear " + op.name.rsplit(".", 1)[-1] if "." in op.name else "linear"
    return {"attn_scores": "q k^T", "attn_context": "P V"}.get(op.kind, op.kind)


def per_op_times(program, x, engine, repeat):
    """Seconds per op role, summed over the program, median of `repeat` runs: the time between one
    op's observe call and the previous one is that op's (plus the executor's bookkeeping)."""
    runs = []
    for _ in range(repeat + 1):          # the first run warms up
        times = collections.Counter()
        exe = execute.Executable(program, engine=engine)
        q = execute.quantize_input(program, x)
        last = [time.perf_counter()]

        def observe(op, ins, outs):
            now = time.perf_counter()
            times[op_role(op)] += now - last[0]
            last[0] = now
        exe.run(q, observe=observe)
        runs.append(times)
    roles = sorted(set().union(*runs[1:]), key=lambda r: -sum(t[r] for t in runs[1:]))
    return {r: sorted(t[r] for t in runs[1:])[len(runs[1:]) // 2] for r in roles}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="deit-tiny,deit-small")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--engines", default="auto")
    p.add_argument("--per-op", action="store_true")
    a = p.parse_args()
    import onnxruntime as ort
    engines = a.engines.split(",")
    print(f"# cores {os.cpu_count()}, threads {_THREADS or 'default'}, load average {os.getloadavg()[0]:.1f}, "
          f"onnxruntime {ort.__version__}")
    print("| model | batch | engine | intsim ms/image | onnxruntime fp32 ms/image | ratio | target |")
    print("|---|---|---|---|---|---|---|")
    breakdowns = []
    for name in a.models.split(","):
        path = resolve_model(name)
        graph = ip.load(path)
        program = ip.compile(graph, ip.calibrate(graph, photo_crops(16, seed=0), batch=8))
        options = ort.SessionOptions()
        if _THREADS:
            options.intra_op_num_threads = int(_THREADS)
        sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = sess.get_inputs()[0].name
        for batch in (int(b) for b in a.batches.split(",")):
            x = ip.to_model_input(photo_crops(batch, seed=2))
            exes = {e: execute.Executable(program, engine=e) for e in engines}   # weights laid out once
            times = median_times([lambda: sess.run(None, {feed: x})] +
                                 [lambda e=e: exes[e].infer(x) for e in engines], a.repeat)
            t_ort = times[0] / batch
            for engine, t_int in zip(engines, times[1:]):
                t_int /= batch
                target = "<= 1.0x" if batch >= 32 else "<= 1.5x"
                print(f"| {name} | {batch} | {engine_label(engine)} | {1e3 * t_int:.1f} | {1e3 * t_ort:.1f} | "
                      f"{t_int / t_ort:.2f}x | {target} |", flush=True)
                if a.per_op:
                    breakdowns.append((f"{name} batch {batch} {engine_label(engine)}",
                                       per_op_times(program, x, engine, a.repeat), t_ort * batch))
    for label, times, t_ort in breakdowns:
        total = sum(times.values())
        print(f"\n{label}: {1e3 * total:.0f} ms per batch (onnxruntime fp32 {1e3 * t_ort:.0f} ms)")
        print("| op | ms per batch | share |")
        print("|---|---|---|")
        for role, t in times.items():
            print(f"| {role} | {1e3 * t:.1f} | {100 * t / total:.0f} % |")


if __name__ == "__main__":
    main()
