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
from .progress import bar


def _with_floats(graph, images_u8, batch, what):
    """(model input, {graph tensor: float value}) per batch of images, with a bar per image on a
    terminal (`what` names the pass). Batches are small: a large model spends seconds per image."""
    with bar(len(images_u8), what, None, "img") as b:
        for i in range(0, len(images_u8), batch):
            x = model_input(images_u8[i:i + batch])
            floats = {}
            run_float(graph, x, observe=floats.__setitem__)
            yield x, floats
            b.update(len(x))


def _collect(stats, program, floats):
    """An observe hook adding each op output's SQNR against its float twin into `stats`."""
    def observe(op, ins, outs):
        for name, val in zip(op.outputs, outs):
            info = program.tensors[name]
            ref = floats.get(info.source)
            if ref is not None and np.shape(ref) == np.shape(val):
                stats.setdefault(name, metrics.Sqnr()).add(ref, info.dequantize(val))
    return observe


def tensor_sqnr(graph, program, images_u8, batch=8):
    """{integer tensor name: SQNR in dB} accumulated over the images, in execution order."""
    stats = {}
    exe = Executable(program)
    for x, floats in _with_floats(graph, images_u8, batch, "SQNR"):
        exe.infer(x, observe=_collect(stats, program, floats))
    return {k: s.db for k, s in stats.items()}


def layer_sqnr(graph, program, images_u8):
    """{graph tensor: SQNR dB} of a program: per float tensor, the worst of the integer tensors
    that realise it (a requantized copy is what its consumer sees)."""
    out = {}
    for name, db in tensor_sqnr(graph, program, images_u8).items():
        src = program.tensors[name].source or name
        out[src] = min(out.get(src, math.inf), db)
    return out


def _twin_integers(info, ref):
    """The float twin `ref` of an integer tensor quantized to that tensor's format and scale (round
    half to even, saturating): what the tensor would hold if everything before it were exact."""
    scale = info.dequantize(np.ones((1,) + tuple(info.shape)))
    q = np.clip(np.rint(np.asarray(ref, dtype=np.float64) / scale), info.fmt.lo, info.fmt.hi)
    return q.astype(info.fmt.storage)


def local_sqnr(graph, program, images_u8, batch=8):
    """{integer tensor name: SQNR in dB} of each op run on exact inputs: every input of an op is the
    float twin of that input quantized to the input's format and scale (the op's own local output
    where a tensor has no float twin), so the error is the one the op itself adds (its kernel and
    its output's rounding), not the one it inherited. Beside tensor_sqnr's accumulated error, it
    tells where fidelity is lost from where it is only carried."""
    stats = {}
    exe = Executable(program)
    for x, floats in _with_floats(graph, images_u8, batch, "local SQNR"):
        def exact_inputs(op, ins, floats=floats):
            out = []
            for t, val in zip(op.inputs, ins):
                info, ref = program.tensors[t], floats.get(program.tensors[t].source)
                twin = ref is not None and np.shape(ref)[1:] == tuple(info.shape)
                out.append(_twin_integers(info, ref) if twin else val)
            return out

        exe.infer(x, observe=_collect(stats, program, floats), feed=exact_inputs)
    return {k: s.db for k, s in stats.items()}
