"""Requant: y = sat(round_shift(x * m, k)) (spec A6), per tensor or per channel along the last
axis. An integer-program op only: the compiler inserts one wherever a consumer needs a tensor in
another format or at another scale (compile's `realise`), so it has no semantic twin."""
from ..kernels import REQUANTIZE, KernelPlan
from .base import OpCost, OpDef, run_kernel, tensor_elements


class Requant(OpDef):
    kind = "requant"
    spec = "A6"

    def bind(self, op, program):
        plan = KernelPlan(REQUANTIZE.name, op.consts, program.tensors[op.inputs[0]].fmt,
                          program.tensors[op.outputs[0]].fmt)
        REQUANTIZE.check_consts(plan)
        return plan

    def run(self, op, inputs, plan, path):
        return [run_kernel(REQUANTIZE, path, inputs, plan)]

    def cost(self, op, program):
        per_element = REQUANTIZE.cost(program.tensors[op.outputs[0]].shape)
        n = tensor_elements(program, op.outputs[0])
        return OpCost({k: v * n for k, v in per_element.items()})
