"""The fuzzing tier: hypothesis mutates ONNX models, integer programs (in memory and saved), and
golden dumps. Every case must end in a correct result or a one-line intsim error: never a traceback
from deep inside NumPy, never a silent wrong answer.

  program cases   fast path == reference path bit for bit (both in every declared format), or
                  both refuse with an IntsimError
  saved programs  load gives a program that behaves as above, or a ProgramError
  golden dumps    load_program / compare end in a result or a GoldenError
  ONNX models     load_onnx gives a graph that the importer verified against the ONNX evaluation,
                  or an IntsimError

Run: `python -m pytest -q -m fuzz`; the seed is printed in the session header (reproduce a failure
with INTSIM_FUZZ_SEED=<seed>). INTSIM_FUZZ_CASES scales the number of cases (default 1)."""
import copy
import json
import os
from pathlib import Path
import shutil

from hypothesis import HealthCheck, given, note, seed, settings, strategies as st
import numpy as np
import pytest

from conftest import FUZZ_SEED, toy_input, toy_program
from intsim import golden
from intsim.errors import IntsimError
from intsim.execute import Executable
from intsim.program import Program

pytestmark = [pytest.mark.fuzz, pytest.mark.slow]
REPO = Path(__file__).resolve().parent.parent
SCALE = float(os.environ.get("INTSIM_FUZZ_CASES", "1"))


def budget(n):
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def one_line(e):
    assert isinstance(e, IntsimError), f"{type(e).__name__} escaped: {e}"
    assert "\n" not in str(e) and str(e), f"not one line: {e!r}"


# --- programs -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def programs():
    shipped = golden.load_program(REPO / "golden" / "fmnist_w4a8")
    q = golden.load(REPO / "golden" / "fmnist_w4a8").input.astype(np.uint8)
    return [(toy_program(), toy_input()), (shipped, q)]


VALUES = st.sampled_from([0, 1, -1, 2, 7, 31, 32, 61, 62, 63, 64, 70, 200, -31, -32, -33, 127, 128,
                          -128, -129, 255, 256, 32767, 32768, -32769, (1 << 31) - 1, 1 << 31,
                          -(1 << 31) - 1, 1 << 40, (1 << 62), -(1 << 62)])


def _mutate_constant(p, data):
    ops = [o for o in p.ops if o.consts]
    op = ops[data.draw(st.integers(0, len(ops) - 1), label="op")]
    name = data.draw(st.sampled_from(sorted(op.consts)))
    v = op.consts[name]
    kind = data.draw(st.sampled_from(["value", "dtype", "shape", "delete"]))
    if kind == "delete":
        del op.consts[name]
    elif kind == "dtype":
        op.consts[name] = np.asarray(v).astype(data.draw(st.sampled_from([np.float64, np.uint64, np.int8,
                                                                          np.bool_])))
    elif kind == "shape" and np.ndim(v):
        op.consts[name] = np.asarray(v).ravel()[:max(0, np.size(v) - data.draw(st.integers(1, 3)))]
    elif np.ndim(v):
        a = np.array(v, dtype=np.int64)
        a.flat[data.draw(st.integers(0, a.size - 1))] = data.draw(VALUES)
        op.consts[name] = a.astype(np.asarray(v).dtype) if data.draw(st.booleans()) else a
    else:
        op.consts[name] = data.draw(VALUES)
    return f"{op.name}.{name}: {kind}"


def _mutate_structure(p, data):
    op = p.ops[data.draw(st.integers(0, len(p.ops) - 1), label="op")]
    kind = data.draw(st.sampled_from(["kind", "input", "attr", "tensor_fmt", "tensor_shape"]))
    if kind == "kind":
        op.kind = data.draw(st.sampled_from(["linear", "requant", "softmax", "gelu", "add", "nope"]))
    elif kind == "input":
        op.inputs[0] = data.draw(st.sampled_from(sorted(p.tensors) + ["missing"]))
    elif kind == "attr" and op.attrs:
        key = data.draw(st.sampled_from(sorted(op.attrs)))
        op.attrs[key] = data.draw(st.sampled_from([0, -1, 3, "nope", None, {"bits": 1}]))
    elif kind == "tensor_fmt":
        t = p.tensors[op.outputs[0]]
        t.fmt = type(t.fmt)(data.draw(st.sampled_from([2, 7, 8, 9, 16, 31])), data.draw(st.booleans()))
    elif kind == "tensor_shape":
        t = p.tensors[op.outputs[0]]
        t.shape = tuple(t.shape[:-1]) + (t.shape[-1] + data.draw(st.sampled_from([-1, 1])),)
    return f"{op.name}: {kind}"


def check_program(p, q):
    """Fast and reference agree bit for bit, or both refuse with one line."""
    results = []
    for path in ("fast", "reference"):
        try:
            results.append(Executable(p, path).run(q))
        except Exception as e:      # noqa: BLE001 - the test is that only intsim errors come out
            one_line(e)
            results.append(e)
    fast, ref = results
    if isinstance(fast, Exception) or isinstance(ref, Exception):
        assert isinstance(fast, Exception) and isinstance(ref, Exception), \
            f"one path ran, the other refused: {fast if isinstance(fast, Exception) else ref}"
    else:
        np.testing.assert_array_equal(fast, ref)


@seed(FUZZ_SEED)
@budget(500)
@given(st.data())
def test_mutated_programs(programs, data):
    p, q = copy.deepcopy(programs[data.draw(st.integers(0, len(programs) - 1), label="program")])
    what = (_mutate_constant if data.draw(st.booleans()) else _mutate_structure)(p, data)
    note(what)
    check_program(p, q)


# --- saved programs ---------------------------------------------------------------------------------

def _edit_json(doc, data):
    op = doc["ops"][data.draw(st.integers(0, len(doc["ops"]) - 1), label="op")]
    kind = data.draw(st.sampled_from(["const", "delete", "schema", "fingerprint", "tensor", "format",
                                      "scale", "config"]))
    if kind == "const" and op["consts"]:
        name = data.draw(st.sampled_from(sorted(op["consts"])))
        op["consts"][name] = data.draw(st.sampled_from([31.7, "31", True, None, [1, 2], {"npz": "x"}, 2 ** 70]))
    elif kind == "delete":
        del op[data.draw(st.sampled_from(sorted(op)))]
    elif kind in ("schema", "const"):
        doc["schema"] = data.draw(st.sampled_from([0, 2, "1", None]))
    elif kind == "fingerprint":
        doc["fingerprint"] = "0" * 64
    elif kind in ("format", "scale"):           # a valid-looking edit of any tensor
        t = doc["tensors"][data.draw(st.integers(0, len(doc["tensors"]) - 1), label="tensor")]
        if kind == "format":
            t["fmt"]["bits"] = data.draw(st.sampled_from([b for b in (2, 4, 8, 16, 32) if b != t["fmt"]["bits"]]))
        else:
            t["scale"] = data.draw(st.sampled_from([0.5, 1e-3, 2.0]))
    elif kind == "config":
        config = doc["meta"].setdefault("config", {})
        key = data.draw(st.sampled_from(["wbits", "abits", "layer_wbits", "weight_group", "qk_wbits", "colour"]))
        config[key] = data.draw(st.sampled_from([4, 11, -1, "8", None, {"qkv": 3}, [8]]))
    else:
        doc["tensors"][0]["fmt"]["bits"] = data.draw(st.sampled_from([0, 64, "8", None]))
    return kind


@seed(FUZZ_SEED)
@budget(150)
@given(st.data())
def test_mutated_program_files(programs, tmp_path_factory, data):
    p, q = programs[data.draw(st.integers(0, len(programs) - 1), label="program")]
    base = tmp_path_factory.mktemp("prog") / "p"
    p.save(base)
    if data.draw(st.booleans()):
        doc = json.loads(base.with_suffix(".json").read_text())
        note(_edit_json(doc, data))
        base.with_suffix(".json").write_text(json.dumps(doc))
    else:
        raw = bytearray(base.with_suffix(".npz").read_bytes())
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] ^= 1 << data.draw(st.integers(0, 7))
        if data.draw(st.booleans()):
            raw = raw[:at]
        base.with_suffix(".npz").write_bytes(bytes(raw))
    try:
        loaded = Program.load(base)
    except Exception as e:          # noqa: BLE001
        one_line(e)
        return
    # what loads is the saved program: an edit of anything that decides the integers is refused
    assert loaded.fingerprint() == p.fingerprint()
    check_program(loaded, q)


# --- golden dumps -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    root = tmp_path_factory.mktemp("dump") / "g"
    golden.dump(toy_program(), toy_input(), root, ("npy", "bin", "hex"))
    return root


@seed(FUZZ_SEED)
@budget(200)
@given(st.data())
def test_mutated_golden_dumps(dump, tmp_path_factory, data):
    other = tmp_path_factory.mktemp("other") / "g"
    shutil.copytree(dump, other)
    files = sorted(p for p in other.rglob("*") if p.is_file())
    f = data.draw(st.sampled_from(files))
    kind = data.draw(st.sampled_from(["flip", "truncate", "delete", "manifest"]))
    note(f"{f.relative_to(other)}: {kind}")
    if kind == "delete":
        f.unlink()
    elif kind == "manifest" or f.name == "manifest.json":
        doc = json.loads((other / "manifest.json").read_text())
        entry = data.draw(st.sampled_from(sorted(doc["tensors"])))
        field = data.draw(st.sampled_from(["bits", "signed", "shape", "dtype", "files", "sha256"]))
        doc["tensors"][entry][field] = data.draw(st.sampled_from([0, 65, None, "x", [1], {"npy": "../x"}]))
        (other / "manifest.json").write_text(json.dumps(doc))
    else:
        raw = bytearray(f.read_bytes())
        if raw:
            at = data.draw(st.integers(0, len(raw) - 1))
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
            f.write_bytes(bytes(raw if kind == "flip" else raw[:at]))
    for run in (lambda: golden.compare(dump, other), lambda: golden.compare(other, dump),
                lambda: golden.load_program(other)):
        try:
            run()
        except Exception as e:      # noqa: BLE001
            one_line(e)


# --- ONNX models --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def onnx_models():
    import onnx
    return [onnx.load(str(REPO / "models" / n)) for n in ("fmnist_vit_legacy13.onnx", "fmnist_vit_dynamo18.onnx")]


def _mutate_onnx(m, data):
    from onnx import numpy_helper
    g = m.graph
    kind = data.draw(st.sampled_from(["delete_node", "attribute", "initializer", "input_shape"]))
    if kind == "delete_node":
        i = data.draw(st.integers(0, len(g.node) - 1), label="node")
        note(f"delete {g.node[i].op_type} {g.node[i].name!r}")
        del g.node[i]
    elif kind == "attribute":
        nodes = [n for n in g.node if n.attribute]
        node = nodes[data.draw(st.integers(0, len(nodes) - 1), label="node")]
        a = node.attribute[data.draw(st.integers(0, len(node.attribute) - 1), label="attribute")]
        note(f"{node.op_type} {node.name!r} {a.name}")
        if a.ints:
            a.ints[data.draw(st.integers(0, len(a.ints) - 1))] += data.draw(st.sampled_from([-1, 1, 2]))
        elif a.type == a.FLOAT:
            a.f = data.draw(st.sampled_from([0.0, -1.0, 1e30, float("nan")]))
        else:
            a.i += data.draw(st.sampled_from([-2, -1, 1, 3]))
    elif kind == "initializer":
        t = g.initializer[data.draw(st.integers(0, len(g.initializer) - 1), label="initializer")]
        note(t.name)
        v = numpy_helper.to_array(t).copy()
        if v.dtype.kind == "f" and v.size:
            v.flat[data.draw(st.integers(0, v.size - 1))] = data.draw(st.sampled_from([np.nan, np.inf, 1e30, 0.0]))
        elif v.size:
            v = v.ravel()[:-1]
        t.CopyFrom(numpy_helper.from_array(v, t.name))
    else:
        d = g.input[0].type.tensor_type.shape.dim[data.draw(st.integers(1, 3))]
        d.dim_value = data.draw(st.sampled_from([1, 3, 27, 56]))
    return kind


@seed(FUZZ_SEED)
@budget(250)
@given(st.data())
def test_mutated_onnx_models(onnx_models, data):
    from intsim.onnx_import import load_onnx
    m = copy.deepcopy(onnx_models[data.draw(st.integers(0, len(onnx_models) - 1), label="model")])
    note(_mutate_onnx(m, data))
    try:
        load_onnx(m)                # verify=True: a graph is only returned if it matches the ONNX run
    except Exception as e:          # noqa: BLE001
        one_line(e)
