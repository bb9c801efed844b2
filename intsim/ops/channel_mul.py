"""ChannelMul: y = x * gamma[c] over the last axis, gamma a constant (C,) (spec K7.3): layer-scale
(DeiT-III, DINOv2, BEiT), before the residual add.

Lowering, in order of preference:
1. Folded into the Linear that makes x, when that Linear's output is read by this node alone (the
   product is then exactly x_in @ (W diag-scaled)^T): each output channel's accumulator scale takes
   |gamma_c|, and the integer weight row and bias of a channel with gamma_c < 0 are negated (exact:
   weights are narrow, -w fits). A channel with gamma_c = 0 gets a zero weight row and bias. No op.
2. Otherwise the `channel_mul` op: y = sign_c * sat_F(round_shift(x * m_c, k_c)) with (m_c, k_c)
   the A2 pair of S_x[c] |gamma_c| / S_y (A6 requantization per channel), F = residual_bits signed
   narrow (so that the sign flip cannot leave F), S_y the output's calibrated scale; sign_c in
   {-1, 0, 1} (0 for gamma_c = 0, whose (m, k) is that of ratio 1 and unused)."""
import numpy as np

from ..arith import ConstFormat, IntFormat
from ..errors import ProgramError
from ..kernels import REQUANTIZE, KernelPlan, check_registers
from ..kernels.requantize import multiplier_formats
from .base import OpDef, multiplier_bits, run_kernel
from .requant import Requant

INT32_MIN = -(1 << 31)


def fold_into_linear(b, linear, acc, gamma):
    """Layer-scale gamma taken into the emitted linear op making accumulator `acc` (option 1)."""
    sign = np.sign(gamma).astype(np.int64)
    mag = np.where(gamma == 0, 1.0, np.abs(gamma))
    linear.consts["weight"] = (linear.consts["weight"] * sign[:, None].astype(linear.consts["weight"].dtype))
    if "bias" in linear.consts:
        linear.consts["bias"] = (linear.consts["bias"].astype(np.int64) * sign).astype(linear.consts["bias"].dtype)
    scale = np.broadcast_to(np.asarray(b.tensors[acc].scale, dtype=np.float64), gamma.shape)
    b.tensors[acc].scale = [float(v) for v in scale * mag]
    linear.attrs["weight_scale"] = [float(v) for v in np.asarray(linear.attrs["weight_scale"]) * mag]


class ChannelMul(OpDef):
    semantic = "ChannelMul"
    kind = "channel_mul"
    spec = "K7.3"
    params = ("gamma",)

    def infer(self, node, in_shapes):
        if node.params["gamma"].shape != in_shapes[0][-1:]:
            self.bad(node, in_shapes, f"gamma {node.params['gamma'].shape} is not one value per channel")
        return [in_shapes[0]]

    def evaluate(self, node, inputs, dtype):
        return [inputs[0] * np.asarray(node.params["gamma"], dtype=dtype)]

    def lower(self, node, b):
        src, gamma = node.inputs[0], np.asarray(node.params["gamma"], dtype=np.float64)
        cur = b.realised[src]
        linear = b.producer_op(cur)
        if (linear is not None and linear.kind == "linear" and b.sole_reader(src, node)
                and INT32_MIN not in np.asarray(linear.consts.get("bias", [0]))):
            fold_into_linear(b, linear, cur, gamma)
            b.bind(node.outputs[0], cur, b.shapes[src])
            return
        fmt = IntFormat(b.cfg.residual_bits, narrow=True)
        s = b.act_scale(node.outputs[0], fmt)
        ratio = np.broadcast_to(b.scale_of(cur), gamma.shape) * np.where(gamma == 0, 1.0, np.abs(gamma)) / s
        ratio = np.where(gamma == 0, 1.0, ratio)
        plan = REQUANTIZE.plan(None, b.tensors[cur].fmt, None, fmt, b.cfg.multiplier_bits, ratio=ratio)
        consts = {"m": np.atleast_1d(plan.consts["m"]) * np.ones(gamma.shape, np.int64),
                  "k": np.atleast_1d(plan.consts["k"]) * np.ones(gamma.shape, np.int64),
                  "sign": np.sign(gamma).astype(np.int64)}
        out = b.add_tensor(node.name, fmt, s, b.shapes[src])
        b.emit(self.kind, node.name, [cur], [out], consts, {}, self.spec)
        b.bind(node.outputs[0], out, b.shapes[src])

    def bind(self, op, program):
        """(m, k) per channel (A2 ranges) and a sign in {-1, 0, 1} per channel; a narrow output."""
        if set(op.consts) != {"m", "k", "sign"}:
            raise ProgramError(f"channel_mul: constants {sorted(op.consts)}, expected ['k', 'm', 'sign']")
        out = program.tensors[op.outputs[0]]
        c = program.tensors[op.inputs[0]].shape[-1]
        sign = np.asarray(op.consts["sign"])
        if sign.shape != (c,) or not np.isin(sign, (-1, 0, 1)).all() or not out.fmt.narrow:
            raise ProgramError(f"channel_mul: sign must be {c} values in {{-1, 0, 1}} and the output "
                               f"narrow")
        check_registers(f"{op.kind} {op.name!r}", self.const_formats(op, program), op.consts)
        plan = KernelPlan(REQUANTIZE.name, {"m": op.consts["m"], "k": op.consts["k"]},
                          program.tensors[op.inputs[0]].fmt, out.fmt,
                          info={"multiplier_bits": multiplier_bits(program)})
        REQUANTIZE.check_consts(plan)
        if np.shape(op.consts["m"]) != (c,):
            raise ProgramError(f"channel_mul: (m, k) must be one pair per channel ({c})")
        self.check_shapes(op, program, {"gamma": np.ones(c)})
        return plan

    def run(self, op, inputs, plan, path):
        y = run_kernel(REQUANTIZE, path, inputs, plan)
        return [(y * op.consts["sign"].astype(y.dtype)).astype(y.dtype)]

    def cost(self, op, program):
        return Requant().cost(op, program)

    def const_formats(self, op, program):
        """(m, k) as a per-channel requantization (A6) and a sign per channel, in {-1, 0, 1}."""
        c = tuple(program.tensors[op.inputs[0]].shape[-1:])
        m, k = multiplier_formats(multiplier_bits(program), c)
        return {"m": m, "k": k, "sign": ConstFormat(2, True, False, -1, 1, c)}
