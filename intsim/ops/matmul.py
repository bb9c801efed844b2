"""MatMul of two activations: y = a @ b over the last two axes of a sample, leading axes broadcast
(spec K1.6): attention scores q @ k^T and context P @ v when they are not one of the fused ViT
patterns (separate q/k/v projections, window attention).

Lowering: each operand is requantized to `abits` at its calibrated scale, except a Softmax output,
which is read as it is (unsigned, softmax_bits); the exact product goes into int32 at the product
of the operand scales. A scalar factor after the product (the attention scale) is a Scale node,
folded into that real scale (K7.2)."""
import numpy as np

from .. import reproducible
from ..kernels import MATMUL
from .attn_scores import ACC, activation_product_plan, matmul_cost
from .base import OpDef, run_kernel


def product_operand(b, float_name, label):
    """An activation entering a product: a Softmax output as it is, anything else at abits."""
    producer = b.graph.producer(float_name)
    cur = b.realised[float_name]
    if producer is not None and producer.op == "Softmax" and not isinstance(b.tensors[cur].scale, list):
        return cur
    fmt = b.act_format(float_name, b.operand_bits(label))
    return b.realise(float_name, fmt, b.act_scale(float_name, fmt), label)


class MatMul(OpDef):
    semantic = "MatMul"
    kind = "matmul"
    spec = "K1.6"
    n_inputs = 2
    reads_narrow = True

    def contracted_axes(self, node, shapes):
        return len(shapes[node.inputs[0]]) - 1, len(shapes[node.inputs[1]]) - 2

    def infer(self, node, in_shapes):
        a, b = in_shapes
        try:
            lead = np.broadcast_shapes(a[:-2], b[:-2])
        except ValueError:
            lead = None
        if len(a) < 2 or len(b) < 2 or len(a) != len(b) or a[-1] != b[-2] or lead is None:
            self.bad(node, in_shapes, "needs (..., M, K) @ (..., K, N) of equal rank")
        return [tuple(lead) + (a[-2], b[-1])]

    def evaluate(self, node, inputs, dtype):
        return [reproducible.product(inputs[0], inputs[1], dtype)]

    def lower(self, node, b):
        a, c = (product_operand(b, t, f"{node.name}.in{i}") for i, t in enumerate(node.inputs))
        s = float(b.scale_of(a)) * float(b.scale_of(c))
        shape = b.infer(node)[0]
        out = b.add_tensor(f"{node.name}.acc", ACC, s, shape)
        b.emit(self.kind, node.name, [a, c], [out], {}, {}, self.spec)
        b.bind(node.outputs[0], out, shape)

    def bind(self, op, program):
        self.check_shapes(op, program)
        return MATMUL.bind(activation_product_plan(op, program))

    def run(self, op, inputs, plan, path):
        return [run_kernel(MATMUL, path, list(inputs), plan)]

    def cost(self, op, program):
        return matmul_cost(program, op, program.tensors[op.inputs[0]].shape[-1])
