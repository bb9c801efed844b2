"""Test vectors for the cocotb testbenches, read from golden-format dumps (docs/golden.md).

Two sources, both selected by environment variables that tests/test_rtl.py sets:
  INTSIM_CONFORMANCE   a conformance set (intsim conformance --out DIR): every case of one kernel
  INTSIM_GOLDEN        a model golden set (golden/fmnist_w8a8) and
  INTSIM_GOLDEN_OPS    comma-separated op names of that set to replay (one layer each)
Nothing here computes an expected value: every expected output is a dumped tensor. The dumps are
read with the standard library and NumPy alone, as any testbench can read them from the documented
layout (manifest.json, .npy files): the testbenches need no intsim, and the simulator's Python
starts in well under a second.
"""
import json
import os
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge
import numpy as np


class DumpOp:
    """One op record of a dump's manifest; its tensors are read from their .npy files as int64."""

    def __init__(self, root, record, entries):
        self.root, self.record, self.entries = Path(root), record, entries
        self.name, self.kind, self.attrs = record["name"], record["kind"], record["attrs"]

    def tensor(self, tid):
        return np.load(self.root / self.entries[tid]["files"]["npy"], allow_pickle=False).astype(np.int64)

    @property
    def inputs(self):
        return [self.tensor(t) for t in self.record["inputs"]]

    @property
    def outputs(self):
        return [self.tensor(t) for t in self.record["outputs"]]

    @property
    def consts(self):
        return {c: self.tensor(t) for c, t in self.record["consts"].items()}

    def out_format(self, i=0):
        """(bits, signed) of the i-th output, from its manifest entry."""
        e = self.entries[self.record["outputs"][i]]
        return int(e["bits"]), bool(e["signed"])


def dump_ops(path):
    """Every op of a dump, in execution order."""
    manifest = json.loads((Path(path) / "manifest.json").read_text())
    return [DumpOp(path, record, manifest["tensors"]) for record in manifest["ops"]]


def conformance_ops(kernel):
    """The ops of one kernel's cases in the conformance set (empty when none is configured)."""
    path = os.environ.get("INTSIM_CONFORMANCE")
    if not path:
        return []
    return [o for o in dump_ops(path) if o.attrs.get("kernel") == kernel]


def golden_ops(kind):
    """The configured golden-set ops of one kind (e.g. 'requant', 'softmax'), in the given order."""
    path, names = os.environ.get("INTSIM_GOLDEN"), os.environ.get("INTSIM_GOLDEN_OPS", "")
    if not path:
        return []
    by_name = {o.name: o for o in dump_ops(path)}
    return [by_name[n] for n in names.split(",") if n and by_name[n].kind == kind]


def out_format(op, i=0):
    """(bits, signed) of an op's i-th output, from the manifest entry."""
    return op.out_format(i)


def requant_elements(op):
    """Flat per-element (x, m, k, expected) of a requant op; per-channel m, k broadcast along the
    op's channel axis, attrs["axis"] counted from the end (the last by default; spec A6)."""
    x = op.inputs[0]
    want = op.outputs[0]
    c = op.consts
    shape = [1] * x.ndim
    shape[int(op.attrs.get("axis", -1))] = -1

    def per_element(v):
        return np.broadcast_to(v.reshape(shape), x.shape) if v.ndim else np.full(x.shape, int(v))
    return x.ravel(), per_element(c["m"]).ravel(), per_element(c["k"]).ravel(), want.ravel()


def rows(a):
    """An array as (rows, last axis)."""
    return a.reshape(-1, a.shape[-1])


def row_difference(op_name, r, label, q_row, got, want_row):
    """None when the DUT's row `got` equals the dumped `want_row`, else a message naming the first
    differing element with both values (`label` names the inputs: logits, q, ...)."""
    want = [int(v) for v in want_row]
    if got == want:
        return None
    j = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
    return f"{op_name}: row {r}, element {j}: {label} {q_row.tolist()[:12]}... dut {got[j]}, golden {want[j]}"


async def replay(dut, ops, what, run_op, size=lambda op: op.inputs[0].size, unit="elements"):
    """Every op through `run_op(dut, op)` (None, or a message naming the first difference); logs
    the counts and fails with the first differing op."""
    assert ops, f"no {what} vectors configured"
    failures = [msg for op in ops if (msg := await run_op(dut, op)) is not None]
    dut._log.info(f"{what}: {len(ops)} ops, {sum(size(op) for op in ops)} {unit}, {len(failures)} failing ops")
    assert not failures, f"{len(failures)} of {len(ops)} ops differ; first: {failures[0]}"


async def replay_rows(dut, ops, what, run_op, reset):
    """The row units' replay: the DUT reset first, then every op, counting rows."""
    await reset(dut)
    await replay(dut, ops, what, run_op, size=lambda op: rows(op.inputs[0]).shape[0], unit="rows")


async def start_and_reset(dut, idle_inputs, clock_ns=10):
    """Start the clock, hold rst_n low for two cycles with `idle_inputs` at 0, then release it;
    returns on a falling edge (the testbenches drive on falling edges, the DUTs work on rising)."""
    cocotb.start_soon(Clock(dut.clk, clock_ns, unit="ns").start())
    dut.rst_n.value = 0
    for name in idle_inputs:
        getattr(dut, name).value = 0
    await FallingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst_n.value = 1
    await FallingEdge(dut.clk)
