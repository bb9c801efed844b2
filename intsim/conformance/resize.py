"""Directed and random vectors of Resize (K9): bilinear with every coordinate transformation, up and
down, exact rounding ties of both signs; nearest with every rounding mode."""
import numpy as np

from ..kernels.resize import COORDINATE_MODES, NEAREST_MODES, RESIZE
from .cases import Case, random_codes, signed, unsigned, with_extremes


def _case(name, x, fmt, size, mode="linear", coord="half_pixel", nearest="round_prefer_floor"):
    x = np.asarray(x, dtype=np.int64)
    plan = RESIZE.plan(1.0, fmt, x.shape[-2:], out_hw=size, mode=mode, coord_mode=coord, nearest_mode=nearest)
    attrs = {"mode": mode, "coordinate_transformation_mode": coord, "nearest_mode": nearest,
             "size": [int(v) for v in size]}
    return Case("resize", name, "resize", [("in", x, fmt)], [fmt], dict(plan.consts), attrs, spec="K9",
                out_shape=x.shape[1:-2] + tuple(size))


def resize_cases(rng):
    s8 = signed(8)
    # every coordinate transformation, up (x2, x1.5) and down (/2), 8-bit codes with both ends
    for coord in COORDINATE_MODES:
        for tag, size in (("up2", (8, 10)), ("up1_5", (6, 7)), ("down2", (2, 3))):
            x = with_extremes(random_codes(rng, s8, (2, 3, 4, 5)), s8)
            yield _case(f"linear_{coord}_{tag}", x, s8, size, coord=coord)
    # exact ties of acc / 2^(2P): half-pixel x2 along W puts weights 1/4, 3/4; asymmetric x2 puts
    # 1/2, where odd neighbour sums are ties (x0 + x1 = +-(2j + 1)): both signs
    x = np.array([[[[1, 2, -3, -6, 5, 0, -1, -2]]]])
    yield _case("linear_ties", x, s8, (1, 16), coord="asymmetric")
    # every input width, signed 2..16 and unsigned 8 and 16
    for fmt in [signed(bits) for bits in range(2, 17)] + [unsigned(8), unsigned(16)]:
        x = with_extremes(random_codes(rng, fmt, (1, 2, 5, 4)), fmt)
        yield _case(f"linear_{fmt.describe().split('[')[0]}", x, fmt, (9, 7))
    # nearest: every rounding mode, up and down
    for nearest in NEAREST_MODES:
        for tag, size in (("up", (7, 9)), ("down", (2, 3))):
            x = with_extremes(random_codes(rng, s8, (1, 2, 5, 6)), s8)
            yield _case(f"nearest_{nearest}_{tag}", x, s8, size, mode="nearest", coord="asymmetric",
                        nearest=nearest)
