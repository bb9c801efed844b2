"""The kernel library. Non-linear candidates by family: `CANDIDATES[family][name]`."""
import importlib

from ..arith import ArithSpecError

FAMILIES = ("gelu", "softmax", "layernorm")
DEFAULTS = {"gelu": "poly-gelu", "softmax": "bitshift-softmax", "layernorm": "isqrt-layernorm"}


def candidates(family):
    """{name: kernel} of one family, in the order the module declares them."""
    if family not in FAMILIES:
        raise ArithSpecError(f"unknown kernel family {family!r}; families: {', '.join(FAMILIES)}")
    return importlib.import_module(f"{__name__}.{family}").CANDIDATES


def get_kernel(family, name):
    cands = candidates(family)
    if name not in cands:
        raise ArithSpecError(f"unknown {family} kernel {name!r}; candidates: {', '.join(cands)}")
    return cands[name]
