"""What every non-linear kernel provides (docs/arithmetic.md, section K0).

A kernel is planned offline, where float is allowed: `plan(in_scale, in_fmt, **options)` turns
real scales (and for some kernels calibration data or LayerNorm's gamma/beta) into a KernelPlan
holding integer constants only. At run time `reference(q, consts)` (plain NumPy, reads like the
spec) and `fast(q, consts)` (numba) compute the same integers bit for bit.
"""
from dataclasses import dataclass, field

import numpy as np

from ..arith import IntFormat


@dataclass
class KernelPlan:
    kernel: str                 # candidate name, e.g. "poly-gelu"
    consts: dict                # name -> Python int or int64 ndarray: integer constants only
    in_fmt: IntFormat
    out_fmt: IntFormat
    out_scale: float            # real value of one output LSB (offline bookkeeping, never run)
    info: dict = field(default_factory=dict)   # offline facts worth reporting (fitted a, b, ...)


class Kernel:
    """Base class; subclasses set the class attributes and implement the four methods."""
    name = ""           # candidate name used on the command line and in plans
    family = ""         # "gelu", "softmax" or "layernorm"
    spec_section = ""   # e.g. "K3.1"
    title = ""          # one line for tables

    def plan(self, in_scale, in_fmt, **options):
        raise NotImplementedError

    def reference(self, q, consts):
        raise NotImplementedError

    def fast(self, q, consts):
        raise NotImplementedError

    def cost(self, **shape):
        """Integer operations per output element, by kind: {'mul', 'shift', 'add', 'div', 'cmp'}
        counted from the kernel's definition (row reductions amortised over the row length)."""
        raise NotImplementedError

    @staticmethod
    def float_reference(x, **params):
        """The float function the kernel approximates (for accuracy tests and tables)."""
        raise NotImplementedError

    def __call__(self, q, consts):
        return self.fast(q, consts)


def as_int64(q):
    return np.ascontiguousarray(q, dtype=np.int64)
