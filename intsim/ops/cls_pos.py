"""ClsPos: prepend the class token and add the position embedding, (N, P, D) -> (N, P+1, D) =
concat(cls, x) + pos (spec K6). Integer form: cls and pos are quantized at the residual stream's
scale (ties to even, saturated like any value of the stream) and the sum saturates once."""
import numpy as np

from .. import arith
from ..arith import ConstFormat, IntFormat
from ..kernels import check_registers
from .base import OpDef


def const_at_scale(values, scale, fmt):
    """A float constant joining the residual stream: quantized at the stream's scale, ties to even,
    saturated like any other value of the stream (the stream's clipping may be below its max)."""
    return arith.quantize(values, scale, fmt).astype(np.int64)


class ClsPos(OpDef):
    semantic = "ClsPos"
    kind = "cls_pos"
    spec = "K6"
    params = ("cls", "pos")

    def infer(self, node, in_shapes):
        x, d = in_shapes[0], node.params["cls"].shape
        if len(x) != 2 or d != (x[1],) or node.params["pos"].shape != (x[0] + 1, x[1]):
            self.bad(node, in_shapes, f"cls {d} / pos {node.params['pos'].shape} do not fit")
        return [(x[0] + 1, x[1])]

    def evaluate(self, node, inputs, dtype):
        x, = inputs
        cls = np.broadcast_to(np.asarray(node.params["cls"], dtype=dtype), (x.shape[0], 1, x.shape[2]))
        return [np.concatenate([cls, x], axis=1) + np.asarray(node.params["pos"], dtype=dtype)]

    def lower(self, node, b):
        res_fmt = IntFormat(b.cfg.residual_bits)
        y = node.outputs[0]
        s = b.act_scale(y, res_fmt)
        x = b.realise(node.inputs[0], res_fmt, s, f"{node.name}.in")
        cls = const_at_scale(node.params["cls"], s, res_fmt)
        pos = const_at_scale(node.params["pos"], s, res_fmt)
        out = b.add_tensor(node.name, res_fmt, s, pos.shape)
        b.emit(self.kind, node.name, [x], [out], {"cls": cls, "pos": pos}, {}, self.spec)
        b.bind(y, out, pos.shape)

    def bind(self, op, program):
        """cls (D) and pos (T, D) in their registers: the output's shape and format (they were
        saturated to it)."""
        check_registers(f"{op.kind} {op.name!r}", self.const_formats(op, program), op.consts)
        return program.tensors[op.outputs[0]].fmt

    def run(self, op, inputs, out_fmt, path):
        x, = inputs
        cls = np.broadcast_to(op.consts["cls"].astype(np.int64), (x.shape[0], 1, x.shape[2]))
        y = np.concatenate([cls, x.astype(np.int64)], axis=1) + op.consts["pos"].astype(np.int64)
        return [arith.saturate(y, out_fmt)]

    def const_formats(self, op, program):
        """K6: cls (D,) and pos (T, D) are values of the residual stream: the output's format."""
        out = program.tensors[op.outputs[0]]
        return {"cls": ConstFormat.of(out.fmt, tuple(out.shape[-1:])),
                "pos": ConstFormat.of(out.fmt, tuple(out.shape))}

    def const_scales(self, op, program):
        s = program.tensors[op.outputs[0]].scale
        return {"cls": s, "pos": s}
