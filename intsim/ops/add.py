"""Add: the residual add a + b of two tensors of the same shape (spec K5).

Lowering: the sum lives on the residual stream (residual_bits, at the sum's calibrated scale); an
operand wider than the stream or scaled per channel is requantized onto the stream first; each
operand then gets its own multiplier (ma, ka for the first input, mb, kb for the second)."""
from ..arith import IntFormat
from ..kernels import RESIDUAL_ADD, KernelPlan
from .base import OpDef, multiplier_bits, run_kernel


class Add(OpDef):
    semantic = "Add"
    kind = "add"
    spec = "K5"
    n_inputs = 2

    def infer(self, node, in_shapes):
        if in_shapes[1] != in_shapes[0]:
            self.bad(node, in_shapes, "residual Add needs two inputs of the same shape")
        return [in_shapes[0]]

    def evaluate(self, node, inputs, dtype):
        return [inputs[0] + inputs[1]]

    def lower(self, node, b):
        res_fmt = IntFormat(b.cfg.residual_bits)
        y = node.outputs[0]
        s = b.act_scale(y, res_fmt)
        ins = []
        for i, name in enumerate(node.inputs):
            cur = b.realised[name]
            info = b.tensors[cur]
            if isinstance(info.scale, list) or info.fmt.bits > res_fmt.bits:
                cur = b.realise(name, res_fmt, b.act_scale(name, res_fmt), f"{node.name}.in{i}")
            ins.append(cur)
        plan = RESIDUAL_ADD.plan(tuple(float(b.scale_of(t)) for t in ins),
                                 tuple(b.tensors[t].fmt for t in ins), s, res_fmt,
                                 b.cfg.multiplier_bits)
        shape = b.shapes[node.inputs[0]]
        out = b.add_tensor(node.name, res_fmt, s, shape)
        b.emit(self.kind, node.name, ins, [out], plan.consts, {}, self.spec)
        b.bind(y, out, shape)

    def bind(self, op, program):
        plan = self.plan(op, program)
        RESIDUAL_ADD.check_consts(plan)
        return plan

    def plan(self, op, program):
        """The kernel plan rebuilt from the program: its constants, formats and multiplier width."""
        return KernelPlan(RESIDUAL_ADD.name, op.consts, tuple(program.tensors[t].fmt for t in op.inputs),
                          program.tensors[op.outputs[0]].fmt,
                          info={"multiplier_bits": multiplier_bits(program)})

    def run(self, op, inputs, plan, path):
        return [run_kernel(RESIDUAL_ADD, path, inputs, plan)]

    def const_formats(self, op, program):
        return RESIDUAL_ADD.const_formats(self.plan(op, program))
