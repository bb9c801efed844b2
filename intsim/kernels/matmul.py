"""Exact integer matrix product (spec K1): the names every caller uses, and the MATMUL kernel.

reference: int64 np.matmul, plainly exact and slow (K1.1).
fast:      the engine layer of gemm.py (K1.2-K1.5): ONNX Runtime's uint8 x int8 integer products
           when installed and exact on this CPU, else float BLAS on integer-valued operands; numba
           for tiny products. Every engine returns the reference's integers.
Both check the result fits the accumulator (no wrap, spec A4).
"""
import numpy as np

from .. import arith
from ..arith import ConstFormat, IntFormat
from .base import Kernel, KernelPlan
from .gemm import (ACC32, ENGINES, FLOAT32_EXACT, FLOAT64_EXACT, MAX_FLOAT32_BLOCKS, PreparedWeight,  # noqa: F401
                   Product, block_size, gemm, gemm_reference, magnitude, prepare_weight)


def matmul_ref(a, b, bias=None, acc_fmt: IntFormat = ACC32):
    """acc = a @ b (+ bias) in exact int64, checked against acc_fmt. Spec K1.1."""
    return gemm_reference(a, b, bias, acc_fmt)


def matmul(a, b, a_fmt: IntFormat, b_fmt: IntFormat, bias=None, acc_fmt: IntFormat = ACC32, b_float=None,
           engine="auto", b_prepared: PreparedWeight = None):
    """Fast exact product for operands within the declared formats a_fmt, b_fmt. Spec K1.2-K1.5.

    a (and b, unless it is a prepared weight) is checked against its format here (exactness
    depends on it), with no pass when its storage dtype cannot leave the format.
    engine: one of ENGINES ('auto' picks the fastest exact one). b_prepared: b prepared once with
    prepare_weight (then b may be None). b_float: accepted from older callers and not used (a weight
    is laid out once by prepare_weight, for whichever engine runs)."""
    return gemm(a, b, a_fmt, b_fmt, bias=bias, acc_fmt=acc_fmt, engine=engine, b_prepared=b_prepared)


def group_columns(per_group, group, columns):
    """K1.9: a per-group array (Out, groups) spread over the input columns it covers (Out, columns):
    column t takes group t // group."""
    return np.repeat(per_group, group, axis=1)[:, :columns]


def grouped_weight_format(w_fmt: IntFormat, scale_fmt: IntFormat):
    """K1.9: the narrow signed format of the widest q x group_scale (12 bits for 4-bit q and an
    8-bit multiplier): the weight register the grouped product reads."""
    return IntFormat((w_fmt.hi * scale_fmt.hi).bit_length() + 1, signed=True, narrow=True)


def grouped_weight(q, group_scale, group):
    """K1.9: the expanded weight register q[j, t] x group_scale[j, t // group], int64."""
    q = np.asarray(q, np.int64)
    return q * group_columns(np.asarray(group_scale, np.int64), group, q.shape[1])


class Matmul(Kernel):
    name = "matmul"
    family = "matmul"
    spec_section = "K1"
    title = "exact integer product a @ b (+ bias) into the accumulator format, never a wrap"

    def plan(self, in_scale, in_fmt, acc_fmt: IntFormat = ACC32, inner=None):
        """No constants of its own (the operands and a bias are the layer's): the accumulator scale
        is the product of the operand scales. `inner` (K) is recorded for the cost."""
        sa, sb = in_scale
        return KernelPlan(self.name, {}, tuple(in_fmt), acc_fmt, float(sa) * float(sb),
                          {} if inner is None else {"inner": int(inner)}, tuple(in_scale))

    @staticmethod
    def prepare(b, b_fmt: IntFormat):
        """A constant right operand checked against its format and laid out once, for the engine of
        the enclosing `gemm.use_engine` scope (the Executable's)."""
        return prepare_weight(arith.integer_input("matmul constant operand", b), b_fmt)

    def reference(self, inputs, plan):
        a, b = inputs
        b = b.b if isinstance(b, PreparedWeight) else b
        return matmul_ref(a, b, plan.consts.get("bias"), plan.out_fmt)

    def bind(self, plan):
        """The plan with its gemm.Product (formats, bias register and engine bounds checked once)."""
        plan.runtime = self._product(plan)
        return plan

    @staticmethod
    def _product(plan):
        return Product(plan.in_fmt[0], plan.in_fmt[1], plan.consts.get("bias"), plan.out_fmt)

    def fast(self, inputs, plan, requant=None):
        """The exact product; with `requant` (a requantize.Requantizer, per tensor or per output
        column), requant(acc) computed in the same pass, acc never stored (gemm.Product)."""
        a, b = inputs
        product = plan.runtime if plan.runtime is not None else self._product(plan)
        if isinstance(b, PreparedWeight):
            return product(a, None, b, requant)
        return product(a, b, None, requant)

    def cost(self, shape, plan=None):
        """One multiply-accumulate per inner element (K per output), plus the bias add."""
        if plan is None or "inner" not in plan.info:
            raise arith.ArithSpecError("matmul cost needs a plan with the inner dimension")
        k = float(plan.info["inner"])
        return {"mul": k, "shift": 0.0, "add": k, "div": 0.0, "cmp": 0.0}

    def error_bound(self, plan, inputs):
        """Exact (spec K1): no error beyond the operands' own."""
        a, b = inputs
        b = b.b if isinstance(b, PreparedWeight) else b
        return np.zeros(np.broadcast_shapes(np.shape(a)[:-2], np.shape(b)[:-2])
                        + (np.shape(a)[-2], np.shape(b)[-1]))

    def const_formats(self, plan):
        """K1: a bias (optional), added to the accumulator, is an int32; its shape (one per output
        column) is the layer's."""
        return {"bias": ConstFormat.of(ACC32)} if "bias" in plan.consts else {}

    def float_reference(self, x, plan=None):
        a, b = x
        return np.matmul(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


MATMUL = Matmul()
