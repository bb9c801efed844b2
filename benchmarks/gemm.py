"""Exact integer GEMM engines (spec K1) against NumPy float32 matmul, ViT-Small shapes, one process.

    python benchmarks/gemm.py [--repeat 10] [--engines ort,blas,numba,reference] [--tiny]

Each row is one product: the median time of every engine (ms, measured in interleaved rounds with
the peer, so load changes hit both) and its ratio to NumPy float32 `matmul` on
the same integer values, converted to float32 beforehand (the float peer pays no conversion; the
engines get int8 / uint16 arrays as the executor hands them over, weights prepared once with
prepare_weight). Every engine's result is compared with the first engine's before timing.
Target: the exact GEMM <= 0.6x float32 matmul on ViT-Small shapes.
Threads: BLAS, numba and ONNX Runtime all use INTSIM_BENCH_THREADS (default: all cores).
--tiny: the crossover of the numba engine for tiny products (gemm.TINY_MACS).
"""
import argparse
import os
import sys
import time

_THREADS = os.environ.get("INTSIM_BENCH_THREADS", str(len(os.sched_getaffinity(0))))
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
             "INTSIM_THREADS"):
    os.environ[_var] = _THREADS

import numpy as np

from intsim.arith import IntFormat
from intsim.kernels import gemm as G
from timing import median_time, median_times

I8, W8, U16 = IntFormat(8), IntFormat(8, narrow=True), IntFormat(16, signed=False)
T, D, MLP, H, DH, B = 197, 384, 1536, 6, 64, 32
# (name, M, K, N): the linear layers of ViT-Small at batch 1 (197 tokens) and batch 32 (6304)
LINEAR = [("qkv b1", T, D, 3 * D), ("fc2 b1", T, MLP, D), ("qkv b32", B * T, D, 3 * D),
          ("fc1 b32", B * T, D, MLP), ("fc2 b32", B * T, MLP, D)]
SLOW_MACS = 1 << 27      # numba / reference beyond this take seconds per call: skipped


def linear_case(rng, m, k, n, engines):
    a = rng.integers(I8.lo, I8.hi + 1, (m, k)).astype(np.int8)
    w = rng.integers(W8.lo, W8.hi + 1, (k, n)).astype(np.int8)
    bias = rng.integers(-(1 << 20), 1 << 20, n).astype(np.int32)
    af, wf = a.astype(np.float32), w.astype(np.float32)
    runs = {}
    for e in engines:
        if e in ("numba", "reference") and m * k * n > SLOW_MACS:
            continue
        pw = G.prepare_weight(w, W8, e) if e != "reference" else None
        runs[e] = (lambda e=e, pw=pw: G.gemm(a, None if pw else w, I8, None if pw else W8, bias,
                                              engine=e, b_prepared=pw))
    return runs, (lambda: af @ wf)


def attention_case(rng, batch, which, engines):
    if which == "q k^T":
        a_fmt, b_fmt = I8, I8
        a = rng.integers(-128, 128, (batch, H, T, DH)).astype(np.int8)
        b = np.swapaxes(rng.integers(-128, 128, (batch, H, T, DH)).astype(np.int8), -1, -2)   # k^T view
    else:    # P V: 16-bit unsigned probabilities (rows summing to about 2^16) @ int8 v
        a_fmt, b_fmt = U16, I8
        p = rng.random((batch, H, T, T)) ** 8
        a = np.minimum(np.rint(p / p.sum(-1, keepdims=True) * 65535), 65535).astype(np.uint16)
        b = rng.integers(-128, 128, (batch, H, T, DH)).astype(np.int8)
    af, bf = a.astype(np.float32), b.astype(np.float32)
    macs = a.size * b.shape[-1]
    runs = {e: (lambda e=e: G.gemm(a, b, a_fmt, b_fmt, engine=e)) for e in engines
            if not (e in ("numba", "reference") and macs > SLOW_MACS)}
    return runs, (lambda: af @ bf)


def table(rows, engines, repeat):
    print("| product | float32 ms | " + " | ".join(f"{e} ms (ratio)" for e in engines) + " |")
    print("|---|---|" + "---|" * len(engines))
    for name, runs, peer in rows:
        results = {e: fn() for e, fn in runs.items()}
        first = next(iter(results.values()))
        for e, r in results.items():
            if not np.array_equal(r, first):
                sys.exit(f"{name}: engine {e} differs from {next(iter(results))}")
        fast = [e for e in engines if e in runs and e not in ("numba", "reference")]
        slow = [e for e in engines if e in runs and e in ("numba", "reference")]
        times = dict(zip(["peer"] + fast, median_times([peer] + [runs[e] for e in fast], repeat)))
        times.update(zip(slow, median_times([runs[e] for e in slow], max(1, repeat // 5))))
        cells = [f"{1e3 * times[e]:.2f} ({times[e] / times['peer']:.2f}x)" if e in times else "-"
                 for e in engines]
        print(f"| {name} | {1e3 * times['peer']:.2f} | " + " | ".join(cells) + " |", flush=True)


def tiny(engines, repeat):
    """Microseconds per call of small square-ish products: where numba stops winning."""
    rng = np.random.default_rng(1)
    print("| M x K x N | MACs | " + " | ".join(f"{e} us" for e in engines) + " |")
    print("|---|---|" + "---|" * len(engines))
    for m, k, n in ((1, 1, 1), (4, 8, 4), (8, 16, 16), (16, 32, 16), (16, 64, 32), (32, 64, 64),
                    (64, 64, 64), (64, 128, 128), (128, 128, 256), (197, 64, 197), (197, 384, 384)):
        a = rng.integers(-128, 128, (m, k)).astype(np.int8)
        b = rng.integers(-127, 128, (k, n)).astype(np.int8)
        cells = [f"{1e6 * median_time(lambda e=e: G.gemm(a, b, I8, W8, engine=e), repeat * 20):.1f}"
                 for e in engines]
        print(f"| {m}x{k}x{n} | {m * k * n} | " + " | ".join(cells) + " |", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--engines", default=None, help="comma-separated (default: all available but auto)")
    p.add_argument("--tiny", action="store_true")
    a = p.parse_args()
    engines = a.engines.split(",") if a.engines else [e for e in G.available_engines() if e != "auto"]
    runtime = G._ort_runtime()
    ort_note = (f"onnxruntime {runtime[0].__version__}, {runtime[1]}-bit unsigned digits" if runtime
                else G._ORT_RUNTIME["why"])
    print(f"# cores {os.cpu_count()}, threads {_THREADS}, load {os.getloadavg()[0]:.1f}; {ort_note}; "
          f"numpy {np.__version__}")
    if a.tiny:
        tiny(engines, a.repeat)
        return
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    rows = [(f"linear {name} {m}x{k}x{n}", *linear_case(rng, m, k, n, engines)) for name, m, k, n in LINEAR]
    for batch in (1, B):
        for which in ("q k^T", "P V"):
            shape = f"({batch},{H},{T},{DH if which == 'q k^T' else T})"
            rows.append((f"{which} {shape} {'u16' if which == 'P V' else 'i8'}",
                         *attention_case(rng, batch, which, engines)))
    print(f"# set-up (operands, prepared weights, sessions): {time.perf_counter() - t0:.2f} s")
    table(rows, engines, a.repeat)


if __name__ == "__main__":
    main()
