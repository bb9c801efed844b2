"""Float interpreter of the semantic graph (intsim.graph): the reference the integer program is
measured against and the source of calibration statistics.

`run_float(graph, images)` evaluates the nodes in order and returns the output (a tuple of arrays
for a graph with several outputs), each by its op's `evaluate` (intsim/ops),
in float32 by default or float64. `observe(tensor_name, array)` is called for the input and for
every tensor produced, as soon as it exists; arrays are freed after their last use, so a caller
streaming over batches (calibration) holds one batch of activations at a time. Observers must not
modify the array.

Its products are intsim.reproducible's (exact on grids), its sums sequential and its exp / erf
intsim.elementary's, so every value it computes is the same on every machine (docs/quantization.md
Q18). The BLAS products run on one thread (threadpoolctl; `reproducible.one_blas_thread`): the
thread count cannot change a result, but the many small attention products would collapse on a busy
machine (measured on 2 shared cores, DeiT-Small calibration on 32 images: 5.1-5.3 s on one
thread, 51-61 s on two, whose threads wait on each other while another process holds a core).
"""
import numpy as np

from .errors import DataError, GraphError
from .reproducible import one_blas_thread
from .images import check_batch
from .ops import semantic_op
from .schedule import last_uses


def run_float(graph, images_float, observe=None, dtype=np.float32):
    """Evaluate `graph` on images (N, C, H, W) and return its output (N, ...) in `dtype`
    (np.float32 or np.float64). `observe(name, array)` sees every tensor, input included."""
    with one_blas_thread():
        return _run_float(graph, images_float, observe, np.dtype(dtype).type)


def _run_float(graph, images_float, observe, dtype):
    if dtype not in (np.float32, np.float64):
        raise DataError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
    x = np.ascontiguousarray(check_batch(images_float, graph.input_shape), dtype=dtype)
    last = last_uses(graph.nodes, lambda n: n.inputs, keep=graph.outputs)
    env = {graph.input_name: x}
    if observe is not None:
        observe(graph.input_name, x)
    for i, n in enumerate(graph.nodes):
        try:
            ins = [env[t] for t in n.inputs]
        except KeyError as e:
            raise GraphError(f"node {n.name!r} reads tensor {e} before it is produced") from None
        outs = semantic_op(n.op, n.name).evaluate(n, ins, dtype)
        for t in n.inputs:      # free activations after their last reader
            if last.get(t) == i:
                env.pop(t, None)
        for t, v in zip(n.outputs, outs):
            env[t] = v
            if observe is not None:
                observe(t, v)
    outs = tuple(env[t] for t in graph.outputs)
    return outs[0] if len(outs) == 1 else outs
