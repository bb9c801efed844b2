"""Directed and random vectors of the block Hadamard rotation (K10)."""
import numpy as np

from ..kernels import hadamard
from .cases import Case, random_codes, signed, unsigned, with_extremes


def extreme_blocks(fmt, block):
    """Per output row i of H_B (i = 0 and i = B - 1), the input blocks whose sum z_i is the largest
    and the smallest any input of fmt gives (K10.2): x_l = hi where H_B[i, l] = +1 and lo where it
    is -1, and the reverse. Row 0 reaches B lo (a signed input's output format's lowest value) and
    B hi; row B - 1 reaches (B/2)(hi - lo) and (B/2)(lo - hi)."""
    h = hadamard.sylvester(block)
    return [np.where(h[i] > 0, a, b) for i in (0, block - 1) for a, b in ((fmt.hi, fmt.lo), (fmt.lo, fmt.hi))]


def _case(name, fmt, block, x):
    return Case("hadamard", name, "hadamard", [("in", x, fmt)], [hadamard.out_format(fmt, block)],
                attrs={"block": int(block)})


def _directed(rng, fmt, block, rows=3, blocks_per_row=2):
    """(2, rows, blocks_per_row B) codes: the four extreme blocks first (two blocks per row, so the
    block boundary is crossed), then random codes with both ends of fmt and 0."""
    x = with_extremes(random_codes(rng, fmt, (2, rows, blocks_per_row * block)), fmt)
    flat = x.reshape(-1, block)
    ends = extreme_blocks(fmt, block)
    flat[-len(ends):] = ends                       # after with_extremes' first elements
    return x


def hadamard_cases(rng):
    """Every block size 2..1024 (s8 input, the 16-bit ends at B = 1024), every input width 2..16
    signed and unsigned, wide inputs up to a 32-bit output, one block per row; each with the inputs
    that reach both ends of K10.2's output range. Then random blocks, widths and shapes."""
    for n in range(1, 11):
        yield _case(f"block{1 << n}_s8", signed(8), 1 << n, _directed(rng, signed(8), 1 << n))
    for fmt in (signed(16), unsigned(16)):
        yield _case(f"block1024_{fmt.describe().split('[')[0]}", fmt, 1024, _directed(rng, fmt, 1024, rows=2))
    for bits in range(2, 17):
        for fmt, block in ((signed(bits), 4), (unsigned(bits), 8)):
            yield _case(f"{'s' if fmt.signed else 'u'}{bits}_block{block}", fmt, block, _directed(rng, fmt, block))
    for fmt, block in ((signed(24), 16), (signed(30), 4), (unsigned(29), 4), (signed(31), 2)):
        yield _case(f"wide_{fmt.describe().split('[')[0]}_block{block}", fmt, block, _directed(rng, fmt, block))
    yield _case("one_block_s4", signed(4), 8, _directed(rng, signed(4), 8, rows=2, blocks_per_row=1))
    for i in range(6):
        block = 1 << int(rng.integers(1, 8))
        sgn = bool(rng.integers(2))
        fmt = signed(int(rng.integers(2, 17))) if sgn else unsigned(int(rng.integers(1, 17)))
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 5)), block * int(rng.integers(1, 4)))
        yield _case(f"random{i}", fmt, block, random_codes(rng, fmt, shape))
