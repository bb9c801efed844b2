"""Running a case on the reference path and writing the conformance set in the golden format."""
import zlib

import numpy as np

from ..arith import IntFormat, SPEC_VERSION
from ..execute import check_output
from ..golden import (GOLDEN_SCHEMA, SCHEMA_NAME, GoldenError, TensorWriter, TFormat, act_id,
                      check_formats, check_output as check_dump_output, check_pack, entry_format,
                      op_record, program_const, write_atomically, write_constants)
from ..ops import check_constants, program_op
from ..program import Op, Program, TensorInfo
from ..progress import bar
from ..version import __version__
from .registry import CONFORMANCE_SCHEMA, GENERATORS, KERNELS


def _tensor(name, fmt, arr):
    """A program tensor for one of a case's arrays: axis 0 is the batch; no documentary scale."""
    return TensorInfo(name, fmt, None, tuple(np.shape(arr)[1:]))


def case_program(case):
    """The one-op integer program of a case: its inputs, constants, attributes, output formats and
    shapes (the first input's unless the case says otherwise)."""
    name = f"{case.kernel}.{case.name}"
    ins = [_tensor(f"{name}.{n}", f, x) for n, x, f in case.inputs]
    shape = ins[0].shape if case.out_shape is None else tuple(case.out_shape)
    outs = [TensorInfo(f"{name}.{n}", f, None, shape) for n, f in zip(case.out_names, case.out_fmts)]
    op = Op(case.kind, name, [t.name for t in ins], [t.name for t in outs], case.consts, case.attrs,
            case.spec or KERNELS[case.kernel][1])
    return Program([op], {t.name: t for t in ins + outs}, ins[0].name, outs[0].name, {})


def run_op(program, inputs, path="reference"):
    """The outputs of a one-op program's op through the op registry on `path` (bind checks its
    constants), each checked to have its declared shape and lie in its declared format, as the
    executor checks every op."""
    op = program.ops[0]
    d = program_op(op.kind)
    outs = d.run(op, inputs, d.bind(op, program), path)
    for name, val in zip(op.outputs, outs):
        check_output(program, 0, op, name, val)
    return outs


def reference_outputs(case):
    """(program, outputs) of a case: its inputs checked against their formats, its constants
    against their op's registers (ops.check_constants), its outputs by the reference path."""
    program = case_program(case)
    for n, x, f in case.inputs:
        if x.size and (int(x.min()) < f.lo or int(x.max()) > f.hi):
            raise AssertionError(f"{program.ops[0].name}: input {n} outside {f.describe()}")
    check_constants(program)
    return program, run_op(program, [x for _, x, _ in case.inputs])


def check_kernels(kernels=None):
    """The selected kernel names (default all), each one of KERNELS."""
    names = list(KERNELS) if kernels is None else list(kernels)
    unknown = [k for k in names if k not in KERNELS]
    if unknown:
        raise GoldenError(f"unknown conformance kernel(s) {', '.join(unknown)}; choose from "
                          f"{', '.join(KERNELS)}")
    return names


def iter_cases(kernels=None, seed=0):
    """Every Case of the selected kernels (default all), in a fixed order. Each kernel draws from
    its own generator seeded by (seed, crc32(kernel name)): selecting kernels changes nothing."""
    for kname in check_kernels(kernels):
        rng = np.random.default_rng([int(seed), zlib.crc32(kname.encode())])
        yield from GENERATORS[kname](rng)


def write_conformance(out_dir, formats=("npy",), seed=0, kernels=None, pack=1, force=False):
    """Write the conformance set (docs/conformance.md) to out_dir; returns the manifest (a dict).

    formats: any of npy, bin, hex (as golden dumps); kernels: a subset of KERNELS (default all);
    seed: the seed of the random vectors (directed vectors do not depend on it). The directory
    appears atomically, as a golden dump does."""
    formats = check_formats(formats)
    pack = check_pack(pack)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise GoldenError(f"--seed must be a non-negative integer, got {seed!r}")
    names = check_kernels(kernels)                       # every check before any work
    check_dump_output(out_dir, force)
    return write_atomically(out_dir, force, lambda tmp: _write_into(tmp, formats, pack, int(seed), names))


def _write_case(w, index, case):
    """One case's tensors (inputs, constants, outputs) and its op record."""
    program, outs = reference_outputs(case)
    op = program.ops[0]
    in_ids = [w.add(act_id(t), x, TFormat.of(program.tensors[t].fmt),
                    {"kind": "input", "name": t, "op": None, "scale": None})
              for t, (_, x, _) in zip(op.inputs, case.inputs)]
    consts = write_constants(w, program, index, op)
    out_ids = [w.add(act_id(t), o, TFormat.of(program.tensors[t].fmt),
                     {"kind": "activation", "name": t, "op": index, "scale": None})
               for t, o in zip(op.outputs, outs)]
    return op_record(program, index, op, in_ids, out_ids, consts,
                     attrs=dict(case.attrs, kernel=case.kernel, case=case.name))


def _write_into(root, formats, pack, seed, kernels):
    w = TensorWriter(root, formats, pack)
    ops, kinfo = [], {}
    with bar(len(kernels), "conformance", None, "kernel") as b:     # on a terminal only
        for kernel in kernels:          # each kernel's cases are the same alone (iter_cases)
            kinfo[kernel] = {"spec": KERNELS[kernel][1], "cases": 0}
            for case in iter_cases([kernel], seed):
                ops.append(_write_case(w, len(ops), case))
                kinfo[kernel]["cases"] += 1
            b.update(1)
    return {
        "schema": SCHEMA_NAME,
        "schema_version": GOLDEN_SCHEMA,
        "intsim_version": __version__,
        "spec_version": SPEC_VERSION,
        "conformance": {"schema": CONFORMANCE_SCHEMA, "seed": seed, "kernels": kinfo,
                        "note": "each op is one (kernel, case); outputs computed by intsim's reference path"},
        "model": None,
        "config": {},
        "kernels": {},
        "input": {"tensor": None, "images": 0, "source": None},
        "output": None,
        "formats": list(formats),
        "byte_order": "little",
        "hex": {"pack": pack, "element_order": "C order; in a packed word element 0 is least significant"},
        "tensors": w.tensors,
        "ops": ops,
    }


def cases_of(golden_set, kernel):
    """The op views of one kernel in a loaded conformance set (intsim.golden.load)."""
    return [o for o in golden_set.ops if o.attrs.get("kernel") == kernel]


def program_of(golden_set, op_view):
    """The one-op program of a case of a loaded conformance set, rebuilt from its manifest (formats
    and constants as dumped): run it with `run_op` on either path."""
    entries = golden_set.tensors.entry
    tensors = {}
    for tid in op_view.input_ids + op_view.output_ids:
        e = entries(tid)
        fmt = entry_format(e)
        tensors[e["name"]] = TensorInfo(e["name"], IntFormat(fmt.bits, fmt.signed, fmt.narrow), None,
                                        tuple(e["shape"][1:]))
    names = [entries(t)["name"] for t in op_view.input_ids], [entries(t)["name"] for t in op_view.output_ids]
    consts = {c: program_const(v, c, op_view.attrs) for c, v in op_view.consts.items()}
    op = Op(op_view.kind, op_view.name, names[0], names[1], consts, op_view.attrs, op_view.spec)
    return Program([op], tensors, names[0][0], names[1][0], {})
