"""The ONNX importer package (intsim.onnx_import): the semantic graphs it makes are frozen
(fingerprints taken with the single-module importer it replaced, commit da6e726), constants are
folded by the ONNX engines whatever ops compute them, errors name their cause, and the package
keeps its structure (short functions, no import cycles, no imports hidden in functions)."""
import ast
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from intsim.float_ref import run_float
from intsim.onnx_import import OnnxImportError, fold, load_onnx

onnx = pytest.importorskip("onnx")
ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "intsim" / "onnx_import"


def fingerprint(graph, meta=True):
    """sha256 over the input, output and every node's op, name, wiring, attrs (type and exact
    value) and params (dtype, shape, bytes); with `meta`, also graph.meta without 'source'."""
    h = hashlib.sha256()

    def put(*parts):
        for p in parts:
            h.update(repr(p).encode())
            h.update(b"\0")
    put(graph.input_name, tuple(int(d) for d in graph.input_shape), graph.output_name)
    for n in graph.nodes:
        put(n.op, n.name, list(n.inputs), list(n.outputs))
        for k, v in n.attrs.items():
            put(k, type(v).__name__, v.hex() if isinstance(v, float) else v)
        for k, v in n.params.items():
            put(k, v.dtype.str, v.shape)
            h.update(np.ascontiguousarray(v).tobytes())
    if meta:
        put(json.dumps({k: v for k, v in graph.meta.items() if k != "source"}, sort_keys=True))
    return h.hexdigest()


# Taken with `git show da6e726:intsim/onnx_import.py` (the importer before the package) and this
# fingerprint(). The generated models' hashes leave out meta (it records exporter versions).
SHIPPED = {
    "fmnist_vit_legacy13.onnx": "6c6c78504c1b5e4367997ad129e5cbfa9af99e0691509fa77fdc667fb6c988e4",
    "fmnist_vit_dynamo18.onnx": "149456142bea35dc9d5dabcd0ed8213013db71f34dabcd1215c8797aec841694",
}
GENERATED = {   # (config, depth): the same for both exporter forms
    ("fmnist-vit", 2): "3e91832d715b8417fca952509d1259cd7f159717559990935b9832622b0296c6",
    ("deit-tiny", None): "07a820e8a7747b8207a8fc3baef5d8cb612b97177afe5218319692565746d1ce",
}


def shipped(name):
    path = ROOT / "models" / name
    if not path.is_file():
        pytest.skip(f"{name} not present (made by models/train_fashion_mnist.py)")
    return path


@pytest.fixture(params=["auto", "reference"])
def engine(request, monkeypatch):
    """Fold with ONNX Runtime (when installed) and with the ONNX reference evaluator."""
    monkeypatch.setattr(fold, "ENGINE", request.param)
    return request.param


# --- the graphs are the ones the previous importer made, bit for bit ------------------------------
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_models_graph_unchanged(name, engine):
    assert fingerprint(load_onnx(shipped(name))) == SHIPPED[name]


@pytest.mark.parametrize("form", ["legacy", "dynamo"])
def test_generated_small_graph_unchanged(form, onnx_model):
    assert fingerprint(load_onnx(onnx_model("fmnist-vit", form, depth=2)), meta=False) == \
        GENERATED[("fmnist-vit", 2)]


@pytest.mark.slow
@pytest.mark.models
@pytest.mark.parametrize("form", ["legacy", "dynamo"])
def test_generated_deit_tiny_graph_unchanged(form, onnx_model):
    assert fingerprint(load_onnx(onnx_model("deit-tiny", form)), meta=False) == GENERATED[("deit-tiny", None)]


def test_shapes_fall_back_to_evaluation(monkeypatch):
    """Shapes onnx.shape_inference cannot give are taken from an evaluation: the same graph."""
    monkeypatch.setattr(fold, "infer_types", lambda *args, **kwargs: {})
    name = "fmnist_vit_legacy13.onnx"
    assert fingerprint(load_onnx(shipped(name))) == SHIPPED[name]


def test_onnxruntime_failure_falls_back_to_the_reference_evaluator(monkeypatch):
    """E.g. an opset newer than the installed ONNX Runtime: the reference evaluator takes over."""
    def refuse(*args):
        raise RuntimeError("opset not supported")
    monkeypatch.setattr(fold, "_run_onnxruntime", refuse)
    name = "fmnist_vit_legacy13.onnx"
    assert fingerprint(load_onnx(shipped(name))) == SHIPPED[name]


def test_a_model_no_engine_can_run_is_reported():
    """Strides 2 make 13x13 patches that the (50, D) position embedding cannot be added to."""
    proto = onnx.load(str(shipped("fmnist_vit_legacy13.onnx")))
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    next(a for a in conv.attribute if a.name == "strides").ints[:] = [2, 2]
    with pytest.raises(OnnxImportError, match=r"evaluating the ONNX graph at batch 2 failed: "
                                              r".*onnx\.reference"):
        load_onnx(proto)


# --- constants: any standard op on a constant path ------------------------------------------------
def _resized_position_embedding(proto):
    """Replace the legacy model's pos_embed initializer by a constant subgraph: the cls row
    concatenated with a bicubic Resize of a 4x4 grid to the 7x7 patch grid (as DINOv2 does)."""
    g, h = proto.graph, onnx.helper
    pos = next(t for t in g.initializer if t.name == "pos_embed")
    d = pos.dims[2]
    g.initializer.remove(pos)
    rng = np.random.default_rng(4)
    g.initializer.extend([
        onnx.numpy_helper.from_array(rng.standard_normal((1, 1, d)).astype(np.float32), "pos_cls"),
        onnx.numpy_helper.from_array(rng.standard_normal((1, d, 4, 4)).astype(np.float32), "pos_grid"),
        onnx.numpy_helper.from_array(np.array([1, d, 7, 7], np.int64), "pos_sizes"),
        onnx.numpy_helper.from_array(np.array([1, d, 49], np.int64), "pos_flat")])
    nodes = [h.make_node("Resize", ["pos_grid", "", "", "pos_sizes"], ["pos_7x7"], mode="cubic"),
             h.make_node("Reshape", ["pos_7x7", "pos_flat"], ["pos_rows"]),
             h.make_node("Transpose", ["pos_rows"], ["pos_patches"], perm=[0, 2, 1]),
             h.make_node("Concat", ["pos_cls", "pos_patches"], ["pos_embed"], axis=1)]
    for i, n in enumerate(nodes):
        g.node.insert(i, n)
    sub = h.make_model(h.make_graph(nodes, "pos", [], [h.make_empty_tensor_value_info("pos_embed")],
                                    [t for t in g.initializer if t.name.startswith("pos_")]),
                       opset_imports=proto.opset_import)
    return onnx.reference.ReferenceEvaluator(sub).run(None, {})[0]


def test_any_op_on_a_constant_path(engine):
    ort = pytest.importorskip("onnxruntime")
    proto = onnx.load(str(shipped("fmnist_vit_legacy13.onnx")))
    want_pos = _resized_position_embedding(proto)
    g = load_onnx(proto)
    # ONNX Runtime's and the reference evaluator's float32 bicubic differ in the last bits
    np.testing.assert_allclose(g.node("cls_pos").params["pos"], want_pos[0], rtol=1e-5, atol=1e-5)
    x = np.random.default_rng(1).random((3, 1, 28, 28), dtype=np.float32)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert float(np.abs(run_float(g, x) - sess.run(None, {"image": x})[0]).max()) <= 1e-4


# --- errors name the cause ------------------------------------------------------------------------
def test_unknown_op_on_the_image_path_is_named_before_evaluation(monkeypatch):
    proto = onnx.load(str(shipped("fmnist_vit_legacy13.onnx")))
    erf = next(n for n in proto.graph.node if n.op_type == "Erf")
    erf.domain, erf.op_type = "com.example", "FastErf"
    proto.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    monkeypatch.setattr(fold, "evaluate", lambda *a: pytest.fail("evaluated an unsupported graph"))
    with pytest.raises(OnnxImportError, match=rf"{erf.name}.*op com\.example\.FastErf on the image path"):
        load_onnx(proto)


def test_padded_patch_conv_imports_as_a_general_conv():
    proto = onnx.load(str(shipped("fmnist_vit_legacy13.onnx")))
    conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    next(a for a in conv.attribute if a.name == "pads").ints[:] = [1, 1, 1, 1]   # still 7x7 patches
    g = load_onnx(proto)
    assert g.nodes[0].op == "Conv" and g.nodes[0].attrs["kernel_shape"] == [4, 4]


def _separate_qkv_model(torch, mm):
    """fmnist-vit (1 block) with Hugging Face's attention: separate query, key, value Linears."""
    class SeparateQKV(torch.nn.Module):
        def __init__(self, dim, heads):
            super().__init__()
            self.heads, self.dh = heads, dim // heads
            self.query, self.key, self.value, self.proj = (torch.nn.Linear(dim, dim) for _ in range(4))

        def forward(self, x):
            b, n, c = x.shape
            q, k, v = (f(x).reshape(b, n, self.heads, self.dh).transpose(1, 2)
                       for f in (self.query, self.key, self.value))
            attn = ((q @ k.transpose(-2, -1)) / self.dh ** 0.5).softmax(dim=-1)
            return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))
    model = mm.build_model("fmnist-vit", depth=1)
    model.blocks[0].attn = SeparateQKV(96, 4)
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("form", ["legacy", "dynamo"])
def test_separate_qkv_imports_as_generic_ops(form, tmp_path, make_models):
    """Separate q/k/v projections are no ViT pattern: they import as generic ops (Reshape,
    Transpose, MatMul, Scale), and the graph computes what ONNX Runtime computes."""
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    if form == "dynamo":
        pytest.importorskip("onnxscript")
    path = tmp_path / f"separate_qkv_{form}.onnx"
    make_models.export_quietly(_separate_qkv_model(torch, make_models), path, (1, 28, 28), form)
    g = load_onnx(path)
    ops = g.ops()
    assert ops.count("MatMul") == 2 and "Scale" in ops and "QKVSplit" not in ops
    assert {"blocks.0.attn.query", "blocks.0.attn.key", "blocks.0.attn.value"} <= {n.name for n in g.nodes}
    x = np.random.default_rng(2).random((3, 1, 28, 28), dtype=np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert float(np.abs(run_float(g, x) - want).max()) <= 1e-4 * float(np.ptp(want))


def test_data_movement_across_samples_names_the_node():
    """A Transpose that moves the batch axis is no per-sample op: the error names the node, the
    expected pattern and what was found."""
    proto = onnx.load(str(shipped("fmnist_vit_legacy13.onnx")))
    g, h = proto.graph, onnx.helper
    sm = next(n for n in g.node if n.op_type == "Softmax")
    for n in g.node:
        n.input[:] = ["swapped_back" if t == sm.output[0] else t for t in n.input]
    i = list(g.node).index(sm)
    g.node.insert(i + 1, h.make_node("Transpose", [sm.output[0]], ["swapped"], name="swap", perm=[1, 0, 2, 3]))
    g.node.insert(i + 2, h.make_node("Transpose", ["swapped"], ["swapped_back"], name="back", perm=[1, 0, 2, 3]))
    with pytest.raises(OnnxImportError, match=r"at Transpose node 'swap': expected a transpose of each "
                                              r"sample's axes \(the batch axis stays first\), but perm "
                                              r"\[1, 0, 2, 3\] moves the batch axis"):
        load_onnx(proto)


# --- structure ------------------------------------------------------------------------------------
def _modules():
    return {".".join(("intsim", "onnx_import") + p.relative_to(PACKAGE).with_suffix("").parts)
            .removesuffix(".__init__"): p for p in sorted(PACKAGE.rglob("*.py"))}


def _internal_imports(name, path, modules):
    """Modules of the package that module `name` imports (at any depth of its code): for
    `from . import x` the module x, for `from .x import y` the module x."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            mod = ".".join(p for p in (base, node.module) if p)
            submodules = {f"{mod}.{a.name}" for a in node.names} & modules
            out |= submodules or {mod}
    return out & modules - {name}


def test_package_structure():
    """Functions of at most 80 lines, imports at module level only and no import cycle between
    the package's modules."""
    mods = _modules()
    for name, path in mods.items():
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert fn.end_lineno - fn.lineno + 1 <= 80, f"{name}.{fn.name} is too long"
                assert not any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(fn)), \
                    f"{name}.{fn.name} imports inside a function"
    graph = {name: _internal_imports(name, path, set(mods)) for name, path in mods.items()}
    state = {}

    def visit(m, stack):
        state[m] = "open"
        for d in graph[m]:
            assert state.get(d) != "open", f"import cycle: {' -> '.join(stack + [m, d])}"
            if d not in state:
                visit(d, stack + [m])
        state[m] = "done"
    for m in graph:
        if m not in state:
            visit(m, [])
