"""The one kernel interface (docs/arithmetic.md, section K0).

Every kernel - requantize (A6), residual add (K5), matmul (K1) and the non-linear candidates of
K2-K4 - is an object with the same methods:

    plan(in_scale, in_fmt, **options) -> KernelPlan     offline, float allowed: real scales (and a
                                                         family's own options) -> integer constants
    reference(inputs, plan) -> ndarray                   plain NumPy that reads like the spec
    fast(inputs, plan) -> ndarray                        numba/BLAS, bit-identical to reference
    bind(plan) -> plan                                   once per program op: plan.runtime, the
                                                         run-time form fast() reads (optional)
    cost(shape, plan=None) -> {kind: ops per element}    integer operations per output element
    error_bound(plan, inputs) -> ndarray                 per output element, |real out - float f(in)|
    const_formats(plan) -> {name: arith.ConstFormat}     the register of each plan constant and the
                                                         values the spec allows in it (the kernel's
                                                         spec section states them)
    datapath_widths(plan) -> {register: bits}            the internal registers whose width depends
                                                         on the plan (golden manifests declare them)
    check_consts(plan)                                   load time: the constants in their registers
                                                         (`Consts`) and the preconditions between
                                                         them that the kernel's proofs rely on

`inputs` is a sequence of integer arrays (one per operand); `in_scale` and `in_fmt` are one value
for a single-operand kernel and a tuple for a two-operand one. The options a plan takes are fixed
per family (softmax: out_bits; gelu: sample and the candidate's knobs; layernorm: gamma, beta, eps;
requantize and add: out_scale, out_fmt, multiplier_bits), so whoever plans a layer passes the same
options to every candidate of its family and never looks at a signature.

At run time only `plan.consts` (integers), `plan.in_fmt` and `plan.out_fmt` are read: an executor
rebuilds a KernelPlan from an integer program op without any float.
"""
from dataclasses import dataclass, field, replace

import numba
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
    runtime: object = field(default=None, repr=False, compare=False)   # Kernel.bind's run-time form


class Kernel:
    """Base class; subclasses set the class attributes and implement the methods above."""
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

    def bind(self, plan):
        """The plan with `plan.runtime` set to what fast() would otherwise rebuild from the
        constants on every call (checked multipliers, limits), once per program op. Default:
        nothing to keep. fast() must work without it (a plan made by plan() has none)."""
        return plan

    def cost(self, shape, plan=None):
        """Integer operations per output element of an output of `shape` (row length = shape[-1]),
        by kind {'mul', 'shift', 'add', 'div', 'cmp'}, counted from the kernel's definition (row
        reductions amortised over the row)."""
        raise NotImplementedError

    def error_bound(self, plan, inputs):
        """Per output element: a proved bound on |out * out_scale - f(inputs * in_scale)|."""
        raise NotImplementedError

    def const_formats(self, plan):
        """{constant name: arith.ConstFormat} for every constant of plan.consts (spec: the kernel
        section's constants). Read by golden manifests and by ops.check_constants."""
        raise NotImplementedError

    def datapath_widths(self, plan):
        """{register: bits} of the internal registers (spec step names) whose width this plan
        decides, as its spec section's Registers paragraph states them: golden manifests declare
        them per op so that RTL is sized from the manifest. Default: none."""
        return {}

    def float_reference(self, x, plan=None):
        """The float function the kernel approximates (with the plan's float parameters)."""
        raise NotImplementedError

    def check_consts(self, plan):
        """Refuse, at load time, constants that no plan could have made (see `Consts`); `plan` is
        rebuilt from a program: its integer constants and the formats of the op's tensors. The
        default checks the declared registers; a kernel adds its preconditions between constants."""
        Consts(self, plan)


TABLE_IN_BITS_MAX = 12      # 4096 entries: an elementwise kernel's table stays in the L1 cache


class ElementTable:
    """An elementwise kernel for one plan as the table of its outputs over every code of its input
    format, computed once by the kernel's own arithmetic (so equal to it by construction): looking
    each element up replaces the arithmetic. An input outside the format goes to `fallback` (the
    kernel itself), which refuses it exactly as it always does."""

    def __init__(self, table, lo, fallback):
        self.table, self.lo, self.fallback = table, lo, fallback

    @classmethod
    def of(cls, kernel, plan):
        """The table of kernel.arithmetic for plan (a plan of an elementwise kernel)."""
        plan = replace(plan, runtime=None)
        fmt = plan.in_fmt
        codes = np.arange(fmt.lo, fmt.hi + 1, dtype=np.int64).astype(fmt.storage)
        return cls(kernel.arithmetic([codes], plan), fmt.lo, lambda x: kernel.arithmetic([x], plan))

    def then(self, requantizer):
        """The table of requantizer(kernel(x)) (per tensor, A6): the kernel and the requant after
        it in one lookup. None when an entry's product would leave int64 (then the two run apart and
        the requant raises only if such an input occurs)."""
        try:
            table = requantizer(self.table)
        except ArithSpecError:
            return None
        return ElementTable(table, self.lo, lambda x: requantizer(self.fallback(x)))

    def __call__(self, x):
        x = np.asarray(x)
        if x.dtype.kind not in "iu" or x.size == 0:
            return self.fallback(x)
        out = np.empty(x.shape, dtype=self.table.dtype)
        if _lookup(np.ascontiguousarray(x).reshape(-1), self.table, self.lo, out.reshape(-1)):
            return self.fallback(x)          # a code outside the table: the kernel decides
        return out


@numba.njit(cache=True, nogil=True)
def _lookup(x, table, lo, out):
    """out[i] = table[x[i] - lo]; returns how many x[i] lie outside the table (their out is junk)."""
    last = table.size - 1
    outside = 0
    for i in range(x.size):
        j = np.int64(x[i]) - lo
        c = min(max(j, 0), last)
        outside += c != j
        out[i] = table[c]
    return outside


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
    """Load-time checks of a plan's integer constants, so that a program carrying constants no plan
    could have produced is refused before it runs (an out-of-range shift or a short table would be
    undefined, or silently wrong, in the fast path). Each constant is checked against the register
    its kernel declares (`const_formats`: the names, integer values, shapes and allowed ranges of
    spec A1 "Constant registers" and the kernel's Registers paragraph); `fixed` and `require` add
    the preconditions between constants that the kernel's proofs rely on. `c[name]` is a checked
    value: a Python int for a scalar, an int64 array otherwise."""

    def __init__(self, kernel, plan):
        self.where = f"{kernel.name} ({kernel.spec_section})"
        self.c = plan.consts
        try:
            declared = kernel.const_formats(plan)
        except (TypeError, ValueError, KeyError, IndexError) as e:
            raise ArithSpecError(f"{self.where}: malformed constants ({type(e).__name__}: {e})") from None
        check_registers(self.where, declared, plan.consts)

    def __getitem__(self, name):
        v = np.asarray(self.c[name])
        return int(v) if v.ndim == 0 else v.astype(np.int64)

    def fixed(self, name, value):
        """A constant the spec fixes (a table, a precision): it must be exactly the spec's."""
        v = np.asarray(self.c[name])
        if v.shape != np.shape(value) or not np.array_equal(v, value):
            raise ArithSpecError(f"{self.where}: constant {name} is not the spec's value")
        return value

    def require(self, ok, message):
        if not ok:
            raise ArithSpecError(f"{self.where}: {message}")


def check_registers(where, declared, consts):
    """Every constant of `consts` declared, every declared one present and inside its register
    (arith.ConstFormat.violation); ArithSpecError naming the first that is not."""
    missing = sorted(set(declared) - set(consts))
    extra = sorted(set(consts) - set(declared))
    if missing or extra:
        raise ArithSpecError(f"{where}: constants missing {missing}, unexpected {extra}")
    for name, fmt in declared.items():
        why = fmt.violation(consts[name])
        if why:
            raise ArithSpecError(f"{where}: constant {name}: {why}")
