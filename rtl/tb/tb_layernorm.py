"""cocotb testbench of rtl/intsim_isqrt_layernorm.sv (spec K4.2) against dumped vectors.

layernorm_conformance: every `isqrt-layernorm` case of the conformance set (input widths 2..24,
pre-shift p = 0 and p > 0, constant rows, C = 1, gamma = 0, small variance, C = 4096), then one
row with an input outside the plan's format, which must raise out_err (K4.0.2).
layernorm_golden: the layernorm ops of the model golden set named in INTSIM_GOLDEN_OPS (e.g.
act/cls_pos -> act/blocks.0.norm1, 100 rows of C = 96, with the op's constants from const/).

Protocol: inputs are driven and outputs sampled on the falling clock edge (the DUT works on the
rising edge). Per op, g[c] and B[c] are written through the coefficient port, one channel per
cycle; then per row C values, one per cycle while in_ready, and the row's C outputs, one per cycle
once out_valid rises: 2 + 32 d + 27 cycles after the last input, d <= 7 the isqrt's divisions
(K4.1.3); a row that takes longer fails (LATENCY_MAX), so a hung isqrt cannot stall the run.
"""
import cocotb
from cocotb.triggers import FallingEdge, RisingEdge, SimTimeoutError, with_timeout

from tb_vectors import conformance_ops, golden_ops, replay_rows, row_difference, rows, start_and_reset

IN_W = 24       # the RTL's parameters (defaults)
MAX_C = 4096
G_W = 24
SCALARS = ("p", "u", "E", "F", "h")
CLOCK_NS = 10
# cycles from a row's last input to its first output: D, then R/t/N, then at most 7 divisions of
# 32 quotient bits (K4.1.3) and the 27-bit reciprocal; a hang (an isqrt that never stops) fails here
LATENCY_MAX = 2 + 7 * 32 + 27


async def reset(dut):
    await start_and_reset(dut, ("in_valid", "in_data", "coef_we", "coef_addr", "coef_g", "coef_B"), CLOCK_NS)


async def load_plan(dut, op):
    """The op's constants onto the ports and into the g, B memories."""
    c = op.consts
    C = int(c["C"])
    bits, signed = op.out_format()
    assert 1 <= C <= MAX_C, f"{op.name}: C = {C} exceeds the RTL's MAX_C = {MAX_C}"
    assert int(c["in_lo"]) >= -(1 << (IN_W - 1)) and int(c["in_hi"]) < (1 << (IN_W - 1)), f"{op.name}: input wider than IN_W"
    assert signed and bits <= 32, f"{op.name}: output s{bits} is not a signed format of <= 32 bits"
    g, B = c["g"], c["B"]
    assert g.shape == (C,) and B.shape == (C,)
    assert all(-(1 << (G_W - 1)) <= int(v) < (1 << (G_W - 1)) for v in (g.min(), g.max())), f"{op.name}: g wider than G_W"
    dut.C.value = C
    dut.in_lo.value = int(c["in_lo"])
    dut.in_hi.value = int(c["in_hi"])
    for name in SCALARS:
        getattr(dut, name).value = int(c[name])
    dut.coef_we.value = 1
    for ch in range(C):
        dut.coef_addr.value = ch
        dut.coef_g.value = int(g[ch])
        dut.coef_B.value = int(B[ch])
        await FallingEdge(dut.clk)
    dut.coef_we.value = 0


async def run_row(dut, row):
    """One row through the DUT; returns (outputs, out_err)."""
    while not dut.in_ready.value:
        await FallingEdge(dut.clk)
    dut.in_valid.value = 1
    for v in row:
        dut.in_data.value = int(v)
        await FallingEdge(dut.clk)
    dut.in_valid.value = 0
    if not dut.out_valid.value:
        try:
            await with_timeout(RisingEdge(dut.out_valid), LATENCY_MAX * CLOCK_NS, "ns")
        except SimTimeoutError:
            raise AssertionError(f"no output within {LATENCY_MAX} cycles of the row's last input") from None
        await FallingEdge(dut.clk)
    out, err = [], False
    while True:
        assert dut.out_valid.value, "out_valid dropped inside a row"
        out.append(dut.out_data.value.to_signed())
        err |= bool(dut.out_err.value)
        if dut.out_last.value:
            await FallingEdge(dut.clk)
            return out, err
        await FallingEdge(dut.clk)


async def run_op(dut, op):
    await load_plan(dut, op)
    q, want = rows(op.inputs[0]), rows(op.outputs[0])
    for r in range(q.shape[0]):
        try:
            got, err = await run_row(dut, q[r])
        except AssertionError as e:        # the DUT is stuck: no later row can run
            raise AssertionError(f"{op.name}: row {r}: {e}") from None
        if err:
            return f"{op.name}: row {r}: out_err raised on an input inside the plan's format"
        differs = row_difference(op.name, r, "q", q[r], got, want[r])
        if differs:
            return differs
    return None


async def check_range_flag(dut, ops):
    """K4.0.2: a row with one value just above in_hi (of a plan narrower than IN_W) raises out_err
    on its outputs (the software raises IntOverflowError; nothing is compared but the flag)."""
    op = next(o for o in ops if int(o.consts["in_hi"]) < (1 << (IN_W - 1)) - 1)
    await load_plan(dut, op)
    row = rows(op.inputs[0])[0].copy()
    row[len(row) // 2] = int(op.consts["in_hi"]) + 1
    _, err = await run_row(dut, row)
    assert err, f"{op.name}: a value above in_hi did not raise out_err"
    _, err = await run_row(dut, rows(op.inputs[0])[0])
    assert not err, f"{op.name}: out_err stayed raised on the next, valid row"


@cocotb.test()
async def layernorm_conformance(dut):
    ops = conformance_ops("isqrt-layernorm")
    await replay_rows(dut, ops, "isqrt-layernorm conformance", run_op, reset)
    await check_range_flag(dut, ops)


@cocotb.test()
async def layernorm_golden(dut):
    await replay_rows(dut, golden_ops("layernorm"), "golden layernorm", run_op, reset)
