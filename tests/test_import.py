"""ONNX import (intsim.onnx_import), the semantic graph (intsim.graph) and the float interpreter
(intsim.float_ref), checked against ONNX Runtime and against the torch models the files came from."""
import contextlib
import io
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from intsim.errors import DataError
from intsim.float_ref import run_float
from intsim.graph import Graph, GraphError, Node
from intsim.onnx_import import OnnxImportError, load_onnx

ROOT = Path(__file__).resolve().parents[1]
onnx = pytest.importorskip("onnx")

BLOCK_OPS = ["LayerNorm", "Linear", "QKVSplit", "AttnScores", "Softmax", "AttnContext", "Linear", "Add",
             "LayerNorm", "Linear", "GELU", "Linear", "Add"]
BLOCK_NAMES = ["norm1", "attn.qkv", "attn.split", "attn.scores", "attn.softmax", "attn.context",
               "attn.proj", "residual1", "norm2", "mlp.fc1", "mlp.act", "mlp.fc2", "residual2"]
FORMS = ["legacy", "dynamo"]


def expected_ops(depth):
    return ["PatchEmbed", "ClsPos"] + BLOCK_OPS * depth + ["LayerNorm", "ClsSelect", "Linear"]


def images(graph, n, seed=1):
    return np.random.default_rng(seed).standard_normal((n,) + tuple(graph.input_shape)).astype(np.float32)


def ort_logits(path, x):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def check_against_ort(path, graph, n=4, tol=1e-4, float64=True):
    x = images(graph, n)
    want = ort_logits(path, x)
    got = run_float(graph, x)
    assert got.dtype == np.float32 and got.shape == want.shape
    err = float(np.abs(got - want).max())
    assert err <= tol, f"{path.name}: float interpreter vs ONNX Runtime max abs diff {err:.3g}"
    if float64:
        assert float(np.abs(run_float(graph, x, dtype=np.float64) - want).max()) <= tol
    return err


# --- small generated models (fmnist-vit shapes, 2 blocks), both exporter forms ----------------------
@pytest.fixture(scope="module", params=FORMS)
def small(request, onnx_model):
    path = onnx_model("fmnist-vit", request.param, depth=2)
    return request.param, path, load_onnx(path)


def test_small_structure(small):
    form, path, g = small
    assert g.ops() == expected_ops(2)
    assert g.meta["form"] == form and g.meta["opset"] == (13 if form == "legacy" else 18)
    assert g.meta["layernorm"] == ("decomposed" if form == "legacy" else "fused")
    assert g.meta["names"] == "onnx scopes"
    assert [n.name for n in g.nodes[2:15]] == [f"blocks.0.{b}" for b in BLOCK_NAMES]
    assert [n.name for n in g.nodes[-3:]] == ["norm", "cls_select", "head"]
    assert g.input_name == "image" and g.input_shape == (1, 28, 28) and g.output_name == "head"
    shapes = g.tensor_shapes()
    assert shapes["blocks.1.attn.split.q"] == (4, 50, 24)
    assert shapes["blocks.1.attn.scores"] == (4, 50, 50)
    assert shapes["blocks.1.attn.context"] == (50, 96) and shapes["head"] == (10,)
    assert g.node("blocks.1.attn.split").attrs == {"heads": 4}
    assert [n.name for n in g.consumers("blocks.0.residual1")] == ["blocks.0.norm2", "blocks.0.residual2"]
    assert "blocks.1.mlp.act" in g.summary() and str(g) == g.summary()


def test_small_matches_onnxruntime(small):
    form, path, g = small
    check_against_ort(path, g, n=5)


def test_small_params_equal_torch_weights(small, make_models):
    """Every parameter is the torch model's, in torch layout (Linear weight (Out, In))."""
    pytest.importorskip("torch")
    form, path, g = small
    model = make_models.build_model("fmnist-vit", depth=2)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    expect = {("patch_embed", "weight"): "patch_embed.proj.weight",
              ("patch_embed", "bias"): "patch_embed.proj.bias",
              ("norm", "gamma"): "norm.weight", ("norm", "beta"): "norm.bias",
              ("head", "weight"): "head.weight", ("head", "bias"): "head.bias"}
    for b in range(2):
        for ln in ("norm1", "norm2"):
            expect[(f"blocks.{b}.{ln}", "gamma")] = f"blocks.{b}.{ln}.weight"
            expect[(f"blocks.{b}.{ln}", "beta")] = f"blocks.{b}.{ln}.bias"
        for lin in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
            for p in ("weight", "bias"):
                expect[(f"blocks.{b}.{lin}", p)] = f"blocks.{b}.{lin}.{p}"
    for (node, p), key in expect.items():
        np.testing.assert_array_equal(g.node(node).params[p], sd[key], err_msg=f"{node}.{p}")
    np.testing.assert_array_equal(g.node("cls_pos").params["cls"], sd["cls_token"].reshape(-1))
    np.testing.assert_array_equal(g.node("cls_pos").params["pos"], sd["pos_embed"][0])
    for b in range(2):
        assert g.node(f"blocks.{b}.attn.scores").attrs["scale"] == pytest.approx(24 ** -0.5, rel=1e-6)
        assert g.node(f"blocks.{b}.norm1").attrs["eps"] == pytest.approx(1e-6, rel=1e-6)
    assert g.node("patch_embed").attrs == {"patch": 4}


def test_both_forms_give_the_same_graph(onnx_model):
    a, b = (load_onnx(onnx_model("fmnist-vit", f, depth=2)) for f in FORMS)
    assert [(n.op, n.name, n.inputs, n.outputs) for n in a.nodes] == \
           [(n.op, n.name, n.inputs, n.outputs) for n in b.nodes]
    for na, nb in zip(a.nodes, b.nodes):
        assert na.params.keys() == nb.params.keys(), na.name
        for k in na.params:
            np.testing.assert_array_equal(na.params[k], nb.params[k])
        assert na.attrs.keys() == nb.attrs.keys()
        for k in na.attrs:
            assert na.attrs[k] == pytest.approx(nb.attrs[k], rel=1e-7)


@pytest.mark.parametrize("form", FORMS)
def test_canonical_names_without_scopes(form, onnx_model):
    """Without the exporter's module names the importer falls back to timm's names, which for
    these models are the same as the scope-derived ones."""
    path = onnx_model("fmnist-vit", form, depth=2)
    proto = onnx.load(str(path))
    for i, n in enumerate(proto.graph.node):
        n.name = f"n{i}"
        del n.metadata_props[:]
    g, ref = load_onnx(proto), load_onnx(path)
    assert g.meta["names"] == "canonical" and ref.meta["names"] == "onnx scopes"
    assert [n.name for n in g.nodes] == [n.name for n in ref.nodes]
    assert g.meta["roles"]["blocks.1.mlp.fc1"] == "fc1" and g.meta["roles"]["head"] == "head"


def test_observe_sees_every_tensor_once(small):
    form, path, g = small
    x = images(g, 3)
    seen = {}

    def observe(name, arr):
        assert name not in seen
        seen[name] = arr.shape
    out = run_float(g, x, observe=observe)
    shapes = g.tensor_shapes()
    assert list(seen) == g.tensors
    assert all(seen[t] == (3,) + shapes[t] for t in seen)
    assert out.shape == (3, 10)


def test_run_float_batch_independent(small):
    """Each image's logits do not depend on what else is in the batch."""
    form, path, g = small
    x = images(g, 4, seed=5)
    full = run_float(g, x, dtype=np.float64)
    one = np.concatenate([run_float(g, x[i:i + 1], dtype=np.float64) for i in range(4)])
    np.testing.assert_allclose(full, one, rtol=0, atol=1e-12)


# --- exporter variants ----------------------------------------------------------------------------
def _variant_model(torch, mm, seed=3):
    """fmnist-vit (2 blocks) with the other ways exporters and authors write the same ViT:
    block 0 scales q and k by sqrt(scale) each and takes q, k, v by indexing, block 1 scales after
    q @ k^T; GELU written as (x * 0.5) * (1 + erf(x * (1/sqrt 2))); cls token by slice + reshape."""
    vit = mm._vit()

    class SqrtScaleAttention(vit.Attention):
        def forward(self, x):
            b, n, c = x.shape
            qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            s = self.scale ** 0.5
            attn = ((q * s) @ (k * s).transpose(-2, -1)).softmax(dim=-1)
            return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))

    class PostScaleAttention(vit.Attention):
        def forward(self, x):
            b, n, c = x.shape
            qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
            return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))

    class HalfFirstGELU(torch.nn.Module):
        def forward(self, x):
            return (x * 0.5) * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))

    class SliceViT(vit.VisionTransformer):
        def forward(self, x):
            x = self.patch_embed(x)
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
            x = self.norm(self.blocks(x))
            return self.head(x[:, 0:1].reshape(x.shape[0], x.shape[2]))

    ref = mm.build_model("fmnist-vit", depth=2, seed=seed)
    model = SliceViT(**mm.model_config("fmnist-vit", depth=2))
    for i, cls in ((0, SqrtScaleAttention), (1, PostScaleAttention)):
        model.blocks[i].attn = cls(96, 4)
        model.blocks[i].mlp.act = HalfFirstGELU()
    model.load_state_dict(ref.state_dict())
    return model.eval(), vit


@pytest.mark.slow
@pytest.mark.parametrize("form", FORMS)
def test_exporter_variants(form, tmp_path, make_models):
    torch = pytest.importorskip("torch")
    if form == "dynamo":
        pytest.importorskip("onnxscript")
    model, vit = _variant_model(torch, make_models)
    path = tmp_path / f"variant_{form}.onnx"
    if form == "legacy":
        make_models.export_quietly(model, path, (1, 28, 28), form)
    else:   # vit.export_onnx's batch-1 example lets torch.export fix the batch of this variant at 1
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(2, 1, 28, 28),), dynamo=True, opset_version=18,
                              input_names=["image"], output_names=["logits"], external_data=False,
                              dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}}
                              ).save(str(path), external_data=False)
    g = load_onnx(path)
    assert g.ops() == expected_ops(2)
    for b in range(2):
        assert g.node(f"blocks.{b}.attn.scores").attrs["scale"] == pytest.approx(24 ** -0.5, rel=1e-6)
    check_against_ort(path, g)
    with torch.no_grad():
        x = images(g, 2)
        np.testing.assert_allclose(run_float(g, x), model(torch.from_numpy(x)).numpy(), atol=1e-4)


# --- DeiT-Tiny (224x224, 12 blocks) -------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.models
@pytest.mark.parametrize("form", FORMS)
def test_deit_tiny(form, onnx_model):
    path = onnx_model("deit-tiny", form)
    t0 = time.perf_counter()
    g = load_onnx(path)
    seconds = time.perf_counter() - t0
    assert g.ops() == expected_ops(12)
    assert g.input_shape == (3, 224, 224)
    assert g.tensor_shapes()["blocks.11.attn.scores"] == (3, 197, 197)
    err = check_against_ort(path, g, n=2, float64=False)
    print(f"deit-tiny {form}: import {seconds:.2f} s, max |float_ref - ORT| {err:.2e}")


# --- the shipped Fashion-MNIST models, when present ---------------------------------------------------
@pytest.mark.parametrize("name", ["fmnist_vit_legacy13.onnx", "fmnist_vit_dynamo18.onnx"])
def test_shipped_fmnist_models(name):
    path = ROOT / "models" / name
    if not path.is_file():
        pytest.skip(f"{name} not present (made by models/train_fashion_mnist.py)")
    g = load_onnx(path)
    assert g.ops() == expected_ops(4)
    x = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)   # pixels / 255
    want = ort_logits(path, x)
    assert float(np.abs(run_float(g, x) - want).max()) <= 1e-4


# --- import errors ----------------------------------------------------------------------------------
@pytest.fixture
def legacy_proto(request):
    """A legacy-form model to break: the generated 2-block one, or without torch the shipped one."""
    try:
        import torch  # noqa: F401
    except ImportError:
        path = ROOT / "models" / "fmnist_vit_legacy13.onnx"
        if not path.is_file():
            pytest.skip("needs torch or models/fmnist_vit_legacy13.onnx")
    else:
        path = request.getfixturevalue("onnx_model")("fmnist-vit", "legacy", depth=2)
    return onnx.load(str(path))


def depth_of(proto):
    return sum(n.op_type == "Softmax" for n in proto.graph.node)


def test_missing_corrupt_and_non_onnx_files(tmp_path, legacy_proto):
    with pytest.raises(OnnxImportError, match="no such ONNX file"):
        load_onnx(tmp_path / "nothing.onnx")
    good = legacy_proto.SerializeToString()
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(good[: len(good) // 3])
    with pytest.raises(OnnxImportError, match="corrupt.onnx"):
        load_onnx(corrupt)
    for i, junk in enumerate([b"this is not an ONNX model\n" * 20, bytes(range(256)) * 4, b""]):
        p = tmp_path / f"junk{i}.onnx"
        p.write_bytes(junk)
        with pytest.raises(OnnxImportError, match=f"junk{i}.onnx"):
            load_onnx(p)


def test_unsupported_op_names_node_and_op(legacy_proto):
    erf = next(n for n in legacy_proto.graph.node if n.op_type == "Erf")
    erf.op_type = "Elu"
    with pytest.raises(OnnxImportError) as e:
        load_onnx(legacy_proto)
    assert erf.name in str(e.value) and "Elu" in str(e.value) and "Supported ops" in str(e.value)


def _insert_after_softmax(proto, op, extra_inputs=(), **attrs):
    """Insert `op`(softmax output, *extra_inputs) right after the first Softmax, rewiring its readers."""
    g = proto.graph
    i, sm = next((i, n) for i, n in enumerate(g.node) if n.op_type == "Softmax")
    for n in g.node:
        n.input[:] = ["inserted_out" if t == sm.output[0] else t for t in n.input]
    g.node.insert(i + 1, onnx.helper.make_node(op, [sm.output[0], *extra_inputs], ["inserted_out"],
                                               name="inserted", **attrs))


def test_unrecognised_pattern_names_node(legacy_proto):
    """A supported op in a place no pattern explains: probs ** 2 before attn @ v."""
    legacy_proto.graph.initializer.append(onnx.numpy_helper.from_array(np.array(2, np.float32), "two"))
    _insert_after_softmax(legacy_proto, "Pow", ["two"])
    with pytest.raises(OnnxImportError, match=r"'inserted' .*not part of a recognised ViT pattern"):
        load_onnx(legacy_proto)


def test_scalar_mul_in_the_attention_is_a_scale(legacy_proto):
    """probs * 2 before attn @ v: a generic Scale between the Softmax and the AttnContext."""
    legacy_proto.graph.initializer.append(onnx.numpy_helper.from_array(np.array(2, np.float32), "two"))
    _insert_after_softmax(legacy_proto, "Mul", ["two"])
    g = load_onnx(legacy_proto)
    i = g.ops().index("Scale")
    assert g.ops()[i - 1:i + 2] == ["Softmax", "Scale", "AttnContext"] and g.nodes[i].attrs["factor"] == 2.0


@pytest.mark.parametrize("op, attrs", [("Identity", {}), ("Cast", {"to": onnx.TensorProto.FLOAT})])
def test_noop_nodes_are_bypassed(legacy_proto, op, attrs):
    _insert_after_softmax(legacy_proto, op, **attrs)
    assert load_onnx(legacy_proto).ops() == expected_ops(depth_of(legacy_proto))


def test_verification_catches_a_wrong_graph(legacy_proto, monkeypatch):
    from intsim.ops.gelu import Gelu
    monkeypatch.setattr(Gelu, "evaluate", lambda self, node, inputs, dtype: [inputs[0]])
    with pytest.raises(OnnxImportError, match="internal check failed"):
        load_onnx(legacy_proto)
    assert load_onnx(legacy_proto, verify=False).ops() == expected_ops(depth_of(legacy_proto))


def test_non_patch_conv_is_a_general_conv(legacy_proto):
    """A padded patchify Conv is not the patch embedding: a Conv (K1.5), then data movement."""
    conv = next(n for n in legacy_proto.graph.node if n.op_type == "Conv")
    pads = next(a for a in conv.attribute if a.name == "pads")
    pads.ints[:] = [1, 1, 1, 1]
    g = load_onnx(legacy_proto)          # verified against the ONNX graph on a random image
    first = g.nodes[0]
    assert first.op == "Conv" and first.attrs["pads"] == [1, 1, 1, 1] and "PatchEmbed" not in g.ops()


def test_dynamic_non_batch_dim_rejected(legacy_proto):
    legacy_proto.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    with pytest.raises(OnnxImportError, match=r"input 'image' dimension 2 .*height.*only the batch"):
        load_onnx(legacy_proto)


def test_wrong_input_rank_rejected(legacy_proto):
    del legacy_proto.graph.input[0].type.tensor_type.shape.dim[3]
    with pytest.raises(OnnxImportError, match="input 'image' has rank 3"):
        load_onnx(legacy_proto)


def test_fixed_batch_input_accepted(legacy_proto):
    legacy_proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    g = load_onnx(legacy_proto)
    assert g.ops() == expected_ops(depth_of(legacy_proto)) and g.meta["source"] == "<ModelProto>"


# --- float interpreter and graph errors ----------------------------------------------------------------
def test_run_float_rejects_bad_input(legacy_proto):
    g = load_onnx(legacy_proto)
    good = images(g, 2)
    for bad, msg in [(good[:, :, :, :27], "28x28"), (np.zeros((2, 3, 28, 28)), "3 channels"),
                     (good[0], "4 dimensions"), (good[:0], "empty batch"),
                     (np.full((1, 1, 28, 28), "a"), "dtype")]:
        with pytest.raises(DataError, match=msg):
            run_float(g, bad)
    with pytest.raises(DataError, match="float32 or float64"):
        run_float(g, good, dtype=np.float16)


def _tiny_graph():
    w = np.ones((4, 3), np.float32)
    return Graph("x", (3, 8, 8), [
        Node("PatchEmbed", "pe", ["x"], ["pe"], dict(weight=np.ones((3, 3, 4, 4), np.float32),
                                                     bias=np.zeros(3, np.float32)), dict(patch=4)),
        Node("ClsSelect", "sel", ["pe"], ["sel"]),
        Node("Linear", "fc", ["sel"], ["fc"], dict(weight=w)),
    ], "fc")


def test_graph_validate_and_shapes():
    g = _tiny_graph().validate()
    assert g.tensor_shapes() == {"x": (3, 8, 8), "pe": (4, 3), "sel": (3,), "fc": (4,)}
    x = np.ones((2, 3, 8, 8), np.float32)
    np.testing.assert_allclose(run_float(g, x), np.full((2, 4), 3 * 48.0))
    with pytest.raises(KeyError, match="no node named 'nope'"):
        g.node("nope")

    def broken(edit):
        h = _tiny_graph()
        edit(h)
        with pytest.raises(GraphError) as e:
            h.validate()
        return str(e.value)
    assert "used twice" in broken(lambda h: setattr(h.nodes[1], "name", "pe"))
    assert "before it is produced" in broken(lambda h: h.nodes.reverse())
    assert "unknown op" in broken(lambda h: setattr(h.nodes[1], "op", "Swish"))
    assert "do not fit" in broken(lambda h: h.nodes[2].params.update(weight=np.ones((4, 5), np.float32)))
    assert "missing ['patch']" in broken(lambda h: h.nodes[0].attrs.clear())
    assert "NaN" in broken(lambda h: h.nodes[2].params.update(bias=np.full(4, np.nan, np.float32)))
    assert "not produced" in broken(lambda h: setattr(h, "output_name", "zz"))


def test_generator_is_deterministic(make_models):
    pytest.importorskip("torch")
    a = make_models.build_model("fmnist-vit", depth=1, seed=7).state_dict()
    b = make_models.build_model("fmnist-vit", depth=1, seed=7).state_dict()
    c = make_models.build_model("fmnist-vit", depth=1, seed=8).state_dict()
    assert all((a[k] == b[k]).all() for k in a)
    assert not all((a[k] == c[k]).all() for k in a)
    with pytest.raises(ValueError, match="unknown config"):
        make_models.generated_model("resnet50", "legacy")
    with pytest.raises(ValueError, match="unknown form"):
        make_models.generated_model("deit-tiny", "tflite")
