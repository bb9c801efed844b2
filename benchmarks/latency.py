"""Per-image latency of intsim's integer-only execution against ONNX Runtime float32, same run, and
the set-up time (calibration, compile, golden dump) of each model.

    python benchmarks/latency.py [--models deit-tiny,deit-small] [--batches 1,32] [--repeat 5]
                                 [--engines auto] [--threads 1] [--calib 32] [--per-op] [--no-setup]

Models are the seeded random-weight DeiT graphs of models/make_models.py (generated with torch on
first use, then cached). intsim is calibrated on --calib photo crops and compiled at W8A8 with the
default kernels; its timed part is the integer program alone (input quantizer to output
dequantizer). For each thread count of --threads, ONNX Runtime runs the float ONNX file with that
many intra-op threads and intsim runs with that many threads in its ONNX Runtime products
(Executable(threads=...); intsim's numba kernels are serial). Each batch and thread count times
ONNX Runtime and every engine in interleaved rounds (timing.median_times), so a change of machine
load hits all alike (at least --repeat rounds, more for short batches: about 10 s of rounds, at most
50); the ratio is intsim / ONNX Runtime at the same thread count. The engine column says
which engine ran each of the program's products ('auto' picks per product: gemm.choose_engine).
--per-op: where intsim's time goes, by op kind (matmuls by role), from the executor's observe hook
(which runs every op on its own: the fused requantizations are then separate).
Set-up (unless --no-setup): the wall time of calibrating on --calib images, of compiling, and of
the golden dump of one image (`golden.dump`, npy; and npy,bin,hex) into --dump-dir.
Targets: intsim <= 1.0x ONNX Runtime float32 per image at batch 32 (<= 1.5x at batch 1);
calibration + compile of DeiT-Small on 32 images <= 6 s; golden dump of one DeiT-Small image <= 7 s.
"""
import argparse
import collections
import os
import shutil
import tempfile
import time

import intsim.pipeline as ip
from intsim import execute, golden
from intsim.data import photo_crops
from intsim.model_files import resolve_model
from intsim.kernels import gemm
from timing import median_times


def op_role(op):
    """Matmuls by their role in the block, every other op by its kind."""
    if op.kind == "linear":
        return "linear " + op.name.rsplit(".", 1)[-1] if "." in op.name else "linear"
    return {"attn_scores": "q k^T", "attn_context": "P V"}.get(op.kind, op.kind)


def per_op_times(exe, q, repeat):
    """Seconds per op role, summed over the program, median of `repeat` runs: the time between one
    op's observe call and the previous one is that op's (plus the executor's bookkeeping)."""
    runs = []
    for _ in range(repeat + 1):          # the first run warms up
        times = collections.Counter()
        last = [time.perf_counter()]

        def observe(op, ins, outs):
            now = time.perf_counter()
            times[op_role(op)] += now - last[0]
            last[0] = now
        exe.run(q, observe=observe)
        runs.append(times)
    roles = sorted(set().union(*runs[1:]), key=lambda r: -sum(t[r] for t in runs[1:]))
    return {r: sorted(t[r] for t in runs[1:])[len(runs[1:]) // 2] for r in roles}


def engines_ran(exe, x):
    """'auto: ort 73, blas 1': the engine of each product of one run."""
    with gemm.record_engines() as ran:
        exe.infer(x)
    return f"{exe.engine}: " + ", ".join(f"{e} {n}" for e, n in ran.most_common())


def setup_times(name, calib, dump_dir):
    """(graph, program, {step: seconds}) for one model: load, calibrate, compile, golden dumps."""
    t = {}
    t0 = time.perf_counter()
    graph = ip.load(resolve_model(name))
    t["load"] = time.perf_counter() - t0
    images = photo_crops(calib, seed=0)
    t0 = time.perf_counter()
    observers = ip.calibrate(graph, images)
    t["calibrate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    program = ip.compile(graph, observers)
    t["compile"] = time.perf_counter() - t0
    if dump_dir is not False:
        q = execute.quantize_input(program, ip.to_model_input(photo_crops(1, seed=2)))
        for formats in (("npy",), ("npy", "bin", "hex")):
            tmp = tempfile.mkdtemp(prefix="intsim-bench-", dir=dump_dir)
            try:
                t0 = time.perf_counter()
                golden.dump(program, q, os.path.join(tmp, "dump"), formats)
                t["dump " + ",".join(formats)] = time.perf_counter() - t0
            finally:
                shutil.rmtree(tmp)
    return graph, program, t


def ort_session(ort, path, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_batch(name, program, session, x, engines, threads, repeat):
    """Rows (model, batch, engine ran, threads, intsim s/image, ORT s/image, Executable) of one
    batch at one thread count. (Thread counts are timed apart: ONNX Runtime's idle pool threads
    spin after a run and would slow whatever ran next.)"""
    feed = session.get_inputs()[0].name
    exes = [execute.Executable(program, engine=e, threads=threads) for e in engines]
    fns = [lambda: session.run(None, {feed: x})] + [lambda exe=exe: exe.infer(x) for exe in exes]
    t_ort, *t_ints = [s / len(x) for s in median_times(fns, repeat, min_seconds=10.0)]
    return [(name, len(x), engines_ran(exe, x), threads, t_int, t_ort, exe) for exe, t_int in zip(exes, t_ints)]


def print_breakdowns(breakdowns):
    for label, times, t_ort in breakdowns:
        total = sum(times.values())
        print(f"\n{label}: {1e3 * total:.0f} ms per batch (onnxruntime fp32 {1e3 * t_ort:.0f} ms)")
        print("| op | ms per batch | share |")
        print("|---|---|---|")
        for role, t in times.items():
            print(f"| {role} | {1e3 * t:.1f} | {100 * t / total:.0f} % |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="deit-tiny,deit-small")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--engines", default="auto")
    p.add_argument("--threads", default="1", help="comma list of thread counts (default 1)")
    p.add_argument("--calib", type=int, default=32, help="calibration images (default 32)")
    p.add_argument("--per-op", action="store_true")
    p.add_argument("--no-setup", action="store_true", help="skip the golden dump timings")
    p.add_argument("--dump-dir", default=None, help="where the timed golden dumps go (default: TMPDIR)")
    a = p.parse_args()
    import onnxruntime as ort
    engines, threads = a.engines.split(","), [int(t) for t in a.threads.split(",")]
    print(f"# cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} at start, "
          f"onnxruntime {ort.__version__}, intsim matmul engines: {gemm.describe_engine()}")
    breakdowns, setups = [], {}
    print("| model | batch | engine (products) | threads | intsim ms/image | onnxruntime fp32 ms/image "
          "| ratio | target |")
    print("|---|---|---|---|---|---|---|---|")
    for name in a.models.split(","):
        graph, program, setups[name] = setup_times(name, a.calib, False if a.no_setup else a.dump_dir)
        path = resolve_model(name)
        sessions = {t: ort_session(ort, path, t) for t in threads}
        for batch in (int(b) for b in a.batches.split(",")):
            x = ip.to_model_input(photo_crops(batch, seed=2))
            for row in (r for t in threads for r in time_batch(name, program, sessions[t], x, engines, t, a.repeat)):
                print_row(row)
                if a.per_op:
                    exe = row[-1]
                    breakdowns.append((f"{name} batch {batch} {row[2]}, {row[3]} thread(s)",
                                       per_op_times(exe, execute.quantize_input(program, x), a.repeat),
                                       row[5] * batch))
    print(f"\n# load average {os.getloadavg()[0]:.1f} at the end")
    print_breakdowns(breakdowns)
    print(f"\nSet-up, calibration on {a.calib} photo crops (one run each; s):")
    steps = list(next(iter(setups.values())))
    print("| model | " + " | ".join(steps) + " | calibrate + compile |")
    print("|---|" + "---|" * (len(steps) + 1))
    for name, t in setups.items():
        print(f"| {name} | " + " | ".join(f"{t[s]:.2f}" for s in steps) +
              f" | {t['calibrate'] + t['compile']:.2f} |")


def print_row(row):
    name, batch, ran, threads, t_int, t_ort, _ = row
    target = "<= 1.0x" if batch >= 32 else "<= 1.5x"
    print(f"| {name} | {batch} | {ran} | {threads} | {1e3 * t_int:.1f} | {1e3 * t_ort:.1f} | "
          f"{t_int / t_ort:.2f}x | {target} |", flush=True)


if __name__ == "__main__":
    main()
