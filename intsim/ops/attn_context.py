"""AttnContext: probs (N, ..., H, T, T), v (N, ..., H, T, Dh) -> (N, ..., T, H*Dh) = (probs @ v)
with the heads merged, timm's (probs @ v).transpose(1, 2).reshape(N, T, D) (spec K1: exact product
into int32); leading axes (Swin's windows) are carried along."""
import numpy as np

from .. import reproducible
from ..kernels import MATMUL
from .attn_scores import ACC, activation_product_plan, matmul_cost
from .base import OpDef, run_kernel
from .matmul import product_operand


def merge_heads(y):
    h, t, dh = y.shape[-3:]
    return np.ascontiguousarray(np.swapaxes(y, -3, -2)).reshape(y.shape[:-3] + (t, h * dh))


class AttnContext(OpDef):
    semantic = "AttnContext"
    kind = "attn_context"
    spec = "K1"
    n_inputs = 2

    def infer(self, node, in_shapes):
        x, v = in_shapes
        if len(v) < 3 or x != v[:-1] + (v[-2],):
            self.bad(node, in_shapes, "probs must be (..., H,T,T) and v (..., H,T,Dh)")
        return [v[:-3] + (v[-2], v[-3] * v[-1])]

    def evaluate(self, node, inputs, dtype):
        p, v = inputs
        return [merge_heads(reproducible.product(p, v, dtype))]

    def lower(self, node, b):
        p, v = product_operand(b, node.inputs[0], f"{node.name}.in0"), b.realised[node.inputs[1]]
        s = float(b.scale_of(p)) * float(b.scale_of(v))
        shape = self.infer(node, [b.shapes[t] for t in node.inputs])[0]
        out = b.add_tensor(f"{node.name}.acc", ACC, s, shape)
        b.emit(self.kind, node.name, [p, v], [out], {}, {}, self.spec)
        b.bind(node.outputs[0], out, shape)

    def bind(self, op, program):
        return MATMUL.bind(activation_product_plan(op, program))

    def run(self, op, inputs, plan, path):
        return [merge_heads(run_kernel(MATMUL, path, list(inputs), plan))]

    def fuse_requant(self, op, plan, requantizer):
        """Per tensor: the context requantized in the product's epilogue, then its heads merged (a
        per-channel requantizer's channels are the merged axis, not the product's columns)."""
        if requantizer.per_channel:
            return None
        return lambda inputs: merge_heads(MATMUL.fast(list(inputs), plan, requantizer))

    def cost(self, op, program):
        return matmul_cost(program, op, program.tensors[op.inputs[1]].shape[-2])
