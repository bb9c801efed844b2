"""Block Hadamard rotation along the last axis (spec K10): exact integer sums, no rounding.

    z[jB + i] = sum_l H_B[i, l] x[jB + l],  H_B[i, l] = (-1)^popcount(i & l)   (Sylvester order)

over each block j of B = 2^n consecutive channels. H_B / sqrt(B) is orthonormal, so the real
value of z is that of x rotated, at scale S_x / sqrt(B) (the factor lives in the scale, not in the
integers). The compiler uses it where a Linear input is requantized anyway (docs/quantization.md
Q8): the rotated operand has no outlier channels, and the weight columns take the rotation.

Two paths, equal integers: `reference` is the matrix product of the definition (int64);
`fast` is the butterfly (n stages of a + b, a - b), the form an RTL unit takes.
"""
import numba
import numpy as np

from ..arith import ArithSpecError, IntFormat
from ..parallel import map_rows

MAX_BLOCK = 1024


def is_block(block):
    return isinstance(block, (int, np.integer)) and 2 <= block <= MAX_BLOCK and block & (block - 1) == 0


def block_for(channels, max_block):
    """The rotation block of a tensor with `channels` channels under QuantConfig.rotate =
    max_block: the largest power of two dividing channels, at most max_block; 0 when below 2."""
    if max_block < 2 or channels < 2:
        return 0
    block = min(channels & -channels, 1 << (int(max_block).bit_length() - 1))
    return block if block >= 2 else 0


def sylvester(block):
    """H_B as int64: H_B[i, l] = (-1)^popcount(i & l)."""
    h = np.ones((1, 1), dtype=np.int64)
    while h.shape[0] < block:
        h = np.block([[h, h], [h, -h]])
    return h


def orthonormal(block):
    """H_B / sqrt(B) in float64: the real rotation the integers realise."""
    return sylvester(block).astype(np.float64) / np.sqrt(block)


def out_bits(in_fmt, block):
    """K10.2: the output width. A signed b-bit input gives b + n bits (the extreme sums,
    +-B 2^(b-1), fit exactly); an unsigned b-bit input gives b + n + 1 bits."""
    return in_fmt.bits + int(block).bit_length() - 1 + (0 if in_fmt.signed else 1)


def out_format(in_fmt, block):
    """K10.2: the output format, signed, out_bits wide."""
    return IntFormat(out_bits(in_fmt, block), signed=True)


def sum_range(lo, hi, block):
    """K10.2: the range of the sums of one block for inputs in [lo, hi] (row 0 of H_B is all +1,
    every other row half +1, half -1)."""
    return min(block * lo, (block // 2) * (lo - hi)), max(block * hi, (block // 2) * (hi - lo))


def check(in_fmt, block, channels):
    """K10.1 preconditions: B a power of two in [2, MAX_BLOCK] dividing the channel count, and
    the output at most 32 bits."""
    if not is_block(block):
        raise ArithSpecError(f"Hadamard block {block!r}: a power of two in [2, {MAX_BLOCK}]")
    if channels % block:
        raise ArithSpecError(f"Hadamard block {block} does not divide the {channels} channels")
    if out_bits(in_fmt, block) > 32:
        raise ArithSpecError(f"Hadamard block {block} on a {in_fmt.bits}-bit input needs "
                             f"{out_bits(in_fmt, block)} bits (at most 32)")


def reference(x, block):
    """K10.3 as written: each block of B channels times H_B, in int64."""
    x = np.asarray(x, dtype=np.int64)
    c = x.shape[-1]
    z = x.reshape(-1, c // block, block) @ sylvester(block)
    return z.reshape(x.shape)


def fast(x, block, fits_int32=False):
    """K10.3 as a butterfly: stage h (h = 1, 2, ..., B/2) maps each pair (a, b) at distance h
    within a block to (a + b, a - b); the same integers as `reference`. In int32 when no sum can
    leave it (K10.2's range of the input's actual min and max fits int32; every stage's partial
    sums lie inside it too), as a
    numba loop over rows (split over numba's threads: intsim.parallel); else in int64 with NumPy.
    fits_int32: the caller knows the input's format, whose K10.2 range fits (a bound program:
    K10.1 allows no output wider than 32 bits), so the data's min and max need not be read."""
    x = np.asarray(x)
    if x.size == 0:
        return x.astype(np.int64)
    c = x.shape[-1]
    if not fits_int32:
        lo, hi = sum_range(int(x.min()), int(x.max()), block)
        fits_int32 = -(1 << 31) <= lo and hi < (1 << 31)
    if fits_int32:
        z = np.array(x, dtype=np.int32, order="C").reshape(-1, c)
        # one add per element and stage is cheap: threads pay off from about 4M of them (measured
        # on 2 cores: 197 x 768 at B = 128, 1M, is faster on one thread; 6304 x 768, 34M, on two)
        map_rows(lambda a, b: _butterfly_rows(z[a:b], block), z.shape[0], z.size * block.bit_length(),
                 min_elements=1 << 22)
        return z.reshape(x.shape)
    z = x.astype(np.int64)
    h = 1
    while h < block:
        z = z.reshape(-1, c // (2 * h), 2, h)
        a, b = z[:, :, 0, :], z[:, :, 1, :]
        z = np.stack([a + b, a - b], axis=2)
        h *= 2
    return z.reshape(x.shape)


@numba.njit(cache=True, nogil=True)
def _butterfly_rows(z, block):
    """In place, each row's blocks: the butterfly stages of `fast` (int32 for the integers, float
    for rotate_float). Stages h = 1, 2, 4 run in registers on 8 values at a time (block >= 8),
    the same sums in the same order; then the remaining stages over the row, 16 pairs at a time
    where h allows (a fixed-length loop the compiler vectorises)."""
    rows, c = z.shape
    diff = np.empty(16, z.dtype)
    for r in range(rows):
        row = z[r]
        h = 1
        if block >= 8:
            for s in range(0, c, 8):
                a0, a1, a2, a3 = row[s], row[s + 1], row[s + 2], row[s + 3]
                a4, a5, a6, a7 = row[s + 4], row[s + 5], row[s + 6], row[s + 7]
                b0, b1, b2, b3 = a0 + a1, a0 - a1, a2 + a3, a2 - a3            # h = 1
                b4, b5, b6, b7 = a4 + a5, a4 - a5, a6 + a7, a6 - a7
                c0, c1, c2, c3 = b0 + b2, b1 + b3, b0 - b2, b1 - b3            # h = 2
                c4, c5, c6, c7 = b4 + b6, b5 + b7, b4 - b6, b5 - b7
                row[s], row[s + 1], row[s + 2], row[s + 3] = c0 + c4, c1 + c5, c2 + c6, c3 + c7   # h = 4
                row[s + 4], row[s + 5], row[s + 6], row[s + 7] = c0 - c4, c1 - c5, c2 - c6, c3 - c7
            h = 8
        while h < block:
            for start in range(0, c, 2 * h):
                if h % 16 == 0:
                    for i0 in range(start, start + h, 16):
                        for j in range(16):
                            diff[j] = row[i0 + j] - row[i0 + h + j]
                        for j in range(16):
                            row[i0 + j] = row[i0 + j] + row[i0 + h + j]
                        for j in range(16):
                            row[i0 + h + j] = diff[j]
                else:
                    for i in range(start, start + h):
                        a = row[i]
                        b = row[i + h]
                        row[i] = a + b
                        row[i + h] = a - b
            h *= 2


def rotate_float(x, block):
    """The real rotation of a float array along its last axis: blocks of B times H_B / sqrt(B), by
    the same butterfly (float32 stays float32; anything else is float64)."""
    x = np.asarray(x)
    dtype = np.float32 if x.dtype == np.float32 else np.float64
    z = np.array(x, dtype=dtype, order="C").reshape(-1, x.shape[-1]) if x.size else np.zeros(x.shape, dtype)
    if z.size:
        map_rows(lambda a, b: _butterfly_rows(z[a:b], block), z.shape[0], z.size * block.bit_length())
        z *= dtype(1.0 / np.sqrt(block))
    return z.reshape(x.shape)
