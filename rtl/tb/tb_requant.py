"""cocotb testbench of rtl/intsim_requant.sv (spec A6) against dumped vectors, bit for bit.

requant_conformance: every `requantize` case of the conformance set (ties of both signs, k < 0,
k = 0, k = 62, saturation at both ends, multiplier widths 2..31, every output width).
requant_golden: the requant ops of the model golden set named in INTSIM_GOLDEN_OPS.
Each test fails on the first mismatching element of each op and names op, index and values.
"""
import cocotb
from cocotb.triggers import Timer

from tb_vectors import conformance_ops, golden_ops, out_format, replay, requant_elements


async def run_op(dut, op):
    """Drive every element of one requant op through the DUT; returns a mismatch message or None."""
    bits, signed = out_format(op)
    dut.out_bits.value = bits
    dut.out_signed.value = int(signed)
    x, m, k, want = requant_elements(op)
    for i in range(x.size):
        dut.x.value = int(x[i])
        dut.m.value = int(m[i])
        dut.k.value = int(k[i])
        await Timer(1, unit="ns")
        got = dut.y.value.to_signed() if signed else dut.y.value.to_unsigned()
        if got != int(want[i]):
            return (f"{op.name}: element {i}: x={int(x[i])} m={int(m[i])} k={int(k[i])} "
                    f"-> dut {got}, golden {int(want[i])} ({'s' if signed else 'u'}{bits})")
    return None


@cocotb.test()
async def requant_conformance(dut):
    await replay(dut, conformance_ops("requantize"), "requantize conformance", run_op)


@cocotb.test()
async def requant_golden(dut):
    await replay(dut, golden_ops("requant"), "golden requant", run_op)
