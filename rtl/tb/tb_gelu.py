"""cocotb testbench of rtl/intsim_poly_gelu.sv (spec K3.1) against dumped vectors.

gelu_conformance: every `poly-gelu` case of the conformance set (input widths 2..16, every
segment and the flat region, GR > 0, GL large, a data-fitted (a, b)).
gelu_golden: the gelu ops of the model golden set named in INTSIM_GOLDEN_OPS.
"""
import cocotb
from cocotb.triggers import Timer

from tb_vectors import conformance_ops, golden_ops

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


async def run_ops(dut, ops, what):
    assert ops, f"no {what} vectors configured"
    failures = [msg for op in ops if (msg := await run_op(dut, op)) is not None]
    n = sum(op.inputs[0].size for op in ops)
    dut._log.info(f"{what}: {len(ops)} ops, {n} elements, {len(failures)} failing ops")
    assert not failures, f"{len(failures)} of {len(ops)} ops differ; first: {failures[0]}"


@cocotb.test()
async def gelu_conformance(dut):
    await run_ops(dut, conformance_ops("poly-gelu"), "poly-gelu conformance")


@cocotb.test()
async def gelu_golden(dut):
    await run_ops(dut, golden_ops("gelu"), "golden gelu")
