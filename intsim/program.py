"""The integer program: plain data, ops in execution order with integer constants only.

Saved as `<name>.json` (structure, formats, scales for documentation and the boundary) beside
`<name>.npz` (every integer constant). Running it needs the kernel library and nothing else; the
only floats in it are the input quantizer's scale, the output dequantizer's scale and the
documentary scale of every tensor (used by golden manifests and per-layer SQNR, never by kernels).
"""
from dataclasses import dataclass, field
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .arith import IntFormat, SPEC_VERSION
from .errors import IntsimError, ProgramError
from .quantize import QuantConfig
from .version import __version__, library_versions

PROGRAM_SCHEMA = 1


@dataclass
class TensorInfo:
    name: str
    fmt: IntFormat
    scale: object               # float, or list of floats (per channel along `axis`)
    shape: tuple                # without the batch dimension
    source: str = ""            # the float graph tensor this integer tensor realises
    axis: int = -1              # channel axis of a per-channel scale, from the end (-3: NCHW's C)

    def to_dict(self):
        d = {"name": self.name, "fmt": self.fmt.to_dict(), "scale": self.scale,
             "shape": list(self.shape), "source": self.source}
        return d | ({"axis": self.axis} if self.axis != -1 else {})

    @classmethod
    def from_dict(cls, d):
        return cls(d["name"], IntFormat(**d["fmt"]), d["scale"], tuple(d["shape"]), d.get("source", ""),
                   int(d.get("axis", -1)))

    def dequantize(self, q):
        """Real values of an integer tensor (offline analysis only; never on the integer path)."""
        return np.asarray(q, dtype=np.float64) * channel_scale(self.scale, self.axis)


def channel_scale(scale, axis=-1):
    """A documentary scale shaped to broadcast against a tensor: per channel along `axis` (< 0)."""
    s = np.asarray(scale, dtype=np.float64)
    return s.reshape(s.shape + (1,) * (-1 - axis)) if s.ndim else s


@dataclass
class Op:
    kind: str                   # an op kind of intsim/ops (ops.KINDS)
    name: str                   # stable, readable: becomes golden file names
    inputs: list
    outputs: list
    consts: dict = field(default_factory=dict)   # name -> int or integer ndarray
    attrs: dict = field(default_factory=dict)    # JSON-able: kernel name, heads, ...
    spec: str = ""              # docs/arithmetic.md section implemented


@dataclass
class Program:
    ops: list
    tensors: dict               # name -> TensorInfo
    input_name: str
    output_name: object         # a tensor name, or a list of names for several outputs
    meta: dict = field(default_factory=dict)

    @property
    def input(self):
        return self.tensors[self.input_name]

    @property
    def outputs(self):
        """The output tensor names, in order (one or several)."""
        return [self.output_name] if isinstance(self.output_name, str) else list(self.output_name)

    @property
    def output(self):
        """The TensorInfo of the output (of the first output when there are several)."""
        return self.tensors[self.outputs[0]]

    def op(self, name):
        for op in self.ops:
            if op.name == name:
                return op
        raise KeyError(f"no op named {name!r}; ops: {[o.name for o in self.ops][:8]}...")

    def summary(self):
        lines = [f"integer program: {len(self.ops)} ops, spec {self.meta.get('spec_version')}"]
        for i, op in enumerate(self.ops):
            outs = ", ".join(f"{o}:{self.tensors[o].fmt.describe()}" for o in op.outputs)
            kern = f" [{op.attrs['kernel']}]" if "kernel" in op.attrs else ""
            lines.append(f"{i:4d} {op.kind:<13}{op.name:<32}{kern} -> {outs}")
        return "\n".join(lines)

    # --- persistence ---------------------------------------------------------------------------------
    def save(self, path):
        """Write path.json + path.npz (path without suffix) as one unit: both are written to
        temporary files first, the JSON records the program's fingerprint, and `load` refuses a
        pair whose halves do not belong together (e.g. after a crash between the two renames)."""
        base = Path(path).with_suffix("")
        if base.with_suffix(".json").is_dir() or base.with_suffix(".npz").is_dir() or base.is_dir():
            raise ProgramError(f"cannot save the integer program to {base}: a folder is in the way")
        doc, arrays = self._document()
        tag = f".{os.getpid()}.tmp"
        tmp_json, tmp_npz = Path(f"{base}.json{tag}"), Path(f"{base}.npz{tag}")
        try:
            tmp_json.write_text(json.dumps(doc, indent=1) + "\n")
            with open(tmp_npz, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp_npz, base.with_suffix(".npz"))
            os.replace(tmp_json, base.with_suffix(".json"))
        except OSError as e:
            raise ProgramError(f"cannot save the integer program to {base}.json/.npz: "
                               f"{e.strerror or e}") from None
        finally:
            for t in (tmp_json, tmp_npz):
                t.unlink(missing_ok=True)
        return base.with_suffix(".json")

    def _document(self):
        arrays, ops = {}, []
        for i, op in enumerate(self.ops):
            consts = {}
            for cname, v in op.consts.items():
                if isinstance(v, np.ndarray):
                    consts[cname] = {"npz": f"{i:04d}/{cname}"}
                    arrays[consts[cname]["npz"]] = v
                else:
                    consts[cname] = int(v)
            ops.append({"kind": op.kind, "name": op.name, "inputs": op.inputs, "outputs": op.outputs,
                        "consts": consts, "attrs": op.attrs, "spec": op.spec})
        doc = {"schema": PROGRAM_SCHEMA, "fingerprint": self.fingerprint(), "meta": self.meta,
               "input": self.input_name, "output": self.output_name,
               "tensors": [t.to_dict() for t in self.tensors.values()], "ops": ops}
        return doc, arrays

    @classmethod
    def load(cls, path):
        """A program written by `save`. Constants must be JSON integers or arrays in the .npz, and
        the pair's fingerprint must match; anything else is a ProgramError naming what is wrong."""
        base = Path(path).with_suffix("")
        try:
            doc = json.loads(base.with_suffix(".json").read_text())
            with np.load(base.with_suffix(".npz"), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:  # noqa: BLE001 - a damaged archive fails in zipfile's many ways: one error
            raise ProgramError(f"cannot read integer program {base}.json/.npz: {e}") from None
        if not isinstance(doc, dict) or doc.get("schema") != PROGRAM_SCHEMA:
            schema = doc.get("schema") if isinstance(doc, dict) else None
            raise ProgramError(f"{base}.json: program schema {schema}, expected {PROGRAM_SCHEMA}")
        try:
            program = cls._from_document(doc, arrays, f"{base}.json")
        except (KeyError, TypeError, AttributeError) as e:
            raise ProgramError(f"{base}.json: malformed program ({type(e).__name__}: {e})") from None
        check_config(program.meta.get("config"), f"{base}.json")
        recorded = doc.get("fingerprint")
        if recorded is not None and recorded != program.fingerprint():
            raise ProgramError(f"{base}.json and {base}.npz do not belong together (the JSON records "
                               f"fingerprint {recorded[:16]}..., the pair gives "
                               f"{program.fingerprint()[:16]}...)")
        return program

    @classmethod
    def _from_document(cls, doc, arrays, where):
        ops = []
        for i, d in enumerate(doc["ops"]):
            consts = {k: _const_value(v, arrays, f"{where}: op {i} {d['name']!r} constant {k!r}")
                      for k, v in d["consts"].items()}
            ops.append(Op(d["kind"], d["name"], list(d["inputs"]), list(d["outputs"]), consts,
                          dict(d["attrs"]), d["spec"]))
        tensors = {t["name"]: TensorInfo.from_dict(t) for t in doc["tensors"]}
        output = doc["output"]
        return cls(ops, tensors, doc["input"], output if isinstance(output, str) else list(output),
                   doc.get("meta", {}))

    def fingerprint(self):
        """SHA-256 over everything that decides the integers or how they are read: every op,
        attribute and constant, every tensor's format, shape and scale (the input quantizer's
        scale decides the input's integers), the input and output names, and the configuration the
        program records. Equal programs, equal fingerprints; an edit to any of these shows."""
        h = hashlib.sha256()
        for op in self.ops:
            h.update(json.dumps([op.kind, op.name, op.inputs, op.outputs, op.attrs], sort_keys=True).encode())
            for k in sorted(op.consts):
                v = np.asarray(op.consts[k])
                h.update(k.encode() + str(v.dtype).encode() + str(v.shape).encode() + v.tobytes())
        tensors = [self.tensors[name].to_dict() for name in sorted(self.tensors)]
        h.update(json.dumps([tensors, self.input_name, self.output_name, self.meta.get("config", {})],
                            sort_keys=True).encode())
        return h.hexdigest()


def check_config(config, where):
    """A saved program's recorded configuration must be one QuantConfig accepts (known keys, values
    in range): it is copied into golden manifests and read by the commands."""
    if config is None or config == {}:
        return
    if not isinstance(config, dict):
        raise ProgramError(f"{where}: meta.config is {type(config).__name__}, expected an object")
    try:
        QuantConfig.from_dict(config)
    except (IntsimError, TypeError, ValueError) as e:
        raise ProgramError(f"{where}: meta.config is not a valid configuration: {e}") from None


def _const_value(v, arrays, what):
    """A constant as saved: a JSON integer (not a float, string or boolean) or an integer array."""
    if isinstance(v, dict):
        if v.get("npz") not in arrays:
            raise ProgramError(f"{what}: array {v.get('npz')!r} is missing from the .npz")
        a = arrays[v["npz"]]
        if a.dtype.kind not in "iu":
            raise ProgramError(f"{what}: array of dtype {a.dtype}; constants are integers")
        return a
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProgramError(f"{what}: {v!r} is not a JSON integer")
    return v


def new_meta(config, model_path=None, model_sha256=None):
    """A new program's provenance. `versions` are those of the libraries that computed its
    constants (version.library_versions); whoever calibrated it may add `calibration` (the data
    set, image count and images_sha256 of the images). Both are provenance only: programs saved
    without them load as well, and the fingerprint leaves meta out."""
    return {"intsim_version": __version__, "spec_version": SPEC_VERSION, "config": config,
            "model": str(model_path) if model_path else None, "model_sha256": model_sha256,
            "versions": library_versions()}
