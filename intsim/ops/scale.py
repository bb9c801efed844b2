"""Scale: y = x * factor for a scalar constant factor (spec K7.2): the attention scale after
q @ k^T, the 1/2 of DeiT's mean of two heads, any Mul or Div by a scalar.

No integer arithmetic: |factor| goes into the real scale of the integers. When x is made by a
product (linear, matmul, mul, attention) or a residual add and read by this node alone, that
tensor simply takes the scale S x |factor| (no op is emitted); otherwise a `scale` op copies the
integers to a tensor at that scale. A negative factor is an exact negation y = -x, one bit wider than x (so that -(-2^(b-1))
fits); an accumulator (32 bits) is first requantized to residual_bits."""
import numpy as np

from ..arith import IntFormat
from ..errors import ProgramError
from .base import OpDef

FOLDABLE = ("linear", "matmul", "mul", "attn_scores", "attn_context", "add")


def scaled(scale, factor):
    return [float(v) * factor for v in scale] if isinstance(scale, list) else float(scale) * factor


class Scale(OpDef):
    semantic = "Scale"
    kind = "scale"
    spec = "K7.2"
    attrs = ("factor",)

    def contraction_source(self, node, out_index, axis, shapes):
        return axis, None, None

    def infer(self, node, in_shapes):
        f = node.attrs["factor"]
        if not (np.isfinite(f) and f != 0):
            self.bad(node, in_shapes, f"factor {f} is not finite and non-zero")
        return [in_shapes[0]]

    def evaluate(self, node, inputs, dtype):
        return [inputs[0] * dtype(node.attrs["factor"])]

    def lower(self, node, b):
        f, src = float(node.attrs["factor"]), node.inputs[0]
        cur = b.realised[src]
        producer = b.producer_op(cur)
        if f > 0 and producer is not None and producer.kind in FOLDABLE and b.sole_reader(src, node):
            b.tensors[cur].scale = scaled(b.tensors[cur].scale, f)
            if "weight_scale" in producer.attrs:
                producer.attrs["weight_scale"] = scaled(producer.attrs["weight_scale"], f)
            b.bind(node.outputs[0], cur, b.shapes[src])
            return
        if f < 0 and b.tensors[cur].fmt.bits >= 32:
            res = b.act_format(src, b.cfg.residual_bits)
            cur = b.realise(src, res, b.act_scale(src, res), f"{node.name}.in")
        info = b.tensors[cur]
        fmt = IntFormat(info.fmt.bits + 1) if f < 0 else info.fmt
        out = b.add_tensor(node.name, fmt, scaled(info.scale, abs(f)), info.shape)
        b.emit(self.kind, node.name, [cur], [out], {}, {"negate": bool(f < 0)}, self.spec)
        b.bind(node.outputs[0], out, info.shape)

    def bind(self, op, program):
        """No constants; a negation one bit wider than its input, a copy in the input's format."""
        super().bind(op, program)
        fin, fout = program.tensors[op.inputs[0]].fmt, program.tensors[op.outputs[0]].fmt
        negate = op.attrs.get("negate")
        if not isinstance(negate, bool) or fout != (IntFormat(fin.bits + 1) if negate else fin):
            raise ProgramError(f"scale: negate={negate!r} with formats {fin.describe()} -> {fout.describe()}")
        if tuple(program.tensors[op.outputs[0]].shape) != tuple(program.tensors[op.inputs[0]].shape):
            raise ProgramError("scale: the output's shape differs from the input's")
        return fout.storage

    def run(self, op, inputs, storage, path):
        x, = inputs
        return [np.negative(x, dtype=storage) if op.attrs["negate"] else x]
