"""Test vectors for the cocotb testbenches, read from golden-format dumps (docs/golden.md).

Two sources, both selected by environment variables that tests/test_rtl.py sets:
  INTSIM_CONFORMANCE   a conformance set (intsim conformance --out DIR): every case of one kernel
  INTSIM_GOLDEN        a model golden set (golden/fmnist_w8a8) and
  INTSIM_GOLDEN_OPS    comma-separated op names of that set to replay (one layer each)
Nothing here computes an expected value: every expected output is a dumped tensor.
"""
import os

import numpy as np

from intsim.golden import load


def conformance_ops(kernel):
    """Op views of one kernel's cases in the conformance set (empty when none is configured)."""
    path = os.environ.get("INTSIM_CONFORMANCE")
    if not path:
        return []
    return [o for o in load(path).ops if o.attrs.get("kernel") == kernel]


def golden_ops(kind):
    """Op views of the configured golden-set ops of one kind (e.g. 'requant', 'softmax')."""
    path, names = os.environ.get("INTSIM_GOLDEN"), os.environ.get("INTSIM_GOLDEN_OPS", "")
    if not path:
        return []
    g = load(path)
    ops = [g.op(n) for n in names.split(",") if n]
    return [o for o in ops if o.kind == kind]


def out_format(op, i=0):
    """(bits, signed) of an op's i-th output, from the manifest entry."""
    e = op._tensors.entry(op.output_ids[i])
    return int(e["bits"]), bool(e["signed"])


def requant_elements(op):
    """Flat per-element (x, m, k, expected) of a requant op; per-channel m, k broadcast along the
    last axis (spec A6)."""
    x = op.inputs[0]
    want = op.outputs[0]
    m, k = op.consts["m"], op.consts["k"]
    m = np.broadcast_to(m, x.shape) if m.ndim else np.full(x.shape, int(m))
    k = np.broadcast_to(k, x.shape) if k.ndim else np.full(x.shape, int(k))
    return x.ravel(), m.ravel(), k.ravel(), want.ravel()


def rows(a):
    """An array as (rows, last axis)."""
    return a.reshape(-1, a.shape[-1])
