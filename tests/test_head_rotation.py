"""The attention heads' contracted axis rotated into the query / key weights at load
(docs/quantization.md Q10, intsim/head_rotation.py), and the patch embedding's GPTQ rounding
(Q11): the float function is kept, the right rows rotate, and nothing else does."""
import numpy as np
import pytest

from conftest import load_script
from intsim import pipeline as ip
from intsim.data import photo_crops
from intsim.execute import as_outputs
from intsim.float_ref import run_float
from intsim.graph import Graph, Node
from intsim.head_rotation import query_key_linears, rotate_heads, rotated_contractions
from intsim.kernels import hadamard
from intsim.ops.patch_embed import patch_gram_name, unfold_patches
from intsim.quantize import QuantConfig, quantize_weight

zoo = load_script("models/zoo.py")


def attention_graph(d=16, heads=2, t=5, extra_reader=False, qkv_fused=False):
    """Tokens (t, d) from a 1 x t x d 'image' reshaped; q, k, v, scores, softmax, context."""
    rng = np.random.default_rng(0)
    lin = (lambda name, src, out: Node("Linear", name, [src], [name],
                                       {"weight": rng.normal(size=(out, d)).astype(np.float32),
                                        "bias": rng.normal(size=out).astype(np.float32)}))
    dh = d // heads
    nodes = [Node("Reshape", "tokens", ["x"], ["tokens"], attrs={"shape": [t, d]})]
    if qkv_fused:
        nodes += [lin("qkv", "tokens", 3 * d),
                  Node("QKVSplit", "split", ["qkv"], ["q", "k", "v"], attrs={"heads": heads}),
                  Node("AttnScores", "scores", ["q", "k"], ["scores"], attrs={"scale": dh ** -0.5}),
                  Node("Softmax", "softmax", ["scores"], ["probs"]),
                  Node("AttnContext", "context", ["probs", "v"], ["out"])]
    else:
        def heads_of(src, perm):
            return [Node("Reshape", f"{src}.split", [src], [f"{src}.split"], attrs={"shape": [t, heads, dh]}),
                    Node("Transpose", f"{src}.t", [f"{src}.split"], [f"{src}.t"], attrs={"perm": perm})]
        nodes += [lin("query", "tokens", d), lin("key", "tokens", d), lin("value", "tokens", d)]
        nodes += heads_of("query", [1, 0, 2]) + heads_of("key", [1, 2, 0]) + heads_of("value", [1, 0, 2])
        nodes += [Node("Scale", "qscale", ["query.t"], ["qs"], attrs={"factor": dh ** -0.5}),
                  Node("MatMul", "scores", ["qs", "key.t"], ["scores"]),
                  Node("Softmax", "softmax", ["scores"], ["probs"]),
                  Node("MatMul", "context", ["probs", "value.t"], ["ctx"]),
                  Node("Transpose", "ctx.t", ["ctx"], ["ctx.t"], attrs={"perm": [1, 0, 2]}),
                  Node("Reshape", "merge", ["ctx.t"], ["merged"], attrs={"shape": [t, d]})]
        out = ["merged"]
        if extra_reader:            # q is also read by something else: it must stay unrotated
            nodes.append(Node("Add", "q_plus", ["query", "merged"], ["q_plus"]))
            out = ["q_plus"]
        return Graph("x", (1, t, d), nodes, out[0]).validate()
    return Graph("x", (1, t, d), nodes, "out").validate()


def outputs_equal(g0, g1, x, rtol=1e-5):
    for a, b in zip(as_outputs(run_float(g0, x, dtype=np.float64)), as_outputs(run_float(g1, x, dtype=np.float64))):
        assert np.abs(a - b).max() <= rtol * np.abs(a).max()


@pytest.mark.parametrize("fused", [False, True])
def test_query_and_key_rows_rotate_per_head_and_the_function_stays(fused):
    d, heads = 16, 2
    g0, g1 = attention_graph(d, heads, qkv_fused=fused), attention_graph(d, heads, qkv_fused=fused)
    rotate_heads(g1, 128)
    x = np.random.default_rng(1).normal(size=(3, 1, 5, d)).astype(np.float32)
    outputs_equal(g0, g1, x)
    expect = ({"qkv": [[0, d, 8], [d, d, 8]]} if fused else {"query": [[0, d, 8]], "key": [[0, d, 8]]})
    assert g1.meta["head_rotation"] == expect
    name = "qkv" if fused else "query"
    w0, w1 = g0.node(name).params["weight"], g1.node(name).params["weight"]
    h = hadamard.sylvester(8) / np.sqrt(8)
    np.testing.assert_allclose(w1[:8], h @ w0[:8], atol=1e-5)        # one head's first block
    if fused:       # v's third is not a contracted operand: untouched
        np.testing.assert_array_equal(w1[2 * d:], w0[2 * d:])
    else:
        np.testing.assert_array_equal(g1.node("value").params["weight"], g0.node("value").params["weight"])


def test_an_operand_with_another_reader_is_not_rotated():
    g = attention_graph(extra_reader=True)
    assert rotated_contractions(g, 128) == {}


def test_query_key_linears_are_the_layers_behind_both_operands_of_q_k():
    """QuantConfig.qk_wbits's layers (Q17): the separate query and key Linears (not value), a
    fused qkv whole, whatever the head size (no Hadamard block needed); the same trace as the
    rotation, so an operand with another reader leaves its product out."""
    assert query_key_linears(attention_graph()) == {"query", "key"}
    assert query_key_linears(attention_graph(qkv_fused=True)) == {"qkv"}
    assert query_key_linears(attention_graph(d=18, heads=2)) == {"query", "key"}      # Dh = 9: no block
    assert rotated_contractions(attention_graph(d=18, heads=2), 128) == {}
    assert query_key_linears(attention_graph(extra_reader=True)) == set()


def test_the_block_divides_the_head_and_respects_the_cap():
    g = attention_graph(d=24, heads=2)         # Dh = 12: blocks of 4
    assert rotated_contractions(g, 128) == {"query": [(0, 24, 4)], "key": [(0, 24, 4)]}
    assert rotated_contractions(g, 2) == {"query": [(0, 24, 2)], "key": [(0, 24, 2)]}
    assert rotated_contractions(g, 0) == {}


@pytest.mark.slow
@pytest.mark.models
@pytest.mark.parametrize("name", ["timm-deit-tiny", "hf-vit-tiny", "hf-clip-tiny", "timm-swin-tiny"])
def test_zoo_models_keep_their_float_function(name):
    pytest.importorskip("onnxruntime")
    if zoo.missing_libraries(name, zoo.forms(name)[0]):
        pytest.skip(f"{name} needs the models extra")
    path = zoo.model_path(name, zoo.forms(name)[0])
    g0, g1 = ip.load(path, head_rotation=0), ip.load(path)
    assert g1.meta["head_rotation"], "every attention of these models has rotatable q and k"
    assert query_key_linears(g1) == set(g1.meta["head_rotation"])      # qk_wbits widens what rotates (Q17)
    assert "head_rotation" not in g0.meta or g0.meta["head_rotation"] == {}
    x = ip.to_model_input(photo_crops(2, g0.input_shape[1], seed=5))
    outputs_equal(g0, g1, x, rtol=1e-4)


def test_patch_embedding_is_gptq_rounded_against_the_calibration_patches():
    graph = ip.load()
    node = next(n for n in graph.nodes if n.op == "PatchEmbed")
    data = ip.open_data("fashion-mnist")
    calib = data.calibration(32)
    obs = ip.calibrate(graph, calib)
    stats = obs[patch_gram_name(node)]
    cols = unfold_patches(ip.to_model_input(calib).astype(np.float64), int(node.attrs["patch"]))
    cols = cols.reshape(-1, cols.shape[-1])
    np.testing.assert_allclose(stats.gram, cols.T @ cols, rtol=1e-6)
    cfg = QuantConfig(wbits=4, weight_round="nearest")      # the patch embedding is GPTQ-rounded anyway
    program = ip.compile(graph, obs, cfg)
    op = next(op for op in program.ops if op.kind == "patch_embed")
    w = node.params["weight"].reshape(node.params["weight"].shape[0], -1)
    gptq, scales = quantize_weight(w, 4, cfg.weight_calib, stats.gram)
    nearest, _ = quantize_weight(w, 4, cfg.weight_calib)
    np.testing.assert_array_equal(op.consts["weight"], gptq)
    # and it is what lowers the output error on the calibration patches
    err = (lambda q: np.linalg.norm(cols @ (w - q * scales[:, None]).T))
    assert err(gptq) < err(nearest)


@pytest.mark.parametrize("bad", [3, -2, 1.5, "64", True, 1 << 20])
def test_a_bad_head_rotation_block_is_a_clear_error(bad):
    from intsim.arith import ArithSpecError
    with pytest.raises(ArithSpecError, match="head_rotation must be 0 \\(off\\) or a power of two"):
        ip.load(head_rotation=bad)
