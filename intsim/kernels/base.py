"""The one kernel interface (docs/arithmetic.md, section K0).

Every kernel - requantize (A6), residual add (K5), matmul (K1) and the non-linear candidates of
K2-K4 - is an object with the same five methods:

    plan(in_scale, in_fmt, **options) -> KernelPlan     offline, float allowed: real scales (and a
                                                         family's own options) -> integer constants
    reference(inputs, plan) -> ndarray                   plain NumPy that reads like the spec
    fast(inputs, plan) -> ndarray                        numba/BLAS, bit-identical to reference
    cost(shape, plan=None) -> {kind: ops per element}    integer operations per output element
    error_bound(plan, inputs) -> ndarray                 per output element, |real out - float f(in)|

`inputs` is a sequence of integer arrays (one per operand); `in_scale` and `in_fmt` are one value
for a single-operand kernel and a tuple for a two-operand one. The options a plan takes are fixed
per family (softmax: out_bits; gelu: sample and the candidate's knobs; layernorm: gamma, beta, eps;
requantize and add: out_scale, out_fmt, multiplier_bits), so whoever plans a layer passes the same
options to every candidate of its family and never looks at a signature.

At run time only `plan.consts` (integers), `plan.in_fmt` and `plan.out_fmt` are read: an executor
rebuilds a KernelPlan from an integer program op without any float.
"""
from dataclasses import dataclass, field

import numpy as np

from ..arith import ArithSpecError, IntFormat

OP_KINDS = ("mul", "shift", "add", "div", "cmp")


@dataclass
class KernelPlan:
    kernel: str                 # candidate name, e.g. "poly-gelu"
    consts: dict                # name -> Python int or int64 ndarray: integer constants only
    in_fmt: object              # IntFormat, or a tuple of them for a two-operand kernel
    out_fmt: IntFormat
    out_scale: object = 1.0     # real value of one output LSB (offline bookkeeping, never run)
    info: dict = field(default_factory=dict)            # offline facts worth reporting (fitted a, b)
    in_scale: object = None     # real value of one input LSB (offline)
    float_params: dict = field(default_factory=dict)    # parameters of the float function f (offline)


class Kernel:
    """Base class; subclasses set the class attributes and implement the five methods."""
    name = ""           # candidate name used on the command line and in plans
    family = ""         # "requantize", "add", "matmul", "gelu", "softmax" or "layernorm"
    spec_section = ""   # e.g. "K3.1"
    title = ""          # one line for tables

    def plan(self, in_scale, in_fmt, **options):
        raise NotImplementedError

    def reference(self, inputs, plan):
        raise NotImplementedError

    def fast(self, inputs, plan):
        raise NotImplementedError

    def cost(self, shape, plan=None):
        """Integer operations per output element of an output of `shape` (row length = shape[-1]),
        by kind {'mul', 'shift', 'add', 'div', 'cmp'}, counted from the kernel's definition (row
        reductions amortised over the row)."""
        raise NotImplementedError

    def error_bound(self, plan, inputs):
        """Per output element: a proved bound on |out * out_scale - f(inputs * in_scale)|."""
        raise NotImplementedError

    def float_reference(self, x, plan=None):
        """The float function the kernel approximates (with the plan's float parameters)."""
        raise NotImplementedError

    def check_consts(self, plan):
        """Refuse, at load time, constants that no plan could have made (see `Consts`); `plan` is
        rebuilt from a program: its integer constants and the formats of the op's tensors."""
        Consts(self, plan.consts, ())


def row_length(shape):
    """The last axis of an output shape, checked (cost conventions amortise per-row work on it)."""
    try:
        n = int(tuple(shape)[-1])
    except (TypeError, IndexError, ValueError):
        raise ArithSpecError(f"cost: shape must be a non-empty tuple of ints, got {shape!r}") from None
    if n < 1:
        raise ArithSpecError(f"cost: the row length (last axis of {tuple(shape)}) must be >= 1")
    return n


class Consts:
    """Load-time checks of a plan's integer constants: the preconditions the kernel's proofs rely on
    (names, ranges, the values the spec fixes, vector lengths). A program carrying constants that no
    plan could have produced is refused before it runs (an out-of-range shift or a short table would
    be undefined, or silently wrong, in the fast path)."""

    def __init__(self, kernel, consts, names):
        self.where = f"{kernel.name} ({kernel.spec_section})"
        self.c = consts
        missing = sorted(set(names) - set(consts))
        extra = sorted(set(consts) - set(names))
        if missing or extra:
            raise ArithSpecError(f"{self.where}: constants missing {missing}, unexpected {extra}")

    def scalar(self, name, lo, hi):
        v = self.c[name]
        if isinstance(v, np.ndarray):
            if v.ndim:
                raise ArithSpecError(f"{self.where}: constant {name} must be a scalar, has shape {v.shape}")
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= int(v) <= hi:
            raise ArithSpecError(f"{self.where}: constant {name} = {v!r} outside [{lo}, {hi}]")
        return int(v)

    def fixed(self, name, value):
        """A constant the spec fixes (a table, a precision): it must be exactly the spec's."""
        v = np.asarray(self.c[name])
        if v.shape != np.shape(value) or not np.array_equal(v, value):
            raise ArithSpecError(f"{self.where}: constant {name} is not the spec's value")
        return value

    def vector(self, name, length, lo, hi):
        v = np.asarray(self.c[name])
        if v.dtype.kind not in "iu" or v.shape != (length,):
            raise ArithSpecError(f"{self.where}: constant {name} must be {length} integers, has "
                                 f"dtype {v.dtype} and shape {v.shape}")
        if length and (int(v.min()) < lo or int(v.max()) > hi):
            raise ArithSpecError(f"{self.where}: constant {name} holds {int(v.min())}..{int(v.max())}, "
                                 f"outside [{lo}, {hi}]")
        return v.astype(np.int64)

    def require(self, ok, message):
        if not ok:
            raise ArithSpecError(f"{self.where}: {message}")
