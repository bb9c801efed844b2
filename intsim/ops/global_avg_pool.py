"""GlobalAveragePool: (N, C, d1, d2, ...) -> (N, C, 1, 1, ...), the mean over every axis after the
channels (spec K7.8). Integer form: the exact sum of the inputs, into int32; the division by the
number of elements is folded into the output's real scale (S_in / count), so the integer op makes
no rounding at all (the consumer's requantization is the only one).

Lowering: the input is requantized per tensor to `residual_bits` at its calibrated scale."""
import numpy as np

from .. import arith, reproducible
from ..arith import IntFormat
from .base import OpCost, OpDef, tensor_elements

ACC = IntFormat(32)


def pool_axes(ndim):
    """The axes summed: every axis after the channel axis (axis 1 of a batch)."""
    return tuple(range(2, ndim))


class GlobalAveragePool(OpDef):
    semantic = "GlobalAveragePool"
    kind = "global_avg_pool"
    spec = "K7.8"

    def infer(self, node, in_shapes):
        x = in_shapes[0]
        if len(x) < 2:
            self.bad(node, in_shapes, "expects (C, d1, ...) with at least one axis to average")
        return [(x[0],) + (1,) * (len(x) - 1)]

    def evaluate(self, node, inputs, dtype):
        x = inputs[0]
        axes = tuple(pool_axes(x.ndim))
        return [(reproducible.row_sums(x, axes) / int(np.prod([x.shape[a] for a in axes]))).astype(dtype)]

    def lower(self, node, b):
        src = node.inputs[0]
        fmt = IntFormat(b.cfg.residual_bits)
        x = b.realise(src, fmt, b.act_scale(src, fmt), f"{node.name}.in")
        shape = b.shapes[src]
        count = int(np.prod(shape[1:]))
        out_shape = (shape[0],) + (1,) * (len(shape) - 1)
        out = b.add_tensor(node.name, ACC, float(b.scale_of(x)) / count, out_shape)
        b.emit(self.kind, node.name, [x], [out], {}, {"count": count}, self.spec)
        b.bind(node.outputs[0], out, out_shape)

    def run(self, op, inputs, bound, path):
        x = arith.integer_input("global_avg_pool input", inputs[0])
        total = x.sum(axis=pool_axes(x.ndim), keepdims=True, dtype=np.int64)
        arith.check_fits(f"global_avg_pool {op.name!r} sum", total, ACC)
        return [total.astype(ACC.storage)]

    def cost(self, op, program):
        return OpCost({"add": tensor_elements(program, op.inputs[0])})
