"""AttnScores: q, k (N, ..., H, T, Dh) -> (N, ..., H, T, T) = scale * q @ k^T (spec K1).

The integer op is the exact product q @ k^T into int32; the attention scale is not an integer
operation: it is folded into the accumulator's real scale (S_q * S_k * scale). The op's `scale`
attribute is documentary (a float that no kernel reads)."""
import numpy as np

from .. import reproducible
from ..arith import IntFormat
from ..errors import ProgramError
from ..kernels import MATMUL
from .base import OpCost, OpDef, run_kernel, tensor_elements

ACC = IntFormat(32)


def matmul_cost(program, op, inner):
    """Bit operations of a product of two activations: MACs x bits(a) x bits(b)."""
    a, b = (program.tensors[t] for t in op.inputs)
    return OpCost({}, tensor_elements(program, op.outputs[0]) * inner * a.fmt.bits * b.fmt.bits)


def activation_product_plan(op, program):
    if op.consts:
        raise ProgramError(f"{op.kind} has no constants, got {sorted(op.consts)}")
    return MATMUL.plan((1.0, 1.0), tuple(program.tensors[t].fmt for t in op.inputs),
                       program.tensors[op.outputs[0]].fmt)


class AttnScores(OpDef):
    semantic = "AttnScores"
    kind = "attn_scores"
    spec = "K1"
    n_inputs = 2
    attrs = ("scale",)

    def contracted_axes(self, node, shapes):
        rank = len(shapes[node.inputs[0]])
        return rank - 1, rank - 1          # q @ k^T sums over both last axes

    def infer(self, node, in_shapes):
        x, k = in_shapes
        scale = node.attrs["scale"]
        if len(x) < 3 or k != x or not (np.isfinite(scale) and scale > 0):
            self.bad(node, in_shapes, f"q and k must be equal (..., H,T,Dh) shapes and scale positive "
                                      f"(scale {scale})")
        return [x[:-1] + (x[-2],)]

    def evaluate(self, node, inputs, dtype):
        q, k = inputs
        return [reproducible.product(q * dtype(node.attrs["scale"]), k.swapaxes(-1, -2), dtype)]

    def lower(self, node, b):
        q, k = (b.realised[i] for i in node.inputs)
        scale = float(node.attrs["scale"])
        s = float(b.scale_of(q)) * float(b.scale_of(k)) * scale
        shape = b.shapes[node.inputs[0]][:-1] + (b.shapes[node.inputs[0]][-2],)
        out = b.add_tensor(f"{node.name}.acc", ACC, s, shape)
        b.emit(self.kind, node.name, [q, k], [out], {}, {"scale": scale}, self.spec)
        b.bind(node.outputs[0], out, shape)

    def bind(self, op, program):
        return MATMUL.bind(activation_product_plan(op, program))

    def run(self, op, inputs, plan, path):
        q, k = inputs
        return [run_kernel(MATMUL, path, [q, np.swapaxes(k, -1, -2)], plan)]

    def fuse_requant(self, op, plan, requantizer):
        """The logits requantized in the product's epilogue."""
        if not requantizer.along_columns:
            return None
        return lambda inputs: MATMUL.fast([inputs[0], np.swapaxes(inputs[1], -1, -2)], plan, requantizer)

    def cost(self, op, program):
        return matmul_cost(program, op, program.tensors[op.inputs[0]].shape[-1])
