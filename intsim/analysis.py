"""Per-tensor accuracy of an integer program against the float graph (offline analysis).

A consumer of the executor's observe hook: every integer op output is dequantized with its
documentary scale and compared with the float tensor it realises (TensorInfo.source).
"""
import numpy as np

from . import execute
from .pipeline import to_model_input


def tensor_sqnr(graph, program, images_u8, batch=32):
    """{integer tensor name: SQNR in dB} accumulated over the images, in execution order."""
    from .float_ref import run_float
    stats = {}
    for i in range(0, len(images_u8), batch):
        x = to_model_input(images_u8[i:i + batch])
        floats = {}
        run_float(graph, x, observe=floats.__setitem__)

        def observe(op, ins, outs):
            for name, val in zip(op.outputs, outs):
                info = program.tensors[name]
                ref = floats.get(info.source)
                if ref is None or np.shape(ref) != np.shape(val):
                    continue
                ref = np.asarray(ref, dtype=np.float64)
                s = stats.setdefault(name, [0.0, 0.0])
                s[0] += float((ref ** 2).sum())
                s[1] += float(((ref - info.dequantize(val)) ** 2).sum())

        execute.run(program, x, observe=observe)
    return {k: (float("inf") if n == 0 else 10 * np.log10(max(s, 1e-300) / n)) for k, (s, n) in stats.items()}
