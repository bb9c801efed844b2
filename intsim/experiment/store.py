"""The resumable store of an experiment folder: DIR/sweep.json (what every point shares),
DIR/points/<key>.json (one per finished point, written atomically), DIR/results.csv (rebuilt from
the point files after each one), so an interrupted sweep resumes where it stopped."""
import csv
from dataclasses import fields
import hashlib
import io
import json
import os
from pathlib import Path
import warnings

import numpy as np

from ..errors import IntsimWarning, SweepError
from ..quantize import QuantConfig

MANIFEST = "sweep.json"
METRICS = ("images", "float_top1", "int_top1", "agreement", "logit_sqnr_db", "nonlinear_ops",
           "matmul_mbops", "seconds", "error")


def atomic_write(path, text):
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)




def point_config(base, point):
    """The complete QuantConfig a grid point stands for (its label is cosmetic)."""
    settings = {k: v for k, v in point.items() if k != "label"}
    return QuantConfig(**{**base, **settings})


def point_key(point, base=None):
    """A stable id of the complete configuration a point stands for (its label is cosmetic; a
    setting left at its default is part of it, so a changed default is a new point)."""
    settings = point_config(base or {}, point).to_dict()
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class SweepStore:
    """DIR/sweep.json (what every point shares), DIR/points/<key>.json (one per finished point),
    DIR/results.csv (rebuilt from the point files after each one)."""

    def __init__(self, out, context):
        self.dir = Path(out)
        self.points_dir = self.dir / "points"
        context = json.loads(json.dumps(context, default=_json_default))   # as it reads back
        self.base = context.get("base") or {}
        self.points_dir.mkdir(parents=True, exist_ok=True)
        manifest = self.dir / MANIFEST
        if manifest.exists():
            try:
                old = json.loads(manifest.read_text())
            except json.JSONDecodeError as e:
                raise SweepError(f"{manifest}: unreadable ({e}); delete it to start afresh") from None
            if old.get("context") != context:
                diff = sorted(k for k in set(old.get("context", {})) | set(context)
                              if old.get("context", {}).get(k) != context.get(k))
                raise SweepError(f"{self.dir} holds a sweep with other shared settings ({', '.join(diff)}); "
                                 f"use another --out, or delete it to start afresh")
        else:
            atomic_write(manifest, json.dumps({"context": context}, indent=1) + "\n")

    def key(self, point):
        return point_key(point, self.base)

    def path(self, point):
        return self.points_dir / f"{self.key(point)}.json"

    def done(self, point):
        """A point is done when its file reads back whole, unedited, for this point's key (anything
        else is run again, with a warning for a file that exists)."""
        path = self.path(point)
        rec = self._read(path)
        if rec is not None and rec.get("key") == self.key(point):
            return True
        if path.exists():
            warnings.warn(IntsimWarning(f"{path}: corrupt, edited or of another point; running the "
                                        f"point again"), stacklevel=2)
        return False

    def _read(self, path):
        """The record in a point file, or None if it is unreadable, incomplete, or its content no
        longer matches the checksum written with it, or its key is not its point's."""
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if not (isinstance(rec, dict) and {"key", "point", "row", "sha256"} <= set(rec)):
            return None
        body = {k: rec[k] for k in ("key", "point", "row")}
        try:
            same_point = rec["key"] == self.key(rec["point"])
        except (TypeError, ValueError):
            return None
        return rec if same_point and rec["sha256"] == _checksum(body) else None

    def save(self, point, row):
        body = json.loads(json.dumps({"key": self.key(point), "point": point, "row": row},
                                     default=_json_default))            # as it reads back
        rec = {**body, "sha256": _checksum(body)}
        atomic_write(self.path(point), json.dumps(rec, indent=1) + "\n")

    def records(self):
        recs = (self._read(f) for f in sorted(self.points_dir.glob("*.json")))
        return [r for r in recs if r is not None]     # a corrupt file: ignored, its point reruns

    def write_csv(self, order=None):
        """results.csv: one row per finished point, in grid order (then any others)."""
        recs = self.records()
        rank = {k: i for i, k in enumerate(order or [])}
        recs.sort(key=lambda r: (rank.get(r["key"], len(rank)), r["key"]))
        rows = [csv_row(r) for r in recs]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=csv_columns(), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        atomic_write(self.dir / "results.csv", buf.getvalue())
        return rows


def _checksum(body):
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(f"not JSON-able: {type(o).__name__}")


def csv_columns():
    settings = [f.name for f in fields(QuantConfig) if f.name != "overrides"]
    return ["label"] + settings + ["overrides"] + list(METRICS) + ["key"]


def csv_row(rec):
    """One results.csv row: every setting of the configuration, then the metrics."""
    point, row = rec["point"], rec["row"]
    cfg = row["config"]
    out = {k: v for k, v in cfg.items() if k != "overrides"}
    ov = cfg.get("overrides") or {}
    out["overrides"] = json.dumps(ov, sort_keys=True) if ov else ""
    out["label"] = point.get("label", "")
    out.update({k: row.get(k) for k in METRICS})
    out["key"] = rec["key"]
    return out


