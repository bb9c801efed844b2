"""ConstAdd: y = x + value, value a constant broadcast to x's per-sample shape (spec K7.4):
position embeddings added to the patches, attention biases (relative position bias, Swin's
shifted-window masks) added to the scores.

Integer form: y = sat_F(x' + v) with F = residual_bits signed, S the larger of the calibrated
scales of x and y (so that neither x nor the sum is clipped more than its calibration says); x' is
x requantized to (F, S) (A6) and v the constant quantized at (F, S): clamped to F's real range
(a -inf mask entry becomes F's minimum), then round half to even and saturate. One saturation."""
import numpy as np

from .. import arith
from ..arith import ConstFormat, IntFormat
from ..kernels import check_registers
from ..errors import ProgramError
from .base import OpCost, OpDef, tensor_elements
from .cls_pos import const_at_scale


class ConstAdd(OpDef):
    semantic = "ConstAdd"
    kind = "const_add"
    spec = "K7.4"
    params = ("value",)

    def infer(self, node, in_shapes):
        x, v = in_shapes[0], node.params["value"].shape
        try:
            ok = len(v) <= len(x) and tuple(np.broadcast_shapes(x, v)) == tuple(x)
        except ValueError:
            ok = False
        if not ok:
            self.bad(node, in_shapes, f"value {v} does not broadcast to the input")
        return [x]

    def evaluate(self, node, inputs, dtype):
        return [inputs[0] + np.asarray(node.params["value"], dtype=dtype)]

    def lower(self, node, b):
        src, y = node.inputs[0], node.outputs[0]
        fmt = IntFormat(b.cfg.residual_bits)
        s = max(float(b.act_scale(y, fmt)), float(b.act_scale(src, fmt)))
        x = b.realise(src, fmt, s, f"{node.name}.in")
        v = np.clip(np.asarray(node.params["value"], dtype=np.float64), fmt.lo * s, fmt.hi * s)
        value = const_at_scale(v, s, fmt)
        out = b.add_tensor(node.name, fmt, s, b.shapes[src])
        b.emit(self.kind, node.name, [x], [out], {"value": value}, {}, self.spec)
        b.bind(y, out, b.shapes[src])

    def bind(self, op, program):
        """One constant, broadcast to the input and within the output's format."""
        out = program.tensors[op.outputs[0]]
        if set(op.consts) != {"value"}:
            raise ProgramError(f"const_add: constants {sorted(op.consts)}, expected ['value']")
        value = np.asarray(op.consts["value"])
        self.check_shapes(op, program, {"value": value})
        check_registers(f"{op.kind} {op.name!r}", self.const_formats(op, program), op.consts)
        return out.fmt

    def run(self, op, inputs, fmt, path):
        x, = inputs
        return [arith.saturate(x.astype(np.int64) + op.consts["value"].astype(np.int64), fmt)]

    def cost(self, op, program):
        n = tensor_elements(program, op.outputs[0])
        return OpCost({"add": n, "cmp": 2 * n})

    def const_formats(self, op, program):
        """The value: the output's format, in the shape it broadcasts from."""
        return {"value": ConstFormat.of(program.tensors[op.outputs[0]].fmt, tuple(np.shape(op.consts.get("value"))))}

    def const_scales(self, op, program):
        return {"value": program.tensors[op.outputs[0]].scale}
