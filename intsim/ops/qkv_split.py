"""QKVSplit: (N, ..., T, 3D) -> q, k, v each (N, ..., H, T, Dh), timm's
qkv.reshape(N, T, 3, H, Dh).permute(2, 0, 3, 1, 4) (spec K6: data movement only); leading axes
(Swin's windows) are carried along.

Lowering: q, k and v share one integer format; the input is requantized per channel so that each
third lands at its own calibrated scale."""
import numpy as np

from ..arith import IntFormat
from ..errors import ProgramError
from .base import OpDef


def split_heads(x, heads):
    lead, (t, d3) = x.shape[:-2], x.shape[-2:]
    r = len(lead)
    qkv = x.reshape(lead + (t, 3, heads, d3 // (3 * heads)))
    qkv = qkv.transpose((r + 1,) + tuple(range(r)) + (r + 2, r, r + 3))   # (3, N, ..., H, T, Dh)
    return [np.ascontiguousarray(qkv[i]) for i in range(3)]    # strided views defeat BLAS


class QKVSplit(OpDef):
    semantic = "QKVSplit"
    kind = "qkv_split"
    spec = "K6"
    n_outputs = 3
    attrs = ("heads",)
    reads_narrow = True

    def infer(self, node, in_shapes):
        x, h = in_shapes[0], int(node.attrs["heads"])
        if len(x) < 2 or h < 1 or x[-1] % (3 * h):
            self.bad(node, in_shapes, f"cannot split into q, k, v with {h} heads")
        s = x[:-2] + (h, x[-2], x[-1] // (3 * h))
        return [s, s, s]

    def contraction_source(self, node, out_index, axis, shapes):
        """q, k or v's last axis (Dh) walks its third of the input's channels in runs of Dh."""
        x = shapes[node.inputs[0]]
        if axis != len(x):             # outputs are (..., H, T, Dh): one axis more than the input
            return None
        d = x[-1] // 3
        return len(x) - 1, d // int(node.attrs["heads"]), (out_index * d, d)

    def evaluate(self, node, inputs, dtype):
        return split_heads(inputs[0], int(node.attrs["heads"]))

    def lower(self, node, b):
        src = node.inputs[0]
        heads = int(node.attrs["heads"])
        lead, (t, d3) = b.shapes[src][:-2], b.shapes[src][-2:]
        d = d3 // 3
        bits = b.operand_bits(f"{node.name}.in")       # q, k, v are product operands
        fmts = [b.act_format(o, bits) for o in node.outputs]
        if len(set(fmts)) != 1:
            fmts = [IntFormat(bits)] * 3
        scales = [b.act_scale(o, f) for o, f in zip(node.outputs, fmts)]
        x = b.realise(src, fmts[0], np.repeat(scales, d), f"{node.name}.in")
        outs = []
        for o, s in zip(node.outputs, scales):
            shape = lead + (heads, t, d // heads)
            outs.append(b.add_tensor(o if o not in b.tensors else f"{node.name}.{o}", fmts[0], s, shape))
            b.bind(o, outs[-1], shape)
        b.emit(self.kind, node.name, [x], outs, {}, {"heads": heads}, self.spec)

    def bind(self, op, program):
        heads, d3 = op.attrs.get("heads"), program.tensors[op.inputs[0]].shape[-1]
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or d3 % (3 * heads):
            raise ProgramError(f"heads = {heads!r} does not split {d3} channels into q, k, v")
        return super().bind(op, program)

    def run(self, op, inputs, bound, path):
        return split_heads(inputs[0], op.attrs["heads"])
