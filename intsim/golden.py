"""Golden vectors for hardware verification: dump, manifest, file formats, load and exact compare.

A dump is one directory (docs/golden.md):

    DIR/manifest.json                   schema "intsim-golden", version GOLDEN_SCHEMA
    DIR/act/<tensor>.<npy|bin|hex>      every integer activation (model input ... logits), once
    DIR/const/<op>.<const>.<npy|bin|hex> every integer constant of every op (0-d for scalars)

A tensor is identified by its *id*: its path relative to DIR without the format extension
("act/blocks.0.attn.softmax", "const/blocks.0.attn.qkv.weight"). Files of another tool are
matched to golden tensors by that id alone (a manifest on the other side is optional).

Bytes are canonical: C order, little endian, the tensor's storage dtype. The CRC32 and SHA-256 in
the manifest are of exactly these bytes, i.e. of the .bin file, whatever formats were written.
"""
from collections.abc import Mapping
from dataclasses import dataclass, field
import ctypes
import errno
import hashlib
import json
import os
from pathlib import Path
import re
import shutil
import tempfile
import zlib

import numpy as np

from . import __version__
from .arith import IntFormat, SPEC_VERSION

GOLDEN_SCHEMA = 1
SCHEMA_NAME = "intsim-golden"
MANIFEST = "manifest.json"
FORMATS = ("npy", "bin", "hex")
PACK_MAX = 64


class GoldenError(ValueError):
    """A bad request or an unreadable dump; the message says which file or option."""


# --- tensor formats ------------------------------------------------------------------------------

@dataclass(frozen=True)
class TFormat:
    """Width, signedness and storage of one dumped tensor. Unlike arith.IntFormat it also covers
    kernel constants wider than 32 bits (stored as int64/uint64)."""
    bits: int
    signed: bool
    narrow: bool = False
    rule: str = "declared"      # "declared" (the program's format) or "minimal" (from the values)

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
    def minimal(cls, a):
        """The narrowest format holding every value of a: unsigned if none is negative."""
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo >= 0:
            return cls(max(hi.bit_length(), 1), False, False, "minimal")
        return cls(max(max(hi, 0).bit_length(), (-lo - 1).bit_length()) + 1, True, False, "minimal")


def _const_format(op, cname, value):
    """Declared widths where the spec declares one (K1: weights in the weight format, int32 bias);
    every other constant gets the narrowest width holding its values."""
    if cname == "weight" and "weight_fmt" in op.attrs:
        return TFormat.of(IntFormat(**op.attrs["weight_fmt"]))
    if cname == "bias" and op.kind in ("linear", "patch_embed"):
        return TFormat.of(IntFormat(32))
    return TFormat.minimal(value)


def canonical(a, tf: TFormat):
    """The tensor as a C-contiguous little-endian array of its storage dtype (values unchanged)."""
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise GoldenError(f"golden tensors are integers, got dtype {a.dtype}")
    if a.size and (int(a.min()) < _lo(tf) or int(a.max()) > _hi(tf)):
        raise GoldenError(f"value outside the declared {'s' if tf.signed else 'u'}{tf.bits} range")
    return np.array(a, dtype=tf.dtype, order="C")      # keeps 0-d scalars 0-d


def _lo(tf):
    return -(1 << (tf.bits - 1)) + (1 if tf.narrow else 0) if tf.signed else 0


def _hi(tf):
    return (1 << (tf.bits - 1)) - 1 if tf.signed else (1 << tf.bits) - 1


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


# --- writing a dump ---------------------------------------------------------------------------------

_SAFE = re.compile(r"[^A-Za-z0-9._+-]")


def _safe(name):
    s = _SAFE.sub("_", name)
    return s if s not in ("", ".", "..") else f"_{s}"


def _json_default(v):
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON-serialisable: {type(v).__name__}")


def _scale_json(s):
    if s is None:
        return None
    if isinstance(s, (list, tuple, np.ndarray)):
        return [float(x) for x in s]
    return float(s)


class _Writer:
    """Writes tensors into the temporary dump directory and builds their manifest entries."""

    def __init__(self, root, formats, pack):
        self.root = Path(root)
        self.formats = formats
        self.pack = pack
        self.tensors = {}           # id -> manifest entry, in execution order
        self.paths = set()

    def add(self, tid, a, tf: TFormat, extra):
        if tid in self.tensors:
            raise GoldenError(f"tensor id {tid!r} written twice (two program names sanitise to it)")
        arr = canonical(a, tf)
        data = arr.tobytes()
        entry = dict(extra)
        entry.update(shape=list(arr.shape), dtype=arr.dtype.name, signed=tf.signed, bits=tf.bits,
                     narrow=tf.narrow, width_rule=tf.rule, files={})
        (self.root / tid).parent.mkdir(parents=True, exist_ok=True)
        for fmt in self.formats:
            rel = f"{tid}.{fmt}"
            with open(self.root / rel, "wb") as f:
                if fmt == "npy":
                    np.save(f, arr, allow_pickle=False)
                elif fmt == "bin":
                    f.write(data)
                else:
                    f.write(hex_text(arr, tf, self.pack))
            entry["files"][fmt] = rel
        if "hex" in self.formats:
            entry["hex"] = {"word_bits": 4 * hex_word_digits(tf.bits, self.pack), "pack": self.pack,
                            "words": -(-arr.size // self.pack)}
        entry["crc32"] = f"{zlib.crc32(data):08x}"
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        if arr.ndim == 0:
            entry["value"] = int(arr)
        self.tensors[tid] = entry
        return tid


def _act_id(name):
    return f"act/{_safe(name)}"


def _const_id(op_name, cname):
    return f"const/{_safe(op_name)}.{_safe(cname)}"


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


def dump(program, q_input, out_dir, formats=("npy",), pack=1, force=False, input_source=None):
    """Run `program` on the quantized input batch and write its golden dump to out_dir.

    Every op's integer inputs, outputs and constants are written once, in execution order, into a
    temporary directory beside out_dir that is renamed into place at the end (atomic; with
    force=True an existing dump is swapped out atomically where the OS allows). Returns the
    manifest (a dict)."""
    from .execute import run_program
    formats = check_formats(formats)
    pack = check_pack(pack)
    out = Path(out_dir)
    check_output(out, force)
    q_input = np.asarray(q_input)
    created = _make_parents(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())        # mkdtemp's 0700 would make the dump private
        manifest = _dump_into(tmp, program, q_input, formats, pack, input_source, run_program)
        with open(tmp / MANIFEST, "w") as f:
            f.write(manifest_text(manifest))
        _install(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(created):
            try:
                d.rmdir()
            except OSError:
                pass
        raise
    return manifest


def manifest_text(manifest):
    """Indented at the top level, one line per tensor and per op: readable, diffable and small."""
    def enc(v):
        return json.dumps(v, default=_json_default, allow_nan=False)

    lines = ["{"]
    items = list(manifest.items())
    for n, (key, value) in enumerate(items):
        comma = "," if n < len(items) - 1 else ""
        if key == "tensors":
            rows = [f"  {enc(k)}: {enc(v)}" for k, v in value.items()]
            lines.append(f" {enc(key)}: {{\n" + ",\n".join(rows) + f"\n }}{comma}")
        elif key == "ops":
            rows = [f"  {enc(v)}" for v in value]
            lines.append(f" {enc(key)}: [\n" + ",\n".join(rows) + f"\n ]{comma}")
        else:
            lines.append(f" {enc(key)}: {enc(value)}{comma}")
    return "\n".join(lines) + "\n}\n"


def _dump_into(tmp, program, q_input, formats, pack, input_source, run_program):
    w = _Writer(tmp, formats, pack)
    tensors = program.tensors
    ids = {}                     # program tensor name -> id

    def act(name, arr, kind, producer):
        info = tensors[name]
        ids[name] = w.add(_act_id(name), arr, TFormat.of(info.fmt),
                          {"kind": kind, "name": name, "op": producer, "scale": _scale_json(info.scale),
                           "source": info.source})

    act(program.input_name, q_input, "input", None)
    op_index = {id(op): i for i, op in enumerate(program.ops)}
    ops = []

    def observe(op, ins, outs):
        i = op_index[id(op)]
        consts = {}
        for cname, v in op.consts.items():
            v = np.asarray(v)
            consts[cname] = w.add(_const_id(op.name, cname), v, _const_format(op, cname, v),
                                  {"kind": "constant", "name": cname, "op": i,
                                   "scale": _const_scale(program, op, cname)})
        for name, arr in zip(op.outputs, outs):
            act(name, arr, "activation", i)
        missing = [t for t in op.inputs if t not in ids]
        if missing:
            raise GoldenError(f"op {i} {op.name!r} reads {missing} before any op wrote it")
        ops.append({"index": i, "name": op.name, "kind": op.kind, "spec": op.spec, "attrs": op.attrs,
                    "inputs": [ids[t] for t in op.inputs], "outputs": [ids[t] for t in op.outputs],
                    "consts": consts})

    run_program(program, q_input, observe=observe)
    meta = program.meta
    model = meta.get("model")
    return {
        "schema": SCHEMA_NAME,
        "schema_version": GOLDEN_SCHEMA,
        "intsim_version": __version__,
        "spec_version": meta.get("spec_version", SPEC_VERSION),
        "model": {"file": Path(model).name if model else None, "sha256": meta.get("model_sha256")},
        "program_fingerprint": program.fingerprint(),
        "config": meta.get("config", {}),
        "kernels": {op.name: {"family": op.attrs["family"], "kernel": op.attrs["kernel"], "spec": op.spec}
                    for op in program.ops if "kernel" in op.attrs},
        "input": {"tensor": ids[program.input_name], "images": int(q_input.shape[0]),
                  "source": input_source},
        "output": ids[program.output_name],
        "formats": list(formats),
        "byte_order": "little",
        "hex": {"pack": pack, "element_order": "C order; in a packed word element 0 is least significant"},
        "tensors": w.tensors,
        "ops": ops,
    }


def _const_scale(program, op, cname):
    """Documentary real scale of a constant where it has one (bias and cls/pos: the tensor they
    join; weights: accumulator scale / input scale, per output channel)."""
    if op.kind in ("linear", "patch_embed") and cname in ("weight", "bias"):
        acc = np.asarray(program.tensors[op.outputs[0]].scale, dtype=np.float64)
        if cname == "bias":
            return _scale_json(program.tensors[op.outputs[0]].scale)
        if "weight_scale" in op.attrs:
            return _scale_json(op.attrs["weight_scale"])
        return _scale_json(acc / float(program.tensors[op.inputs[0]].scale))
    if op.kind == "cls_pos":
        return _scale_json(program.tensors[op.outputs[0]].scale)
    return None


# --- output directory: checks and atomic install ---------------------------------------------------

def _is_dump(path):
    try:
        doc = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("schema") == SCHEMA_NAME


def check_output(out, force):
    """Refuse an existing output unless force; with force, replace only an earlier dump or an empty
    directory (a typo must not delete an unrelated folder)."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        raise GoldenError(f"{out} already exists; use --force to replace it")
    if out.is_symlink() or not out.is_dir():
        raise GoldenError(f"{out} exists and is not a directory; refusing to replace it")
    if any(out.iterdir()) and not _is_dump(out):
        raise GoldenError(f"{out} is not a golden dump (no intsim {MANIFEST}); refusing to replace it")


def _umask():
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def _make_parents(parent):
    created = []
    p = Path(parent)
    while not p.exists():
        created.append(p)
        p = p.parent
    for d in reversed(created):
        d.mkdir()
    return list(reversed(created))


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def _renameat2(src, dst, flags):
    """Linux renameat2(2); False where unavailable (other OS, old libc or kernel, filesystem)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(str(src)), at_fdcwd, os.fsencode(str(dst)), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(dst))


def _install(tmp, out, force):
    """Move the finished dump into place. New name: an atomic no-replace rename. Existing dump
    (force): an atomic exchange, then the old one is deleted; without renameat2, two renames (the
    name is briefly absent, never half-written)."""
    if not out.exists():
        try:
            if _renameat2(tmp, out, _RENAME_NOREPLACE):
                return
        except FileExistsError:
            raise GoldenError(f"{out} appeared while dumping; use --force to replace it") from None
        os.rename(tmp, out)
        return
    check_output(out, force)
    if _renameat2(tmp, out, _RENAME_EXCHANGE):
        shutil.rmtree(tmp)          # tmp now holds the old dump
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rename(out, old / "d")
    os.rename(tmp, out)
    shutil.rmtree(old)


# --- reading a dump ---------------------------------------------------------------------------------

def read_manifest(root):
    root = Path(root)
    path = root / MANIFEST
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise GoldenError(f"{root}: no {MANIFEST} (not a golden dump)") from None
    except (OSError, ValueError) as e:
        raise GoldenError(f"{path}: unreadable ({e})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_NAME:
        raise GoldenError(f"{path}: not an intsim golden manifest")
    if doc.get("schema_version") != GOLDEN_SCHEMA:
        raise GoldenError(f"{path}: golden schema version {doc.get('schema_version')}, this intsim reads "
                          f"{GOLDEN_SCHEMA}")
    return doc


def entry_format(entry):
    return TFormat(int(entry["bits"]), bool(entry["signed"]), bool(entry.get("narrow", False)),
                   entry.get("width_rule", "declared"))


def read_file(path, entry, pack=None):
    """A tensor file in any of the three formats, as int64 of shape entry['shape'].

    .npy: the exact shape or 1-D of the same size; .bin: entry's storage dtype, little endian;
    .hex: entry's width, signedness and packing (pack overrides it). GoldenError when unreadable."""
    path = Path(path)
    shape = tuple(entry["shape"])
    size = int(np.prod(shape, dtype=np.int64))
    ext = path.suffix[1:]
    try:
        if ext == "npy":
            try:
                a = np.load(path, allow_pickle=False)
            except ValueError as e:
                raise GoldenError(f"{path}: not a readable .npy file ({e})") from None
            if a.dtype.kind not in "iub":
                raise GoldenError(f"{path}: dtype {a.dtype}, expected integers")
            if a.shape != shape and not (a.ndim == 1 and a.size == size):
                raise GoldenError(f"{path}: shape {a.shape}, expected {shape}")
            return a.astype(np.int64).reshape(shape)
        if ext == "bin":
            dt = np.dtype(entry["dtype"]).newbyteorder("<")
            data = path.read_bytes()
            if len(data) != size * dt.itemsize:
                raise GoldenError(f"{path}: {len(data)} bytes, expected {size * dt.itemsize} "
                                  f"({size} x {dt.name})")
            return np.frombuffer(data, dtype=dt).astype(np.int64).reshape(shape)
        if ext == "hex":
            p = pack or entry.get("hex", {}).get("pack", 1)
            values, n_words = parse_hex(path.read_text(errors="replace"), entry_format(entry), p, str(path))
            want = -(-size // p)
            if n_words != want:
                raise GoldenError(f"{path}: {n_words} words, expected {want} ({size} elements, "
                                  f"{p} per word)")
            if any(values[size:]):
                raise GoldenError(f"{path}: padding elements after the last one are not 0")
            return np.array(values[:size], dtype=np.int64).reshape(shape)
    except OSError as e:
        raise GoldenError(f"{path}: unreadable ({e.strerror or e})") from None
    raise GoldenError(f"{path}: unknown format {ext!r} (npy, bin, hex)")


class Tensors(Mapping):
    """Lazy mapping tensor id -> int64 array (read on first access, cached). A bare activation name
    ('logits') is accepted for 'act/logits'."""

    def __init__(self, root, manifest):
        self._root = Path(root)
        self._entries = manifest["tensors"]
        self._cache = {}

    def _key(self, key):
        if key in self._entries:
            return key
        if _act_id(key) in self._entries:
            return _act_id(key)
        raise KeyError(key)

    def __getitem__(self, key):
        key = self._key(key)
        if key not in self._cache:
            e = self._entries[key]
            files = e["files"]
            fmt = next((f for f in FORMATS if f in files), None)
            if fmt is None:
                raise GoldenError(f"tensor {key!r} has no file")
            self._cache[key] = read_file(self._root / files[fmt], e)
        return self._cache[key]

    def entry(self, key):
        return self._entries[self._key(key)]

    def __contains__(self, key):
        try:
            self._key(key)
            return True
        except KeyError:
            return False

    def __iter__(self):
        return iter(self._entries)

    def __len__(self):
        return len(self._entries)


@dataclass
class OpView:
    """One op of a dump: its manifest record and its tensors (read lazily from the set)."""
    index: int
    name: str
    kind: str
    spec: str
    attrs: dict
    input_ids: list
    output_ids: list
    const_ids: dict
    _tensors: Tensors = field(repr=False)

    @property
    def inputs(self):
        return [self._tensors[t] for t in self.input_ids]

    @property
    def outputs(self):
        return [self._tensors[t] for t in self.output_ids]

    @property
    def consts(self):
        """{const name: array}; 0-d arrays for scalars (int(v) gives the Python int)."""
        return {c: self._tensors[t] for c, t in self.const_ids.items()}


@dataclass
class GoldenSet:
    root: Path
    manifest: dict
    tensors: Tensors
    ops: list

    def op(self, name):
        for o in self.ops:
            if o.name == name:
                return o
        raise KeyError(f"no op named {name!r} in {self.root}")

    def __getitem__(self, key):
        return self.tensors[key]

    @property
    def input(self):
        return self.tensors[self.manifest["input"]["tensor"]]

    @property
    def output(self):
        return self.tensors[self.manifest["output"]]


def load(path):
    """Open a golden dump: GoldenSet(root, manifest, tensors (lazy id -> int64 array), ops)."""
    root = Path(path)
    manifest = read_manifest(root)
    tensors = Tensors(root, manifest)
    ops = [OpView(o["index"], o["name"], o["kind"], o["spec"], o["attrs"], o["inputs"], o["outputs"],
                  o["consts"], tensors) for o in manifest["ops"]]
    return GoldenSet(root, manifest, tensors, ops)


# --- compare ----------------------------------------------------------------------------------------

@dataclass
class FileResult:
    tensor: str                 # golden tensor id
    file: str                   # path relative to the other directory
    status: str                 # match | mismatch | unreadable
    size: int = 0
    mismatches: int = 0
    first_index: tuple = None   # index into the golden shape
    golden_value: int = None
    other_value: int = None
    max_abs_diff: int = 0
    message: str = ""
    note: str = ""              # e.g. a dtype that differs but holds the same integers

    @property
    def diff(self):
        return None if self.other_value is None else self.other_value - self.golden_value

    def to_dict(self):
        d = {k: getattr(self, k) for k in ("tensor", "file", "status", "size", "mismatches",
                                           "golden_value", "other_value", "max_abs_diff", "message", "note")}
        d["first_index"] = list(self.first_index) if self.first_index is not None else None
        d["diff_lsb"] = self.diff
        return d


@dataclass
class CompareReport:
    golden: str
    other: str
    results: list               # FileResult, golden execution order
    missing: list               # golden ids with no file on the other side
    extra: list                 # data files on the other side that match no golden tensor
    warnings: list
    total: int                  # golden tensors
    require_all: bool = False

    @property
    def failed(self):
        return [r for r in self.results if r.status != "match"]

    @property
    def compared(self):
        return sorted({r.tensor for r in self.results})

    @property
    def ok(self):
        return bool(self.results) and not self.failed and not (self.require_all and self.missing)

    @property
    def first_divergence(self):
        return self.failed[0] if self.failed else None

    def to_dict(self):
        return {"ok": self.ok, "golden": self.golden, "other": self.other, "tensors": self.total,
                "compared": len(self.compared), "missing": self.missing, "extra": self.extra,
                "warnings": self.warnings,
                "first_divergence": self.first_divergence.to_dict() if self.first_divergence else None,
                "failed": [r.to_dict() for r in self.failed]}

    def text(self, ops=None, max_rows=20):
        lines = [f"golden {self.golden}: {self.total} tensors; {self.other}: {len(self.compared)} present, "
                 f"{len(self.results)} file(s) compared"]
        lines += [f"warning: {w}" for w in self.warnings]
        first = self.first_divergence
        if first is not None:
            where = f" ({ops[first.tensor]})" if ops and first.tensor in ops else ""
            lines.append(f"FIRST DIVERGENCE: {first.tensor}{where}, file {first.file}")
            if first.status == "mismatch":
                lines.append(f"  index {first.first_index}: golden {first.golden_value}, other "
                             f"{first.other_value}, difference {first.diff:+d} LSB")
            else:
                lines.append(f"  {first.message}")
            lines.append(f"failing tensors ({len(self.failed)}):")
            for r in self.failed[:max_rows]:
                if r.status == "mismatch":
                    lines.append(f"  {r.tensor:<44} {Path(r.file).suffix[1:]:<4} {r.mismatches:>8} / "
                                 f"{r.size:<8} max |diff| {r.max_abs_diff} LSB")
                else:
                    lines.append(f"  {r.tensor:<44} {Path(r.file).suffix[1:]:<4} {r.message}")
            if len(self.failed) > max_rows:
                lines.append(f"  ... and {len(self.failed) - max_rows} more")
        notes = [r for r in self.results if r.note]
        for r in notes[:max_rows]:
            lines.append(f"note: {r.file}: {r.note}")
        if self.missing:
            lines.append(f"{'MISSING' if self.require_all else 'missing'}: {len(self.missing)} tensor(s) "
                         f"have no file, e.g. {', '.join(self.missing[:3])}")
        if self.extra:
            lines.append(f"extra: {len(self.extra)} file(s) match no golden tensor, e.g. "
                         f"{', '.join(self.extra[:3])}")
        if not self.results:
            lines.append("nothing to compare: no file of the golden set was found")
        lines.append("OK: every present tensor matches bit for bit" if self.ok else "FAIL")
        return "\n".join(lines)


def _candidates(tid, other_entry):
    """Relative paths that may hold tensor tid on the other side, in order: the other manifest's
    files, then <id>.<fmt>, then <name>.<fmt> in the root (activations only)."""
    paths = list((other_entry or {}).get("files", {}).values())
    paths += [f"{tid}.{f}" for f in FORMATS]
    if tid.startswith("act/"):
        paths += [f"{tid[4:]}.{f}" for f in FORMATS]
    return list(dict.fromkeys(paths))


def compare(golden_dir, other_dir, pack=None, require_all=False):
    """Exact comparison of every golden tensor that has a file in other_dir (any format)."""
    g = load(golden_dir)
    other = Path(other_dir)
    if not other.is_dir():
        raise GoldenError(f"{other}: not a directory")
    other_manifest, warnings = None, []
    if (other / MANIFEST).exists():
        try:
            other_manifest = read_manifest(other)
        except GoldenError as e:
            warnings.append(f"{e}; matching files by name only")
    if other_manifest is not None:
        warnings += _manifest_warnings(g.manifest, other_manifest)
    o_entries = other_manifest["tensors"] if other_manifest else {}
    results, missing, used = [], [], set()
    for tid, entry in g.manifest["tensors"].items():
        files = [p for p in _candidates(tid, o_entries.get(tid)) if (other / p).is_file()]
        if not files:
            missing.append(tid)
            continue
        gold = g.tensors[tid]
        for rel in files:
            used.add(rel)
            results.append(_compare_file(tid, gold, entry, o_entries.get(tid), other / rel, rel, pack))
    extra = sorted(str(p.relative_to(other)) for p in other.rglob("*")
                   if p.is_file() and p.suffix[1:] in FORMATS and str(p.relative_to(other)) not in used)
    return CompareReport(str(golden_dir), str(other_dir), results, missing, extra, warnings,
                         len(g.manifest["tensors"]), require_all)


def _compare_file(tid, gold, entry, other_entry, path, rel, pack):
    read_entry = dict(entry)
    note = ""
    if other_entry is not None:          # the other tool's own dtype/width/packing, if it says so
        for k in ("dtype", "bits", "signed", "hex"):
            if k in other_entry:
                read_entry[k] = other_entry[k]
        if other_entry.get("shape") != entry["shape"]:
            return FileResult(tid, rel, "unreadable", gold.size,
                              message=f"shape {tuple(other_entry.get('shape') or ())} in its manifest, "
                                      f"golden {tuple(entry['shape'])}")
    try:
        b = read_file(path, read_entry, pack)
    except GoldenError as e:
        return FileResult(tid, rel, "unreadable", gold.size,
                          message=str(e).replace(f"{path}: ", "").replace(str(path), rel))
    if rel.endswith(".npy"):
        dt = np.load(path, mmap_mode="r", allow_pickle=False).dtype
        if dt != np.dtype(entry["dtype"]):
            note = f"dtype {dt}, golden {entry['dtype']} (values compared as integers)"
    a = gold.ravel()
    bf = b.ravel()
    neq = a != bf
    n = int(neq.sum())
    if n == 0:
        return FileResult(tid, rel, "match", a.size, note=note)
    i = int(np.argmax(neq))
    idx = tuple(int(v) for v in np.unravel_index(i, gold.shape)) if gold.ndim else ()
    return FileResult(tid, rel, "mismatch", a.size, n, idx, int(a[i]), int(bf[i]),
                      int(np.max(np.abs(bf[neq] - a[neq]))), note=note)


def _manifest_warnings(gm, om):
    out = []
    for key, label in (("spec_version", "arithmetic spec"), ("config", "configuration"),
                       ("model", "model"), ("program_fingerprint", "integer program")):
        if gm.get(key) != om.get(key):
            out.append(f"the other dump's {label} differs from the golden one")
    return out


def op_labels(manifest):
    """tensor id -> 'op I KIND NAME' of its producer (or owner, for constants)."""
    labels = {}
    for o in manifest["ops"]:
        for t in o["outputs"] + list(o["consts"].values()):
            labels[t] = f"op {o['index']} {o['kind']} {o['name']!r}"
    labels[manifest["input"]["tensor"]] = "model input"
    return labels
