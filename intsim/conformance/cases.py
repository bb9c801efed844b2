"""Conformance cases: what one directed or random vector set of one kernel holds, and the
format and code helpers every generator shares."""
from dataclasses import dataclass, field

import numpy as np

from ..arith import IntFormat

@dataclass
class Case:
    """One directed or random vector set of one kernel: inputs -> reference outputs."""
    kernel: str
    name: str
    kind: str                       # op kind of the integer program (intsim.ops)
    inputs: list                    # [(suffix, int array, IntFormat)]; axis 0 is the batch
    out_fmts: list                  # [IntFormat] per output
    consts: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    spec: str = ""
    out_names: tuple = ("out",)
    out_shape: tuple = None         # of every output, without the batch axis (None: the input's)


def signed(bits, narrow=False):
    return IntFormat(bits, signed=True, narrow=narrow)


def unsigned(bits):
    return IntFormat(bits, signed=False)


def random_codes(rng, fmt, shape):
    return rng.integers(fmt.lo, fmt.hi + 1, size=shape, dtype=np.int64)


def with_extremes(x, fmt):
    """x with its first elements replaced by the format's ends and 0 (every vector hits both ends)."""
    flat = x.reshape(-1)
    ends = [fmt.lo, fmt.hi, 0, fmt.lo + 1, fmt.hi - 1][:flat.size]
    flat[:len(ends)] = ends
    return x



def all_codes(fmt, cols=None):
    q = np.arange(fmt.lo, fmt.hi + 1, dtype=np.int64)
    return q if cols is None else q.reshape(-1, cols)
