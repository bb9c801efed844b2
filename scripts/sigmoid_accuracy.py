"""The numbers of docs/arithmetic.md K8.1.4: the table error delta of bitshift-sigmoid (before the
output rounding) over input widths and scales, and the max error on every int8 code at S = 0.05.

    python scripts/sigmoid_accuracy.py
"""
import numpy as np

from intsim import floatfn
from intsim.arith import ArithSpecError, IntFormat
from intsim.kernels.sigmoid import bitshift_sigmoid
from intsim.kernels.softmax import bitshift_exp_ref


def table_delta(plan, fmt, s):
    d = np.arange(0, max(-fmt.lo, fmt.hi) + 1)
    e = bitshift_exp_ref(d, plan.consts)
    return float(np.max(np.abs(e / (2.0 ** 30 + e) - floatfn.sigmoid(-d * s))))


def main():
    worst, at = 0.0, None
    for bits in (2, 4, 8, 12, 16):
        fmt = IntFormat(bits)
        for s in 2.0 ** np.linspace(-30, 4, 69):
            try:
                plan = bitshift_sigmoid.plan(s, fmt, 16)
            except ArithSpecError:
                continue
            delta = table_delta(plan, fmt, s)
            if delta > worst:
                worst, at = delta, (bits, s)
    print(f"max delta over widths 2..16 and scales 2^-30..2^4: {worst:.3g} (at {at[0]} bits, S = {at[1]:.3g})")
    q = np.arange(-128, 128)
    for o in (8, 16):
        plan = bitshift_sigmoid.plan(0.05, IntFormat(8), o)
        err = np.abs(bitshift_sigmoid.fast([q], plan) / 2.0 ** o - floatfn.sigmoid(q * 0.05))
        print(f"int8, S = 0.05, O = {o}: max error {err.max():.3g}, stated bound "
              f"{bitshift_sigmoid.error_bound(plan, [q]).max():.3g}")


if __name__ == "__main__":
    main()
