"""ReduceMean over axes of a sample (spec K7.6): BEiT's and DINOv2's mean of the patch tokens,
Swin's final pooling, GlobalAveragePool.

Integer form: the exact sum of the n reduced values; 1/n is not an integer operation but the real
scale of the sum (S_x / n), applied by whichever requantization reads it. The input is first brought
to one scale and at most residual_bits (K6); the sum of n values of b bits fits b + ceil(log2 n)
bits (+1 for an unsigned input: the sum is stored signed), at most 32."""
import math

import numpy as np

from .. import reproducible
from ..arith import IntFormat
from ..errors import CompileError, ProgramError
from .base import OpCost, OpDef, batch_axes, tensor_elements


class ReduceMean(OpDef):
    semantic = "ReduceMean"
    kind = "reduce_mean"
    spec = "K7.6"
    attrs = ("axes", "keepdims")

    def infer(self, node, in_shapes):
        x, axes = in_shapes[0], [int(a) for a in node.attrs["axes"]]
        if not axes or sorted(set(axes)) != axes or not all(0 <= a < len(x) for a in axes):
            self.bad(node, in_shapes, f"axes {axes} are not increasing axes of the input")
        keep = bool(node.attrs["keepdims"])
        return [tuple(1 if i in axes else d for i, d in enumerate(x) if keep or i not in axes)]

    def evaluate(self, node, inputs, dtype):
        x, axes = inputs[0], tuple(batch_axes(node.attrs["axes"]))
        n = int(np.prod([x.shape[a] for a in axes]))
        out = reproducible.row_sums(x, axes) / n
        return [(out if node.attrs["keepdims"] else out.squeeze(axes)).astype(dtype, copy=False)]

    def lower(self, node, b):
        src = node.inputs[0]
        x = b.per_tensor(src, f"{node.name}.in")
        info = b.tensors[x]
        n = int(np.prod([b.shapes[src][a] for a in node.attrs["axes"]]))
        bits = info.fmt.bits + (n - 1).bit_length() + (0 if info.fmt.signed else 1)
        if bits > 32:
            raise CompileError(f"node {node.name!r} (ReduceMean): the sum of {n} values of "
                               f"{info.fmt.bits} bits needs {bits} bits (at most 32)")
        shape = b.infer(node)[0]
        out = b.add_tensor(f"{node.name}.sum", IntFormat(bits), float(info.scale) / n, shape)
        b.emit(self.kind, node.name, [x], [out], {}, dict(node.attrs), self.spec)
        b.bind(node.outputs[0], out, shape)

    def bind(self, op, program):
        """No constants; the axes give the declared shape and the sum fits the output (K7.6)."""
        super().bind(op, program)
        self.check_shapes(op, program)
        fin, fout = program.tensors[op.inputs[0]].fmt, program.tensors[op.outputs[0]].fmt
        n = int(np.prod([program.tensors[op.inputs[0]].shape[a] for a in op.attrs["axes"]]))
        if fout.bits < fin.bits + (n - 1).bit_length() + (0 if fin.signed else 1) or not fout.signed:
            raise ProgramError(f"reduce_mean: a sum of {n} values of {fin.describe()} does not fit "
                               f"{fout.describe()}")
        return fout.storage

    def run(self, op, inputs, storage, path):
        x, = inputs
        return [np.sum(x.astype(np.int64), axis=tuple(batch_axes(op.attrs["axes"])),
                       keepdims=bool(op.attrs["keepdims"])).astype(storage)]

    def cost(self, op, program):
        return OpCost({"add": tensor_elements(program, op.inputs[0])})
