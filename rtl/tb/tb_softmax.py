"""cocotb testbench of rtl/intsim_softmax_bitshift.sv (spec K2.1) against dumped vectors.

softmax_conformance: every `bitshift-softmax` case of the conformance set (every input width 2..16
and output width 2..16, z >= 31 and >= 64, an exact output tie, saturation, one-hot and single-
element rows, the ends of the accepted scale range).
softmax_golden: the softmax ops of the model golden set named in INTSIM_GOLDEN_OPS (e.g.
act/blocks.0.attn.softmax.in -> act/blocks.0.attn.softmax with the op's constants from const/).

Protocol: inputs are driven and outputs sampled on the falling clock edge (the DUT works on the
rising edge): one logit per cycle while in_ready, then the row's probabilities, one per cycle.
"""
import cocotb
from cocotb.triggers import FallingEdge

from tb_vectors import conformance_ops, golden_ops, replay_rows, row_difference, rows, start_and_reset

# K2.1.1 constants that the RTL fixes as localparams: a plan with other values cannot run on it
FIXED = {"F": 20, "Q": 30, "SEG_BITS": 4, "N": 62, "Z_MAX": 31}
MAX_L = 256
IN_W = 16


def pack(values, width):
    """A packed SystemVerilog array [n-1:0][width-1:0] as one integer (element 0 least significant)."""
    return sum(int(v) << (width * i) for i, v in enumerate(values))


async def reset(dut):
    await start_and_reset(dut, ("in_valid", "in_last", "in_data"))


async def run_row(dut, row):
    """One row through the DUT; returns the probabilities it streams out."""
    while not dut.in_ready.value:
        await FallingEdge(dut.clk)
    for j, v in enumerate(row):
        dut.in_valid.value = 1
        dut.in_data.value = int(v)
        dut.in_last.value = int(j == len(row) - 1)
        await FallingEdge(dut.clk)
    dut.in_valid.value = 0
    dut.in_last.value = 0
    out = []
    while True:
        await FallingEdge(dut.clk)
        if dut.out_valid.value:
            out.append(dut.out_data.value.to_unsigned())
            if dut.out_last.value:
                return out


async def run_op(dut, op):
    c = {name: v for name, v in op.consts.items()}
    for name, want in FIXED.items():
        assert int(c[name]) == want, f"{op.name}: plan has {name} = {int(c[name])}, the RTL fixes {want}"
    assert int(c["in_bits"]) <= IN_W
    dut.K.value = int(c["K"])
    dut.G.value = int(c["G"])
    dut.out_bits.value = int(c["out_bits"])
    dut.C.value = pack(c["C"], 31)
    dut.DS.value = pack(c["DS"], 26)
    q, want = rows(op.inputs[0]), rows(op.outputs[0])
    assert q.shape[1] <= MAX_L, f"{op.name}: rows of {q.shape[1]} exceed the RTL's MAX_L = {MAX_L}"
    for r in range(q.shape[0]):
        differs = row_difference(op.name, r, "logits", q[r], await run_row(dut, q[r]), want[r])
        if differs:
            return differs
    return None


@cocotb.test()
async def softmax_conformance(dut):
    await replay_rows(dut, conformance_ops("bitshift-softmax"), "bitshift-softmax conformance", run_op, reset)


@cocotb.test()
async def softmax_golden(dut):
    await replay_rows(dut, golden_ops("softmax"), "golden softmax", run_op, reset)
