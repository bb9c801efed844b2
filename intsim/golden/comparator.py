"""Exact comparison of another tool's dump (RTL simulation, another simulator) with a golden dump:
every golden tensor that has a file on the other side, bit for bit, naming the first diverging
tensor in execution order (docs/golden.md).

Before any value is compared, every golden file involved is checked against the CRC32 and SHA-256
of its manifest (a corrupted golden file stops the comparison, naming it), and every file of the
other side against its own manifest's checksums when it has one (a corrupted file there fails as
`corrupt`). A file whose dtype or declared format cannot hold the golden tensor's range is refused,
never read through a wrap."""
from dataclasses import dataclass
import hashlib
from pathlib import Path
import zlib

import numpy as np

from ..arith import register_range
from ..progress import bar
from .formats import FORMATS, MANIFEST, GoldenError
from .reader import load, load_npy, read_file, read_manifest

@dataclass
class FileResult:
    tensor: str                 # golden tensor id
    file: str                   # path relative to the other directory
    status: str                 # match | mismatch | unreadable | refused | corrupt
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
            if first.message:
                lines.append(f"  {first.message}")
            if first.mismatches:
                lines.append(f"  index {first.first_index}: golden {first.golden_value}, other "
                             f"{first.other_value}, difference {first.diff:+d} LSB")
            lines.append(f"failing tensors ({len(self.failed)}):")
            for r in self.failed[:max_rows]:
                counts = (f"{r.mismatches:>8} / {r.size:<8} max |diff| {r.max_abs_diff} LSB"
                          if r.mismatches else "")
                detail = "  ".join(x for x in (r.message, counts) if x)
                lines.append(f"  {r.tensor:<44} {Path(r.file).suffix[1:]:<4} {detail}")
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
    """Exact comparison of every golden tensor that has a file in other_dir (any format), after
    the checksums of both sides (GoldenError naming a corrupted golden file)."""
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
    found, missing = {}, []
    for tid in g.manifest["tensors"]:
        files = [p for p in _candidates(tid, o_entries.get(tid)) if (other / p).is_file()]
        if files:
            found[tid] = files
        else:
            missing.append(tid)
    results = []
    with bar(len(found), "compare", None, "tensor") as b:      # on a terminal only
        for tid, files in found.items():
            verify_golden(g, tid)
            results += [_compare_file(tid, g.tensors[tid], g.manifest["tensors"][tid], o_entries.get(tid),
                                      other / rel, rel, pack) for rel in files]
            b.update(1)
    used = {rel for files in found.values() for rel in files}
    extra = sorted(str(p.relative_to(other)) for p in other.rglob("*")
                   if p.is_file() and p.suffix[1:] in FORMATS and str(p.relative_to(other)) not in used)
    return CompareReport(str(golden_dir), str(other_dir), results, missing, extra, warnings,
                         len(g.manifest["tensors"]), require_all)


def checksum_problem(values, entry):
    """Why these values are not the tensor an entry's crc32/sha256 describe (canonical bytes: the
    entry's dtype, little endian, C order), or None. Values that do not fit the dtype are a problem
    too: nothing wraps."""
    dt = np.dtype(entry["dtype"]).newbyteorder("<")
    lim = np.iinfo(dt)
    if values.size and (int(values.min()) < lim.min or int(values.max()) > lim.max):
        return f"values outside its dtype {dt.name}"
    data = np.ascontiguousarray(values.astype(dt)).tobytes()
    if "crc32" in entry and f"{zlib.crc32(data):08x}" != entry["crc32"]:
        return f"CRC32 {zlib.crc32(data):08x}, the manifest says {entry['crc32']}"
    if "sha256" in entry and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        return "SHA-256 differs from the manifest's"
    return None


def damaged_file(g, tid):
    """(path, problem) of the first file of golden tensor tid that does not hold the bytes its
    manifest's checksums describe, or None."""
    entry = g.manifest["tensors"][tid]
    for fmt, rel in entry.get("files", {}).items():
        path = g.root / rel
        try:
            problem = checksum_problem(read_file(path, entry), entry)
        except GoldenError as e:
            problem = str(e).replace(f"{path}: ", "")
        if problem:
            return path, problem
    return None


def verify_golden(g, tid):
    """Every file of golden tensor tid must hold the bytes its manifest's checksums describe."""
    damaged = damaged_file(g, tid)
    if damaged:
        raise GoldenError(f"golden side: {damaged[0]} is corrupted ({damaged[1]}); refusing to compare "
                          f"against it")


def _refusal(entry, read_entry, path):
    """Why the other file cannot hold the golden tensor faithfully (its dtype or declared format
    does not cover the golden format's range: a value would wrap), or None."""
    lo, hi = register_range(int(entry["bits"]), bool(entry["signed"]), bool(entry.get("narrow", False)))
    want = f"the golden {'s' if entry['signed'] else 'u'}{entry['bits']} range [{lo}, {hi}]"
    o_lo, o_hi = register_range(int(read_entry["bits"]), bool(read_entry["signed"]))
    if not o_lo <= lo <= hi <= o_hi:
        return (f"its manifest declares {'s' if read_entry['signed'] else 'u'}{read_entry['bits']}, "
                f"which cannot hold {want}")
    ext = path.suffix[1:]
    if ext == "hex":
        return None
    try:
        dt = load_npy(path, mmap=True).dtype if ext == "npy" else np.dtype(read_entry["dtype"])
    except (GoldenError, TypeError):
        return None                              # unreadable: read_file says why
    if dt.kind in "iu" and not np.iinfo(dt).min <= lo <= hi <= np.iinfo(dt).max:
        return f"dtype {dt.name} cannot hold {want} (a value would wrap)"
    return None


def _compare_file(tid, gold, entry, other_entry, path, rel, pack):
    read_entry = dict(entry)
    if other_entry is not None:          # the other tool's own dtype/width/packing, if it says so
        for k in ("dtype", "bits", "signed", "hex"):
            if k in other_entry:
                read_entry[k] = other_entry[k]
        if other_entry.get("shape") != entry["shape"]:
            return FileResult(tid, rel, "unreadable", gold.size,
                              message=f"shape {tuple(other_entry.get('shape') or ())} in its manifest, "
                                      f"golden {tuple(entry['shape'])}")
    refusal = _refusal(entry, read_entry, path)
    if refusal:
        return FileResult(tid, rel, "refused", gold.size, message=refusal)
    try:
        b = read_file(path, read_entry, pack)
    except GoldenError as e:
        return FileResult(tid, rel, "unreadable", gold.size,
                          message=str(e).replace(f"{path}: ", "").replace(str(path), rel))
    result = _compare_values(tid, rel, gold, b)
    if rel.endswith(".npy"):
        dt = load_npy(path, mmap=True).dtype
        if dt != np.dtype(entry["dtype"]):
            result.note = f"dtype {dt}, golden {entry['dtype']} (values compared as integers)"
    corrupt = checksum_problem(b, {**read_entry, **other_entry}) if other_entry else None
    if corrupt:
        result.status = "corrupt"
        result.message = f"other side: {rel} does not match its own manifest ({corrupt}): corrupted"
    return result


def _compare_values(tid, rel, gold, b):
    a, bf = gold.ravel(), b.ravel()
    neq = a != bf
    n = int(neq.sum())
    if n == 0:
        return FileResult(tid, rel, "match", a.size)
    i = int(np.argmax(neq))
    idx = tuple(int(v) for v in np.unravel_index(i, gold.shape)) if gold.ndim else ()
    return FileResult(tid, rel, "mismatch", a.size, n, idx, int(a[i]), int(bf[i]),
                      int(np.max(np.abs(bf[neq] - a[neq]))))


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
