"""Ops added through the one-file recipe (docs/architecture.md, "Adding an op"): each is checked
end to end through the registry - graph shapes, float evaluation, lowering, both run paths."""
import numpy as np

from intsim import metrics
from intsim import pipeline as ip
from intsim.execute import Executable
from intsim.float_ref import run_float
from intsim.graph import Graph, Node
from intsim.quantize import QuantConfig


def mlp_with_relu(seed=0):
    r = np.random.default_rng(seed)
    nodes = [
        Node("PatchEmbed", "embed", ["image"], ["embed"],
             {"weight": r.standard_normal((8, 1, 2, 2)).astype(np.float32), "bias": np.zeros(8, np.float32)},
             {"patch": 2}),
        Node("Relu", "relu", ["embed"], ["relu"]),
        Node("Linear", "out", ["relu"], ["out"], {"weight": r.standard_normal((3, 8)).astype(np.float32)}),
    ]
    return Graph("image", (1, 4, 4), nodes, "out").validate()


def test_relu_float_integer_and_both_paths():
    g = mlp_with_relu()
    images = np.random.default_rng(1).integers(0, 256, (40, 1, 4, 4)).astype(np.uint8)
    x = ip.to_model_input(images[32:])
    assert g.tensor_shapes()["relu"] == (4, 8)
    hidden = {}
    run_float(g, x, observe=hidden.__setitem__)
    np.testing.assert_array_equal(hidden["relu"], np.maximum(hidden["embed"], 0))
    p = ip.compile(g, ip.calibrate(g, images[:32]), QuantConfig())
    relu = p.op("relu")
    assert relu.spec == "K7.1" and p.tensors["relu"].fmt == p.tensors[relu.inputs[0]].fmt
    seen = {}
    out = Executable(p).infer(x, observe=lambda op, ins, outs: seen.update({op.name: (ins[0], outs[0])}))
    a, y = seen["relu"]
    assert a.min() < 0 and y.dtype == a.dtype
    np.testing.assert_array_equal(y, np.maximum(a, 0))
    np.testing.assert_array_equal(out, Executable(p, "reference").infer(x))
    assert out.shape == (8, 4, 3)
    assert metrics.sqnr_db(run_float(g, x), out) > 25


def mlp_with(op, seed=0, **attrs):
    """PatchEmbed -> op -> Linear -> Sigmoid: a hand-built graph around an elementwise op."""
    r = np.random.default_rng(seed)
    nodes = [
        Node("PatchEmbed", "embed", ["image"], ["embed"],
             {"weight": r.standard_normal((8, 1, 2, 2)).astype(np.float32), "bias": np.zeros(8, np.float32)},
             {"patch": 2}),
        Node(op, "act", ["embed"], ["act"], attrs=attrs),
        Node("Linear", "out", ["act"], ["out"], {"weight": r.standard_normal((3, 8)).astype(np.float32)}),
        Node("Sigmoid", "prob", ["out"], ["prob"]),
    ]
    return Graph("image", (1, 4, 4), nodes, "prob").validate()


def test_quickgelu_and_sigmoid_float_integer_and_both_paths():
    g = mlp_with("QuickGELU", alpha=1.702)
    images = np.random.default_rng(1).integers(0, 256, (40, 1, 4, 4)).astype(np.uint8)
    x = ip.to_model_input(images[32:])
    hidden = {}
    run_float(g, x, observe=hidden.__setitem__)
    e = hidden["embed"].astype(np.float64)
    np.testing.assert_allclose(hidden["act"], e / (1 + np.exp(-1.702 * e)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hidden["prob"], 1 / (1 + np.exp(-hidden["out"].astype(np.float64))),
                               rtol=1e-5, atol=1e-6)
    p = ip.compile(g, ip.calibrate(g, images[:32]), QuantConfig())
    act, prob = p.op("act"), p.op("prob")
    assert (act.kind, act.spec, act.attrs["kernel"]) == ("quickgelu", "K8.2", "bitshift-quickgelu")
    assert (prob.kind, prob.spec, prob.attrs["kernel"]) == ("sigmoid", "K8.1", "bitshift-sigmoid")
    assert p.tensors["prob"].fmt.describe() == "u16[0, 65535]" and p.tensors["prob"].scale == 2.0 ** -16
    out = Executable(p).infer(x)
    np.testing.assert_array_equal(out, Executable(p, "reference").infer(x))
    assert out.shape == (8, 4, 3)
    assert metrics.sqnr_db(run_float(g, x), out) > 30
