"""Golden dump formats: the tensor format record, canonical bytes, and the .hex files for
$readmemh (docs/golden.md). Bytes are canonical: C order, little endian, the tensor's storage dtype.
"""
from dataclasses import dataclass
import re

import numpy as np

from ..arith import ConstFormat, IntFormat, register_range
from ..errors import IntsimError

GOLDEN_SCHEMA = 2
SCHEMA_NAME = "intsim-golden"
MANIFEST = "manifest.json"
FORMATS = ("npy", "bin", "hex")
# What a program's meta may record of where its constants came from, copied into the manifest when
# present: `calibration` (data set, image count, SHA-256 of the uint8 images) and `versions`
# (Python and the libraries that computed the constants). Manifests without them are as valid.
PROVENANCE = ("calibration", "versions")
PACK_MAX = 64


class GoldenError(IntsimError):
    """A bad request or an unreadable dump; the message says which file or option."""


# --- tensor formats ------------------------------------------------------------------------------

@dataclass(frozen=True)
class TFormat:
    """Width, signedness and storage of one dumped tensor. Unlike arith.IntFormat it also covers
    kernel constants wider than 32 bits (stored as int64/uint64)."""
    bits: int
    signed: bool
    narrow: bool = False
    rule: str = "declared"      # "declared" (an activation's program format), "register" (a
                                # constant's declared register) or "minimal" (from the values)

    @property
    def dtype(self):
        for size in (8, 16, 32, 64):
            if self.bits <= size:
                return np.dtype(f"<{'i' if self.signed else 'u'}{size // 8}")
        raise GoldenError(f"a {self.bits}-bit tensor does not fit 64 bits")

    @classmethod
    def of(cls, fmt: IntFormat):
        return cls(fmt.bits, fmt.signed, fmt.narrow, "declared")

    @classmethod
    def register(cls, reg):
        """The register an op declares for a constant (arith.ConstFormat)."""
        return cls(reg.bits, reg.signed, reg.narrow, "register")

    @classmethod
    def minimal(cls, a):
        """The narrowest format holding every value of a: unsigned if none is negative."""
        reg = ConstFormat.holding(*((int(a.min()), int(a.max())) if a.size else (0, 0)))
        return cls(reg.bits, reg.signed, False, "minimal")



def canonical(a, tf: TFormat):
    """The tensor as a C-contiguous little-endian array of its storage dtype (values unchanged)."""
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise GoldenError(f"golden tensors are integers, got dtype {a.dtype}")
    lo, hi = register_range(tf.bits, tf.signed, tf.narrow)
    if a.size and (int(a.min()) < lo or int(a.max()) > hi):
        raise GoldenError(f"value outside the declared {'s' if tf.signed else 'u'}{tf.bits} range")
    return np.array(a, dtype=tf.dtype, order="C")      # keeps 0-d scalars 0-d


# --- hex: one word per line for $readmemh ---------------------------------------------------------

def hex_word_digits(bits, pack=1):
    """Hex digits per word: pack elements of `bits` bits each, rounded up to a nibble."""
    return -(-bits * pack // 4)


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def hex_text(a, tf: TFormat, pack=1):
    """The .hex file of the flattened (C order) tensor, one word per line (bytes, '\\n' after each).

    pack = 1: each word is the value in two's complement at the word width (sign-extended to the
    nibble). pack > 1: element j of a word occupies bits [j*bits, (j+1)*bits) (element 0 least
    significant), each in two's complement at exactly `bits` bits; the last word is padded with zero
    elements; bits above pack*bits are 0. Vectorised through a bit matrix (n, bits)."""
    flat = np.asarray(a).ravel()
    digits = hex_word_digits(tf.bits, pack)
    ebits = 4 * digits if pack == 1 else tf.bits
    # two's complement in 64 bits: bit i of the element, sign bits included up to ebits <= 64
    u = flat.astype(np.uint64) if flat.dtype == np.uint64 else flat.astype(np.int64).view(np.uint64)
    if pack * ebits <= 64:
        return _hex_lines(_packed_words(u, ebits, pack), digits)
    bitm = ((u[:, None] >> np.arange(ebits, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
    n_words = -(-flat.size // pack)
    if n_words * pack != flat.size:
        bitm = np.concatenate([bitm, np.zeros((n_words * pack - flat.size, ebits), np.uint8)])
    words = bitm.reshape(n_words, pack * ebits)
    words = np.pad(words, ((0, 0), (0, 4 * digits - pack * ebits)))
    nib = words.reshape(n_words, digits, 4) @ np.array([1, 2, 4, 8], dtype=np.uint8)
    text = np.empty((n_words, digits + 1), dtype=np.uint8)
    text[:, :digits] = _HEX_DIGITS[nib[:, ::-1]]       # most significant digit first
    text[:, digits] = ord("\n")
    return text.tobytes()


def _packed_words(u, ebits, pack):
    """The words of hex_text when a word fits 64 bits: element j of a word in bits
    [j ebits, (j+1) ebits), each as its low ebits bits (two's complement), the last word padded
    with zero elements."""
    mask = np.uint64((1 << ebits) - 1) if ebits < 64 else np.uint64(2 ** 64 - 1)
    u = u & mask
    if pack == 1:
        return u
    n_words = -(-u.size // pack)
    fields = np.zeros(n_words * pack, dtype=np.uint64)
    fields[:u.size] = u
    fields = fields.reshape(n_words, pack)
    words = np.zeros(n_words, dtype=np.uint64)
    for j in range(pack):
        words |= fields[:, j] << np.uint64(j * ebits)
    return words


def _hex_lines(words, digits):
    """`digits` hex digits per word, most significant first, and a newline after each word."""
    text = np.empty((words.size, digits + 1), dtype=np.uint8)
    for d in range(digits):
        text[:, d] = _HEX_DIGITS[(words >> np.uint64(4 * (digits - 1 - d))) & np.uint64(15)]
    text[:, digits] = ord("\n")
    return text.tobytes()


_HEX_WORD = re.compile(r"^[0-9a-fA-F][0-9a-fA-F_]*$")


def parse_hex(text, tf: TFormat, pack=1, what="hex file"):
    """The inverse of hex_text for files written by intsim or a simulator ($writememh):
    `//` comments, blank lines, `_` separators and `@addr` directives (word addresses, as in
    $readmemh) are accepted. Returns (values as a list of Python ints, word count).

    pack = 1: a word is read at the tensor's width when its bits above it are all 0 or a sign
    extension, else at the word's own width (so an out-of-range value shows as a mismatch).
    Raises GoldenError naming the line for X/Z or other non-hex digits."""
    words = {}
    addr = 0
    for ln, raw in enumerate(text.splitlines(), 1):
        line = raw.split("//", 1)[0].strip()
        for tok in line.split():
            if tok.startswith("@"):
                try:
                    addr = int(tok[1:], 16)
                except ValueError:
                    raise GoldenError(f"{what}, line {ln}: bad address {tok!r}") from None
                continue
            if not _HEX_WORD.match(tok):
                raise GoldenError(f"{what}, line {ln}: word {tok!r} is not hexadecimal "
                                  f"(X/Z from the simulator?)")
            words[addr] = tok.replace("_", "")
            addr += 1
    if not words:
        return [], 0
    n_words = max(words) + 1
    if len(words) != n_words:
        missing = next(i for i in range(n_words) if i not in words)
        raise GoldenError(f"{what}: word {missing} is never written (address gaps)")
    values = []
    emask = (1 << tf.bits) - 1
    for i in range(n_words):
        tok = words[i]
        v = int(tok, 16)
        width = 4 * len(tok)
        if pack == 1:
            values.append(_word_value(v, width, tf))
            continue
        if v >> (tf.bits * pack):
            raise GoldenError(f"{what}: word {i} ({tok}) has bits set above {pack} x {tf.bits} bits")
        for j in range(pack):
            values.append(_sign(v >> (j * tf.bits) & emask, tf.bits, tf.signed))
    return values, n_words


def _sign(v, bits, signed):
    return v - (1 << bits) if signed and v >> (bits - 1) else v


def _word_value(v, width, tf):
    if width <= tf.bits:
        return _sign(v, width, tf.signed) if width == tf.bits else v
    low = _sign(v & ((1 << tf.bits) - 1), tf.bits, tf.signed)
    upper = v >> tf.bits
    if upper == 0:
        return low
    if tf.signed and low < 0 and upper == (1 << (width - tf.bits)) - 1:
        return low
    return _sign(v, width, tf.signed)


def check_formats(formats):
    """'npy,bin' or a sequence -> a tuple in canonical order; unknown names raise."""
    items = [f.strip().lower() for f in (formats.split(",") if isinstance(formats, str) else formats)]
    items = [f for f in items if f]
    bad = [f for f in items if f not in FORMATS]
    if bad or not items:
        raise GoldenError(f"--format {','.join(items) or '(empty)'}: choose from {', '.join(FORMATS)}")
    return tuple(f for f in FORMATS if f in items)


def check_pack(pack):
    if isinstance(pack, bool) or not isinstance(pack, (int, np.integer)) or not 1 <= pack <= PACK_MAX:
        raise GoldenError(f"--pack must be an integer in [1, {PACK_MAX}], got {pack!r}")
    return int(pack)




# --- tensor ids: the path of a tensor in a dump, without the format extension -----------------------

_SAFE = re.compile(r"[^A-Za-z0-9._+-]")


def _safe(name):
    s = _SAFE.sub("_", name)
    return s if s not in ("", ".", "..") else f"_{s}"


def act_id(name):
    return f"act/{_safe(name)}"


def const_id(op_name, cname):
    return f"const/{_safe(op_name)}.{_safe(cname)}"
