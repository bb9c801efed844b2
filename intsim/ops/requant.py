"""Requant: y = sat(round_shift(x * m, k)) (spec A6), per tensor or per channel along the last
axis (or along attrs["axis"], counted from the end: -3 for the C of (N, C, H, W)). An
integer-program op only: the compiler inserts one wherever a consumer needs a tensor in another
format or at another scale (compile's `realise`), so it has no semantic twin."""
from dataclasses import replace

from ..kernels import REQUANTIZE, KernelPlan
from .base import OpCost, OpDef, multiplier_bits, run_kernel, tensor_elements


class Requant(OpDef):
    kind = "requant"
    spec = "A6"

    def bind(self, op, program):
        plan = self.plan(op, program)
        REQUANTIZE.check_consts(plan)
        return REQUANTIZE.bind(plan)

    def plan(self, op, program):
        """The kernel plan rebuilt from the program: its constants, formats and multiplier width."""
        return KernelPlan(REQUANTIZE.name, op.consts, program.tensors[op.inputs[0]].fmt,
                          program.tensors[op.outputs[0]].fmt,
                          info={"multiplier_bits": multiplier_bits(program), "axis": int(op.attrs.get("axis", -1))})

    def run(self, op, inputs, plan, path):
        return [run_kernel(REQUANTIZE, path, inputs, plan)]

    def const_formats(self, op, program):
        """A6: per tensor, scalars; per channel, one (m, k) per channel of the input's channel axis
        (attrs["axis"], the last by default)."""
        formats = REQUANTIZE.const_formats(self.plan(op, program))
        if all(f.shape == () for f in formats.values()):
            return formats
        axis = int(op.attrs.get("axis", -1))
        shape = (program.tensors[op.inputs[0]].shape[axis],)
        return {name: replace(f, shape=shape) for name, f in formats.items()}

    def cost(self, op, program):
        per_element = REQUANTIZE.cost(program.tensors[op.outputs[0]].shape)
        n = tensor_elements(program, op.outputs[0])
        return OpCost({k: v * n for k, v in per_element.items()})
