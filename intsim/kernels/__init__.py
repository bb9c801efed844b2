"""The kernel library: one interface for every kernel (base.Kernel, spec K0).

Arithmetic kernels: REQUANTIZE (A6), RESIDUAL_ADD (K5), MATMUL (K1). Non-linear candidates by
family (GELU K3, Softmax K2, LayerNorm K4, Sigmoid K8.1, QuickGELU K8.2): `candidates(family)` ->
{name: kernel}, `get_kernel(family, name)`.
"""
from ..arith import ArithSpecError
from . import gelu, layernorm, sigmoid, softmax
from .add import RESIDUAL_ADD
from .base import Kernel, KernelPlan, check_registers
from .matmul import MATMUL
from .requantize import REQUANTIZE

FAMILIES = ("gelu", "softmax", "layernorm", "sigmoid", "quickgelu")
DEFAULTS = {"gelu": "poly-gelu", "softmax": "bitshift-softmax", "layernorm": "isqrt-layernorm",
            "sigmoid": "bitshift-sigmoid", "quickgelu": "bitshift-quickgelu"}
_CANDIDATES = {"gelu": gelu.CANDIDATES, "softmax": softmax.CANDIDATES, "layernorm": layernorm.CANDIDATES,
               "sigmoid": sigmoid.SIGMOID_CANDIDATES, "quickgelu": sigmoid.QUICKGELU_CANDIDATES}

__all__ = ["FAMILIES", "DEFAULTS", "Kernel", "KernelPlan", "MATMUL", "REQUANTIZE", "RESIDUAL_ADD",
           "candidates", "check_registers", "get_kernel"]


def candidates(family):
    """{name: kernel} of one non-linear family, in the order the module declares them."""
    if family not in FAMILIES:
        raise ArithSpecError(f"unknown kernel family {family!r}; families: {', '.join(FAMILIES)}")
    return _CANDIDATES[family]


def get_kernel(family, name):
    cands = candidates(family)
    if name not in cands:
        raise ArithSpecError(f"unknown {family} kernel {name!r}; candidates: {', '.join(cands)}")
    return cands[name]
