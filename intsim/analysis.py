"""Per-tensor accuracy of an integer program against the float graph (offline analysis).

A consumer of the executor's observe hook: every integer op output is dequantized with its
documentary scale and compared with the float tensor it realises (TensorInfo.source).
"""
import math

import numpy as np

from . import metrics
from .execute import Executable
from .float_ref import run_float
from .images import model_input


def tensor_sqnr(graph, program, images_u8, batch=32):
    """{integer tensor name: SQNR in dB} accumulated over the images, in execution order."""
    stats = {}
    exe = Executable(program)
    for i in range(0, len(images_u8), batch):
        x = model_input(images_u8[i:i + batch])
        floats = {}
        run_float(graph, x, observe=floats.__setitem__)

        def observe(op, ins, outs):
            for name, val in zip(op.outputs, outs):
                info = program.tensors[name]
                ref = floats.get(info.source)
                if ref is not None and np.shape(ref) == np.shape(val):
                    stats.setdefault(name, metrics.Sqnr()).add(ref, info.dequantize(val))

        exe.infer(x, observe=observe)
    return {k: s.db for k, s in stats.items()}


def layer_sqnr(graph, program, images_u8):
    """{graph tensor: SQNR dB} of a program: per float tensor, the worst of the integer tensors
    that realise it (a requantized copy is what its consumer sees)."""
    out = {}
    for name, db in tensor_sqnr(graph, program, images_u8).items():
        src = program.tensors[name].source or name
        out[src] = min(out.get(src, math.inf), db)
    return out
