"""Reading a golden dump: the manifest, tensor files in any of the three formats, a lazy view of
the tensors and ops, and the integer program the dump was made from (docs/golden.md)."""
from collections.abc import Mapping
from dataclasses import dataclass, field
import json
from pathlib import Path

import numpy as np

from ..arith import INT64_MAX, IntFormat
from ..program import Op, Program, TensorInfo
from .formats import (FORMATS, GOLDEN_SCHEMA, MANIFEST, PROVENANCE, SCHEMA_NAME, GoldenError, TFormat,
                      act_id, parse_hex)

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
    check_manifest(doc, path)
    return doc


_DTYPES = {f"{k}{n}" for k in ("int", "uint") for n in (8, 16, 32, 64)}


def check_manifest(doc, path):
    """Every tensor entry and op record is well formed (a damaged manifest is named, field by field,
    instead of failing later inside NumPy)."""
    tensors, ops = doc.get("tensors"), doc.get("ops")
    if not isinstance(tensors, dict) or not isinstance(ops, list):
        raise GoldenError(f"{path}: 'tensors' must be an object and 'ops' a list")
    for tid, e in tensors.items():
        _check_entry(tid, e, path)
    for i, o in enumerate(ops):
        ids = (o.get("inputs"), o.get("outputs"), list((o.get("consts") or {}).values())) \
            if isinstance(o, dict) and isinstance(o.get("consts", {}), dict) else None
        if ids is None or not all(isinstance(x, list) and all(t in tensors for t in x) for x in ids):
            raise GoldenError(f"{path}: op record {i} names tensors the manifest does not hold")
    if "conformance" in doc:        # a conformance set: one-op programs, no model input or output
        return
    out = doc.get("output")
    outs = out if isinstance(out, list) and out else [out]
    if (any(not isinstance(t, str) or t not in tensors for t in outs)
            or (doc.get("input") or {}).get("tensor") not in tensors):
        raise GoldenError(f"{path}: the input or output tensor is not in the manifest")


def _check_entry(tid, e, path):
    def bad(field):
        raise GoldenError(f"{path}: tensor {tid!r}: bad field {field!r} ({(e or {}).get(field)!r})")
    if not isinstance(e, dict):
        bad("entry")
    shape = e.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        bad("shape")
    if not isinstance(e.get("dtype"), str) or e["dtype"] not in _DTYPES:
        bad("dtype")
    if not isinstance(e.get("bits"), int) or isinstance(e.get("bits"), bool) or not 1 <= e["bits"] <= 64:
        bad("bits")
    if not isinstance(e.get("signed"), bool) or not isinstance(e.get("narrow", False), bool):
        bad("signed")
    files = e.get("files")
    if not isinstance(files, dict) or not all(
            f in FORMATS and isinstance(rel, str) and not Path(rel).is_absolute() and ".." not in Path(rel).parts
            for f, rel in files.items()):
        bad("files")


def entry_format(entry):
    return TFormat(int(entry["bits"]), bool(entry["signed"]), bool(entry.get("narrow", False)),
                   entry.get("width_rule", "declared"))


def load_npy(path, mmap=False):
    """An .npy file, or a GoldenError: a damaged header fails inside NumPy in many ways (a bad
    literal, a short file, a wrong length), all of which mean the same thing here."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - see the docstring
        raise GoldenError(f"{path}: not a readable .npy file ({type(e).__name__}: {e})") from None


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
            a = load_npy(path)
            if a.dtype.kind not in "iub":
                raise GoldenError(f"{path}: dtype {a.dtype}, expected integers")
            if a.shape != shape and not (a.ndim == 1 and a.size == size):
                raise GoldenError(f"{path}: shape {a.shape}, expected {shape}")
            return _as_int64(a, path).reshape(shape)
        if ext == "bin":
            dt = np.dtype(entry["dtype"]).newbyteorder("<")
            data = path.read_bytes()
            if len(data) != size * dt.itemsize:
                raise GoldenError(f"{path}: {len(data)} bytes, expected {size * dt.itemsize} "
                                  f"({size} x {dt.name})")
            return _as_int64(np.frombuffer(data, dtype=dt), path).reshape(shape)
        if ext == "hex":
            p = pack or entry.get("hex", {}).get("pack", 1)
            values, n_words = parse_hex(path.read_text(errors="replace"), entry_format(entry), p, str(path))
            want = -(-size // p)
            if n_words != want:
                raise GoldenError(f"{path}: {n_words} words, expected {want} ({size} elements, "
                                  f"{p} per word)")
            if any(values[size:]):
                raise GoldenError(f"{path}: padding elements after the last one are not 0")
            return _as_int64(np.array(values[:size], dtype=object), path).reshape(shape)
    except OSError as e:
        raise GoldenError(f"{path}: unreadable ({e.strerror or e})") from None
    raise GoldenError(f"{path}: unknown format {ext!r} (npy, bin, hex)")


def _as_int64(a, path):
    """The values as int64, refusing any that int64 cannot hold (a uint64 2^64 - 5 is not -5)."""
    if a.size and a.dtype.kind in "uO" and int(a.max()) > INT64_MAX:
        raise GoldenError(f"{path}: value {int(a.max())} does not fit int64 (read, never wrapped)")
    if a.size and a.dtype.kind == "O" and int(a.min()) < -INT64_MAX - 1:
        raise GoldenError(f"{path}: value {int(a.min())} does not fit int64 (read, never wrapped)")
    return a.astype(np.int64)


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
        if act_id(key) in self._entries:
            return act_id(key)
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
        """The output tensor (the first one when the program has several)."""
        out = self.manifest["output"]
        return self.tensors[out if isinstance(out, str) else out[0]]


def load(path):
    """Open a golden dump: GoldenSet(root, manifest, tensors (lazy id -> int64 array), ops)."""
    root = Path(path)
    manifest = read_manifest(root)
    tensors = Tensors(root, manifest)
    ops = [OpView(o["index"], o["name"], o["kind"], o["spec"], o["attrs"], o["inputs"], o["outputs"],
                  o["consts"], tensors) for o in manifest["ops"]]
    return GoldenSet(root, manifest, tensors, ops)



def program_const(value, cname, attrs):
    """A constant as the compiler emits it: weights in their weight format's storage, every other
    array as int64, 0-d values as Python ints (docs/golden.md, "The program of a dump")."""
    if cname == "weight" and "weight_fmt" in attrs:
        return value.astype(IntFormat(**attrs["weight_fmt"]).storage)
    return int(value) if value.ndim == 0 else value.astype(np.int64)


def load_program(path):
    """The integer program a dump was made from, rebuilt from its manifest and constant files
    (every op, constant, format and documentary scale). Its fingerprint must equal the one the
    manifest recorded, so the rebuilt program is exactly the one that made the dump."""
    g = load(path)
    m = g.manifest
    names, tensors = {}, {}
    for tid, e in m["tensors"].items():
        if e.get("kind") in ("input", "activation"):
            fmt = IntFormat(int(e["bits"]), bool(e["signed"]), bool(e.get("narrow", False)))
            tensors[e["name"]] = TensorInfo(e["name"], fmt, e.get("scale"), tuple(e["shape"][1:]),
                                            e.get("source", ""), int(e.get("axis", -1)))
            names[tid] = e["name"]
    ops = [Op(o.kind, o.name, [names[t] for t in o.input_ids], [names[t] for t in o.output_ids],
              {c: program_const(v, c, o.attrs) for c, v in o.consts.items()}, o.attrs, o.spec)
           for o in g.ops]
    meta = {"spec_version": m.get("spec_version"), "config": m.get("config", {}),
            "model": (m.get("model") or {}).get("file"), "model_sha256": (m.get("model") or {}).get("sha256")}
    meta |= {key: m[key] for key in PROVENANCE if key in m}     # so that a re-dump records them too
    out = m["output"]
    program = Program(ops, tensors, names[m["input"]["tensor"]],
                      names[out] if isinstance(out, str) else [names[t] for t in out], meta)
    if program.fingerprint() != m.get("program_fingerprint"):
        raise GoldenError(f"{path}: the program rebuilt from the dump has fingerprint "
                          f"{program.fingerprint()[:16]}..., the manifest records "
                          f"{str(m.get('program_fingerprint'))[:16]}...: not the program that made it")
    return program
