"""The Python API: load, calibrate, compile, run, evaluate.

    import intsim.pipeline as ip
    graph = ip.load()                                   # the shipped Fashion-MNIST ViT
    data = ip.open_data("fashion-mnist")
    observers = ip.calibrate(graph, data.calibration(256))   # with X^T X: weights round by GPTQ
    program = ip.compile(graph, observers, ip.QuantConfig(wbits=4))
    report = ip.evaluate(graph, program, *data.evaluation(limit=1000))
"""
import collections
from concurrent.futures import ThreadPoolExecutor
import hashlib
import time

import numpy as np

from . import metrics
from .arith import ArithSpecError
from .compile import compile_program
from .data import open_data
from .errors import DataError
from .execute import Executable, as_outputs
from .float_ref import run_float
from .graph import fold_input_normalisation
from .head_rotation import rotate_heads
from .images import check_batch, model_input
from .model_files import input_normalisation, resolve_model
from .onnx_import import load_onnx
from .kernels import hadamard
from .ops import SEMANTIC
from .ops.hadamard import rotated_name
from .progress import advance, bar
from .quantize import Observer, QuantConfig
from .reproducible import one_blas_thread
from .schedule import last_uses

__all__ = ["QuantConfig", "load", "open_data", "calibrate", "compile", "evaluate", "run_integer",
           "float_outputs", "ArithSpecError", "DataError"]


def load(model=None, head_rotation=None):
    """The semantic graph of an ONNX ViT (default: the shipped Fashion-MNIST model), with its
    input normalisation folded into the first layer and the contracted axis of each attention
    product rotated into the query / key weights in Hadamard blocks of at most `head_rotation`
    (docs/quantization.md Q10; None: QuantConfig().rotate; 0: not rotated). Both keep the float
    function."""
    path = resolve_model(model)
    graph = load_onnx(path)
    norm = input_normalisation(model)
    if norm is not None:
        fold_input_normalisation(graph, *norm)
    rotate_heads(graph, QuantConfig().rotate if head_rotation is None else head_rotation)
    graph.meta.setdefault("path", str(path))
    if path.exists():
        graph.meta.setdefault("sha256", hashlib.sha256(path.read_bytes()).hexdigest())
    return graph


def to_model_input(images_u8):
    return model_input(images_u8)


def check_images_fit(graph, images):
    check_batch(images, graph.input_shape)


PENDING_BYTES = 1 << 29     # calibration: activations queued for their observers (512 MiB)


def calibrate(graph, images_u8, batch=64, seed=0, gram=None, rotate=None, progress=None):
    """Stream the calibration images through the float graph; per-tensor observers. gram: also
    X^T X of every Linear input (what GPTQ rounds with: weight_round gptq or auto); None: what
    the default configuration needs (QuantConfig().gptq).
    rotate: also the statistics of every Linear input rotated by Hadamard blocks of at most that
    size (what QuantConfig(rotate=...) chooses and scales with, docs/quantization.md Q8); None:
    the default configuration's. Always: X^T X of what an op's calibration_grams names (a patch
    embedding's patches, Q11). progress: a bar per image (None: on a terminal only)."""
    if len(images_u8) == 0:
        raise DataError("the calibration set is empty")
    check_images_fit(graph, images_u8)
    observers = {}
    rotate = QuantConfig().rotate if rotate is None else rotate
    gram = QuantConfig().gptq if gram is None else gram
    linear_inputs = {n.inputs[0] for n in graph.nodes
                     if n.op in SEMANTIC and SEMANTIC[n.op].gram_input} if gram or rotate else set()

    extra_grams = {}
    for n in graph.nodes:
        for tensor, grams in SEMANTIC[n.op].calibration_grams(n).items():
            extra_grams.setdefault(tensor, []).extend(grams)

    def observer(name):
        if name not in observers:
            observers[name] = Observer(name, seed)
        return observers[name]

    def update(name, arr):
        observer(name).update(arr)
        for key, rows in extra_grams.get(name, ()):
            observer(key).update_gram(rows(arr))
        if name in linear_inputs:
            if gram:
                observers[name].update_gram(arr)
            block = hadamard.block_for(np.shape(arr)[-1], rotate)
            if block:
                observer(rotated_name(name, block)).update(hadamard.rotate_float(np.asarray(arr, np.float32), block))

    # Each tensor's statistics are taken on a second thread while the float graph computes the
    # next ones (both release the GIL): in graph order, so the observers see what a serial loop
    # shows them. Updates queue up to PENDING_BYTES of activations, so a slow one (X^T X of a wide
    # input) overlaps the float graph's next products instead of stalling it (DeiT-Small on 32
    # images: 13 s with one update in flight, 10 s with a queue), and memory stays bounded.
    pending = collections.deque()
    with one_blas_thread(), ThreadPoolExecutor(1, thread_name_prefix="intsim-observe") as worker:
        def observe(name, arr):
            while pending and sum(n for n, _ in pending) + arr.nbytes > PENDING_BYTES:
                pending.popleft()[1].result()
            pending.append((arr.nbytes, worker.submit(update, name, arr)))

        with bar(len(images_u8), "calibrate", progress, "img") as b:
            for i in range(0, len(images_u8), batch):
                done = min(i + batch, len(images_u8))
                per_tensor = (done - i) / max(len(graph.nodes), 1)    # the bar moves inside a batch

                def observe_and_advance(name, arr):
                    observe(name, arr)
                    advance(b, per_tensor, done)
                run_float(graph, to_model_input(images_u8[i:done]), observe=observe_and_advance)
                while pending:
                    pending.popleft()[1].result()
                b.update(done - b.n)            # the batch's exact count, whatever the estimate
    return observers


def compile(graph, observers, config=None, progress=None):  # noqa: A001 - the API's verb
    """The integer program of a calibrated graph; progress: a bar per node (None: on a terminal)."""
    return compile_program(graph, observers, config or QuantConfig(),
                           model_path=graph.meta.get("path"), model_sha256=graph.meta.get("sha256"),
                           progress=progress)


BYTES_PER_ELEMENT = 24     # an int64 integer tensor, its float twin and an int64 kernel temporary


def peak_bytes_per_image(graph):
    """An estimate of the memory one image of a batch takes where the graph is widest: the most
    tensor elements alive at once (freed after their last reader, as both interpreters do), at
    BYTES_PER_ELEMENT each."""
    shapes = graph.tensor_shapes()
    size = {t: int(np.prod(s, dtype=np.int64)) for t, s in shapes.items()}
    last = last_uses(graph.nodes, lambda n: n.inputs, keep=graph.outputs)
    live = {graph.input_name: size[graph.input_name]}
    peak = sum(live.values())
    for i, n in enumerate(graph.nodes):
        live.update({t: size[t] for t in n.outputs})
        peak = max(peak, sum(live.values()))
        for t in n.inputs:
            if last.get(t) == i:
                live.pop(t, None)
    return peak * BYTES_PER_ELEMENT


def available_memory():
    """Bytes of memory available to a new allocation (Linux's MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def batches(n, batch):
    if batch < 1:
        raise DataError(f"batch size must be >= 1, got {batch}")
    return range(0, n, batch)


def _joined(parts):
    """Per-batch outputs joined over the batches: one array, or a tuple for several outputs."""
    outs = tuple(np.concatenate(o) for o in zip(*[as_outputs(p) for p in parts]))
    return outs[0] if len(outs) == 1 else outs


def run_integer(program, images_u8, batch=100, progress=False, engine="auto"):
    """Integer outputs (dequantized) for uint8 images, streamed in batches (a tuple of arrays for a
    program with several outputs)."""
    exe = Executable(program, engine=engine)
    out = []
    with bar(len(images_u8), "integer", progress or None, "img") as b:
        for i in batches(len(images_u8), batch):
            out.append(exe.infer(to_model_input(images_u8[i:i + batch])))
            b.update(min(batch, len(images_u8) - i))
    return _joined(out)


def float_outputs(graph, images_u8, batch=100):
    """The float model's outputs (float64) for uint8 images, streamed in batches (a tuple of
    arrays for a graph with several outputs)."""
    return _joined([tuple(o.astype(np.float64) for o in as_outputs(run_float(graph, to_model_input(
        images_u8[i:i + batch])))) for i in batches(len(images_u8), batch)])


def evaluate(graph, program, images_u8, labels=None, batch=100, progress=None, engine="auto"):
    """Each output of the integer program against the float graph, streamed (metrics.py's
    OutputComparison: SQNR; agreement and top-1 for a class vector; Pearson and max abs error for
    any other tensor), and integer images/s; the integer path's matmuls run on `engine`
    (execute.Executable). The top-level float_top1, int_top1, agreement and logit_sqnr_db are those
    of the first output when it is a class vector, else None."""
    check_images_fit(graph, images_u8)
    n = len(images_u8)
    exe = Executable(program, engine=engine)      # untimed: weights prepared once
    exe.infer(to_model_input(images_u8[:1]))       # untimed: numba cache load
    shapes = graph.tensor_shapes()
    stats = [metrics.OutputComparison(name, shapes[name]) for name in graph.outputs]
    t_int = 0.0
    with bar(n, "evaluate", progress, "img") as b:
        for i in batches(n, batch):
            x = to_model_input(images_u8[i:i + batch])
            f = as_outputs(run_float(graph, x))
            t0 = time.perf_counter()
            q = as_outputs(exe.infer(x))
            t_int += time.perf_counter() - t0
            for s, fo, qo in zip(stats, f, q):
                s.add(fo, qo, labels[i:i + batch] if labels is not None and s.is_class else None)
            b.update(len(x))
    outputs = [s.result() for s in stats]
    first = outputs[0] if outputs[0]["kind"] == "class" else {}
    return {
        "images": n,
        "float_top1": first.get("float_top1"),
        "int_top1": first.get("int_top1"),
        "agreement": first.get("agreement"),
        "logit_sqnr_db": first.get("sqnr_db"),
        "images_per_s": n / t_int if t_int > 0 else None,
        "outputs": outputs,
    }
