"""cocotb testbench of rtl/intsim_poly_gelu.sv (spec K3.1) against dumped vectors.

gelu_conformance: every `poly-gelu` case of the conformance set (input widths 2..16, every
segment and the flat region, GR > 0, GL large, a data-fitted (a, b)).
gelu_golden: the gelu ops of the model golden set named in INTSIM_GOLDEN_OPS.
"""
import cocotb
from cocotb.triggers import Timer

from tb_vectors import conformance_ops, golden_ops, replay

CONSTS = ("GL", "GR", "B", "S2", "mA", "kA", "TWO_ONE")


async def run_op(dut, op):
    for name in CONSTS:
        getattr(dut, name).value = int(op.consts[name])
    q, want = op.inputs[0].ravel(), op.outputs[0].ravel()
    for i in range(q.size):
        dut.q.value = int(q[i])
        await Timer(1, unit="ns")
        got = dut.out.value.to_signed()
        if got != int(want[i]):
            return f"{op.name}: element {i}: q={int(q[i])} -> dut {got}, golden {int(want[i])}"
    return None


@cocotb.test()
async def gelu_conformance(dut):
    await replay(dut, conformance_ops("poly-gelu"), "poly-gelu conformance", run_op)


@cocotb.test()
async def gelu_golden(dut):
    await replay(dut, golden_ops("gelu"), "golden gelu", run_op)
