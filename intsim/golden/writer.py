"""Writing a golden dump: every op's integer inputs, outputs and constants of one program run, with
the manifest, into a directory that appears atomically (docs/golden.md).

    DIR/manifest.json                   schema "intsim-golden", version GOLDEN_SCHEMA
    DIR/act/<tensor>.<npy|bin|hex>      every integer activation (model input ... logits), once
    DIR/const/<op>.<const>.<npy|bin|hex> every integer constant of every op (0-d for scalars)

A tensor is identified by its *id*: its path relative to DIR without the format extension
("act/blocks.0.attn.softmax", "const/blocks.0.attn.qkv.weight"). The CRC32 and SHA-256 in the
manifest are of the canonical bytes, i.e. of the .bin file, whatever formats were written. Each
constant is written in the register its op declares (`OpDef.const_formats`, the spec's register
widths), with the narrowest format holding its values beside it; its documentary scale also comes
from its op (intsim/ops).
"""
import ctypes
import errno
import hashlib
import json
import os
from pathlib import Path
import shutil
import tempfile
import zlib

import numpy as np

from ..arith import SPEC_VERSION
from ..execute import Executable
from ..ops import check_constants, program_op
from ..progress import bar
from ..version import __version__
from .formats import (GOLDEN_SCHEMA, MANIFEST, PROVENANCE, SCHEMA_NAME, GoldenError, TFormat, act_id,
                      canonical, check_formats, check_pack, const_id, hex_text, hex_word_digits)

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


class TensorWriter:
    """Writes tensors into a dump directory and builds their manifest entries (also used by
    intsim.conformance, whose sets are dumps of one-op programs)."""

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


def dump(program, q_input, out_dir, formats=("npy",), pack=1, force=False, input_source=None):
    """Run `program` on the quantized input batch and write its golden dump to out_dir.

    Every op's integer inputs, outputs and constants are written once, in execution order, into a
    temporary directory beside out_dir that is renamed into place at the end (atomic; with
    force=True an existing dump is swapped out atomically where the OS allows). Returns the
    manifest (a dict)."""
    formats = check_formats(formats)
    pack = check_pack(pack)
    check_output(Path(out_dir), force)
    check_constants(program)            # a dump records only constants its spec allows
    q_input = np.asarray(q_input)
    return write_atomically(out_dir, force, lambda tmp: _Recorder(tmp, program, formats, pack).record(
        q_input, input_source))


def write_atomically(out_dir, force, fill):
    """fill(tmp) writes a dump's files into a temporary directory beside out_dir and returns its
    manifest; the manifest is written and the directory renamed into place (see dump). Returns
    the manifest."""
    out = Path(out_dir)
    check_output(out, force)
    created = _make_parents(out.parent)
    remove_stale_temporaries(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())        # mkdtemp's 0700 would make the dump private
        manifest = fill(tmp)
        with open(tmp / MANIFEST, "w") as f:
            f.write(manifest_text(manifest))
        _install(tmp, out, force)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_created(created)
        full = e.errno == errno.ENOSPC or "requested and" in str(e)
        raise GoldenError(f"{out}: writing the dump failed ({'the disk is full' if full else e}); "
                          f"nothing was left behind") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_created(created)
        raise
    return manifest


def _remove_created(created):
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            pass


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(out):
    """Remove the hidden temporaries of earlier dumps to the same name whose process is gone (a
    run killed with SIGKILL cannot clean up after itself; its pid is in the folder's name)."""
    for p in Path(out).parent.glob(f".{Path(out).name}.*-*-*"):
        kind, _, rest = p.name[len(Path(out).name) + 2:].partition("-")
        pid = rest.split("-", 1)[0]
        if kind in ("tmp", "old") and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


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



def write_constants(w, program, index, op):
    """Every constant of op (op number `index` of program) into TensorWriter w, in the register
    its op declares, with the allowed `range` and the `minimal` format beside it; {name: id}."""
    d = program_op(op.kind)
    declared, scales = d.const_formats(op, program), d.const_scales(op, program)
    ids = {}
    for cname, v in op.consts.items():
        v = np.asarray(v)
        if cname not in declared:
            raise GoldenError(f"op {index} {op.name!r}: constant {cname!r} has no declared register")
        reg, low = declared[cname], TFormat.minimal(v)
        ids[cname] = w.add(const_id(op.name, cname), v, TFormat.register(reg),
                           {"kind": "constant", "name": cname, "op": index,
                            "scale": _scale_json(scales.get(cname)), "range": [reg.lo, reg.hi],
                            "minimal": {"bits": low.bits, "signed": low.signed}})
    return ids


def op_record(program, index, op, input_ids, output_ids, const_ids, attrs=None):
    """The manifest entry of op number `index`; `datapath` declares the internal registers whose
    width its constants decide (OpDef.datapath_widths), so that RTL is sized from the manifest."""
    entry = {"index": index, "name": op.name, "kind": op.kind, "spec": op.spec,
             "attrs": op.attrs if attrs is None else attrs, "inputs": input_ids, "outputs": output_ids,
             "consts": const_ids}
    widths = program_op(op.kind).datapath_widths(op, program)
    if widths:
        entry["datapath"] = widths
    return entry


class _Recorder:
    """Observes one program run and writes each tensor the first time it appears."""

    def __init__(self, tmp, program, formats, pack):
        self.w = TensorWriter(tmp, formats, pack)
        self.program = program
        self.formats, self.pack = formats, pack
        self.ids = {}                        # program tensor name -> id
        self.ops = []
        self.index = {id(op): i for i, op in enumerate(program.ops)}

    def act(self, name, arr, kind, producer):
        info = self.program.tensors[name]
        self.ids[name] = self.w.add(act_id(name), arr, TFormat.of(info.fmt),
                                    {"kind": kind, "name": name, "op": producer,
                                     "scale": _scale_json(info.scale), "source": info.source}
                                    | ({"axis": info.axis} if info.axis != -1 else {}))

    def constants(self, i, op):
        return write_constants(self.w, self.program, i, op)

    def observe(self, op, ins, outs):
        i = self.index[id(op)]
        consts = self.constants(i, op)
        for name, arr in zip(op.outputs, outs):
            self.act(name, arr, "activation", i)
        missing = [t for t in op.inputs if t not in self.ids]
        if missing:
            raise GoldenError(f"op {i} {op.name!r} reads {missing} before any op wrote it")
        self.ops.append(op_record(self.program, i, op, [self.ids[t] for t in op.inputs],
                                  [self.ids[t] for t in op.outputs], consts))

    def record(self, q_input, input_source):
        program = self.program
        self.act(program.input_name, q_input, "input", None)
        with bar(len(program.ops), "golden", None, "op") as b:     # on a terminal only

            def observe_and_count(op, ins, outs):
                self.observe(op, ins, outs)
                b.update(1)
            Executable(program).run(q_input, observe=observe_and_count)
        meta = program.meta
        model = meta.get("model")
        manifest = {
            "schema": SCHEMA_NAME,
            "schema_version": GOLDEN_SCHEMA,
            "intsim_version": __version__,
            "spec_version": meta.get("spec_version", SPEC_VERSION),
            "model": {"file": Path(model).name if model else None, "sha256": meta.get("model_sha256")},
            "program_fingerprint": program.fingerprint(),
            "config": meta.get("config", {}),
        }
        for key in PROVENANCE:          # only when the program records them (older ones do not)
            if meta.get(key) is not None:
                manifest[key] = meta[key]
        return manifest | {
            "kernels": {op.name: {"family": op.attrs["family"], "kernel": op.attrs["kernel"],
                                  "spec": op.spec} for op in program.ops if "kernel" in op.attrs},
            "input": {"tensor": self.ids[program.input_name], "images": int(q_input.shape[0]),
                      "source": input_source},
            "output": (self.ids[program.output_name] if isinstance(program.output_name, str)
                       else [self.ids[t] for t in program.output_name]),
            "formats": list(self.formats),
            "byte_order": "little",
            "hex": {"pack": self.pack,
                    "element_order": "C order; in a packed word element 0 is least significant"},
            "tensors": self.w.tensors,
            "ops": self.ops,
        }


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
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
    os.rename(out, old / "d")
    os.rename(tmp, out)
    shutil.rmtree(old)

