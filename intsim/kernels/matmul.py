"""Exact integer matrix product (spec K1): the names every caller uses.

reference: int64 np.matmul, plainly exact and slow (K1.1).
fast:      the engine layer of gemm.py (K1.2-K1.5): ONNX Runtime's uint8 x int8 integer products
           when installed and exact on this CPU, else float BLAS on integer-valued operands; numba
           for tiny products. Every engine returns the reference's integers.
Both check the result fits the accumulator (no wrap, spec A4).
"""
from ..arith import IntFormat
from .gemm import (ACC32, ENGINES, FLOAT32_EXACT, FLOAT64_EXACT, MAX_FLOAT32_BLOCKS, PreparedWeight,  # noqa: F401
                   block_size, gemm, gemm_reference, magnitude, prepare_weight)


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
