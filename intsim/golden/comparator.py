"""Exact comparison of another tool's dump (RTL simulation, another simulator) with a golden dump:
every golden tensor that has a file on the other side, bit for bit, naming the first diverging
tensor in execution order (docs/golden.md)."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .formats import FORMATS, MANIFEST, GoldenError
from .reader import load, load_npy, read_file, read_manifest

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
        dt = load_npy(path, mmap=True).dtype
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
