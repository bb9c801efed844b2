"""Kernel speed at ViT-Small shapes: numba (fast) path vs NumPy reference path vs float NumPy.

    python benchmarks/kernels.py [--repeat 20]

One process, one table: every ratio is measured against a peer run in the same process.
Shapes (batch 1): 197 tokens, dim 384, 6 heads (softmax rows (6, 197, 197)), MLP 1536.
Targets: exact integer GEMM <= 2x float32 numpy.matmul; each non-linear kernel <= 3x its
float32 NumPy equivalent. Requantize and residual add have no target; their float peer is a
multiply-round-clip. The float peers are float32, the precision a float ViT runs in.
BLAS and the ONNX Runtime GEMM engine run single-threaded (INTSIM_BENCH_THREADS to change): the kernels are
single-threaded too, and a shared machine then cannot skew one side's BLAS threads.
"""
import argparse
import os
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
             "INTSIM_THREADS"):
    os.environ[_var] = os.environ.get("INTSIM_BENCH_THREADS", "1")

import numpy as np

from intsim.arith import IntFormat, dyadic, dyadic_array
from intsim.kernels import candidates, hadamard
from intsim.kernels.add import residual_add, residual_add_ref
from intsim.kernels.matmul import matmul, matmul_ref, prepare_weight
from intsim.kernels.requantize import requantize, requantize_ref
from timing import median_time

T, D, H, MLP = 197, 384, 6, 1536
I8, I16, I32 = IntFormat(8), IntFormat(16), IntFormat(32)


def softmax_f32(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def gelu_f32(x):
    from scipy.special import erf
    return np.float32(0.5) * x * (np.float32(1) + erf(x * np.float32(1 / np.sqrt(2))))


def layernorm_f32(x, g, b):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + np.float32(1e-6)) * g + b


def cases(rng):
    """(group, name, fast, reference, float peer, target ratio fast/float)"""
    out = []
    for name, (m, k, n) in (("matmul qkv 197x384x1152", (T, D, 3 * D)),
                            ("matmul fc2 197x1536x384", (T, MLP, D))):
        a = rng.integers(-128, 128, (m, k)).astype(np.int8)
        w = rng.integers(-127, 128, (k, n)).astype(np.int8)
        bias = rng.integers(-(1 << 20), 1 << 20, n).astype(np.int32)
        wf = w.astype(np.float32)
        af = a.astype(np.float32)
        pw = prepare_weight(w, I8)          # as the executor does: once per weight
        out.append(("gemm", name, lambda a=a, bias=bias, pw=pw: matmul(a, None, I8, None, bias=bias, b_prepared=pw),
                    lambda a=a, w=w, bias=bias: matmul_ref(a, w, bias), lambda af=af, wf=wf: af @ wf, 2.0))
    acc = rng.integers(-(1 << 20), 1 << 20, (T, 3 * D)).astype(np.int32)
    m, k = dyadic_array(rng.uniform(1e-5, 1e-4, 3 * D))
    accf = acc.astype(np.float32)
    sc = rng.uniform(1e-5, 1e-4, 3 * D).astype(np.float32)
    out.append(("requant", "requantize per-channel 197x1152", lambda: requantize(acc, m, k, I8, -1),
                lambda: requantize_ref(acc, m, k, I8, -1),
                lambda: np.clip(np.rint(accf * sc), -128, 127).astype(np.int8), None))
    ra = rng.integers(-30000, 30000, (T, D)).astype(np.int16)
    rb = rng.integers(-30000, 30000, (T, D)).astype(np.int16)
    da, db = dyadic(0.7), dyadic(0.4)
    raf, rbf = ra.astype(np.float32), rb.astype(np.float32)
    out.append(("add", "residual add 197x384", lambda: residual_add(ra, rb, da.m, da.k, db.m, db.k, I16),
                lambda: residual_add_ref(ra, rb, da.m, da.k, db.m, db.k, I16),
                lambda: raf * np.float32(0.7) + rbf * np.float32(0.4), None))

    logits = rng.normal(0, 3, (H, T, T)).astype(np.float32)
    for fmt in (IntFormat(8), IntFormat(16)):
        s = float(np.abs(logits).max()) / fmt.hi
        q = np.rint(logits / s).astype(fmt.storage)
        for kern in candidates("softmax").values():
            try:
                plan = kern.plan(s, fmt, out_bits=8)
            except ValueError as e:
                print(f"  (softmax {kern.name} at {fmt.bits}-bit input: {e})", file=sys.stderr)
                continue
            out.append(("softmax", f"{kern.name} {fmt.bits}b in (6,197,197)",
                        lambda k=kern, q=q, p=plan: k.fast([q], p),
                        lambda k=kern, q=q, p=plan: k.reference([q], p),
                        lambda: softmax_f32(logits), 3.0))
    x = rng.normal(0, 1.7, (T, MLP)).astype(np.float32)
    s = float(np.abs(x).max()) / 127
    q = np.rint(x / s).astype(np.int8)
    for kern in candidates("gelu").values():
        plan = kern.plan(s, I8)
        out.append(("gelu", f"{kern.name} (197,1536)", lambda k=kern, p=plan, q=q: k.fast([q], p),
                    lambda k=kern, p=plan, q=q: k.reference([q], p), lambda x=x: gelu_f32(x), 3.0))
    r = rng.normal(0, 2, (T, D)).astype(np.float32)
    r[:, :8] *= 10   # outlier channels
    g = rng.normal(1, 0.2, D).astype(np.float32)
    b = rng.normal(0, 0.1, D).astype(np.float32)
    s = float(np.abs(r).max()) / I16.hi
    q = np.rint(r / s).astype(np.int16)
    for kern in candidates("layernorm").values():
        plan = kern.plan(s, I16, gamma=g, beta=b, eps=1e-6)
        out.append(("layernorm", f"{kern.name} (197,384)", lambda k=kern, p=plan, q=q: k.fast([q], p),
                    lambda k=kern, p=plan, q=q: k.reference([q], p), lambda: layernorm_f32(r, g, b), 3.0))
    # K10: the rotation of a Linear input (a GELU output before fc2, a LayerNorm output before qkv),
    # blocks of 128, inputs at the widest format the sums allow; float peer: the same rotation as
    # a float32 product with H_128 / sqrt(128)
    for c in (D, MLP):
        xi = rng.integers(-(1 << 24), 1 << 24, (T, c)).astype(np.int32)
        xf = xi.astype(np.float32)
        h = hadamard.orthonormal(128).astype(np.float32)
        out.append(("hadamard", f"hadamard B=128 (197,{c})", lambda xi=xi: hadamard.fast(xi, 128),
                    lambda xi=xi: hadamard.reference(xi, 128),
                    lambda xf=xf, h=h, c=c: (xf.reshape(-1, c // 128, 128) @ h).reshape(T, c), None))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=20)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    rows = cases(rng)
    print(f"# set-up incl. numba cache load: {time.perf_counter() - t0:.2f} s; "
          f"cores {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
    print("| kernel | fast ms | reference ms | float32 ms | fast/float | target | ok | reference/fast |")
    print("|---|---|---|---|---|---|---|---|")
    for group, name, fast, ref, flt, target in rows:
        tf, tp = median_time(fast, a.repeat), median_time(flt, a.repeat)
        tr = median_time(ref, max(3, a.repeat // 5))
        ratio = tf / tp
        goal = f"<= {target:.0f}x | {'yes' if ratio <= target else 'NO'}" if target else "- | -"
        print(f"| {name} | {1e3 * tf:.3f} | {1e3 * tr:.3f} | {1e3 * tp:.3f} | {ratio:.2f}x | "
              f"{goal} | {tr / tf:.1f}x |")


if __name__ == "__main__":
    main()
