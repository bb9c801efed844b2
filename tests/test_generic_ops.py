"""The generic ops (intsim/ops: Reshape, Transpose, Slice, Gather, Pad, Concat, MatMul, Mul, Scale,
ChannelMul, ConstAdd, ReduceMean) end to end through the registry: shapes, float evaluation,
lowering (which integer ops, which folds), both run paths bit for bit, accuracy against float; the
integer rules of their spec sections (docs/arithmetic.md K1.6, K6.1-K6.6, K7.2-K7.6) on hand
examples; several outputs through compile, save/load and golden dumps."""
import numpy as np
import pytest

from intsim import arith, golden, metrics
from intsim import pipeline as ip
from intsim.arith import IntFormat
from intsim.errors import GraphError
from intsim.execute import Executable, as_outputs, quantize_input
from intsim.float_ref import run_float
from intsim.graph import Graph, Node
from intsim.ops import semantic_op
from intsim.program import Program
from intsim.quantize import QuantConfig

D, H = 8, 2


def generic_net(seed=0):
    """Patches -> layer-scale (not foldable) -> a window-like reshape/pad/slice/transpose round trip
    -> class token concat + position add -> separate q, k, v with a bias on the scores -> layer-scale
    (foldable) -> residual -> mean of the patch tokens and the class token -> head; a second
    output, the patch tokens negated, doubled and multiplied by themselves."""
    r = np.random.default_rng(seed)

    def w(*shape, s=0.4):
        return (r.standard_normal(shape) * s).astype(np.float32)

    def lin(name, x, n_out=D, n_in=D, bias=True):
        p = {"weight": w(n_out, n_in)}
        if bias:
            p["bias"] = w(n_out, s=0.1)
        return Node("Linear", name, [x], [name], p)

    def heads(name, x):
        return [Node("Reshape", f"{name}.r", [x], [f"{name}.r"], {}, {"shape": [17, H, D // H]}),
                Node("Transpose", f"{name}.t", [f"{name}.r"], [f"{name}.t"], {}, {"perm": [1, 0, 2]})]
    nodes = [
        Node("PatchEmbed", "embed", ["image"], ["embed"], {"weight": w(D, 1, 2, 2), "bias": w(D)}, {"patch": 2}),
        Node("ChannelMul", "ls0", ["embed"], ["ls0"], {"gamma": w(D) + 0.5}),
        Node("Reshape", "grid", ["ls0"], ["grid"], {}, {"shape": [4, 4, D]}),
        Node("Pad", "pad", ["grid"], ["pad"], {}, {"pads": [[1, 1], [0, 2], [0, 0]]}),
        Node("Slice", "crop", ["pad"], ["crop"], {}, {"starts": [1, 0, 0], "ends": [5, 4, D], "steps": [1, 1, 1]}),
        Node("Transpose", "swap", ["crop"], ["swap"], {}, {"perm": [1, 0, 2]}),
        Node("Transpose", "back", ["swap"], ["back"], {}, {"perm": [1, 0, 2]}),
        Node("Reshape", "tokens", ["back"], ["tokens"], {}, {"shape": [16, D]}),
        Node("Concat", "cat", ["tokens"], ["cat"], {"c0": w(1, D)}, {"axis": 0, "pieces": ["c0", 0]}),
        Node("ConstAdd", "pos", ["cat"], ["pos"], {"value": w(17, D, s=0.2)}),
        Node("LayerNorm", "norm1", ["pos"], ["norm1"], {"gamma": 1 + w(D, s=0.1), "beta": w(D, s=0.1)},
             {"eps": 1e-6}),
        lin("q", "norm1"), lin("k", "norm1", bias=False), lin("v", "norm1"),
        *heads("q", "q"), *heads("k", "k"), *heads("v", "v"),
        Node("Transpose", "kT", ["k.t"], ["kT"], {}, {"perm": [0, 2, 1]}),
        Node("MatMul", "scores", ["q.t", "kT"], ["scores"]),
        Node("Scale", "scaled", ["scores"], ["scaled"], {}, {"factor": (D // H) ** -0.5}),
        Node("ConstAdd", "bias", ["scaled"], ["bias"], {"value": w(H, 17, 17, s=0.5)}),
        Node("Softmax", "softmax", ["bias"], ["softmax"]),
        Node("MatMul", "context", ["softmax", "v.t"], ["context"]),
        Node("Transpose", "merge", ["context"], ["merge"], {}, {"perm": [1, 0, 2]}),
        Node("Reshape", "merged", ["merge"], ["merged"], {}, {"shape": [17, D]}),
        lin("proj", "merged"),
        Node("ChannelMul", "ls1", ["proj"], ["ls1"], {"gamma": np.r_[w(D - 2) + 0.5, -0.7, 0.0].astype(np.float32)}),
        Node("Add", "residual", ["pos", "ls1"], ["residual"]),
        Node("Slice", "patches", ["residual"], ["patches"], {}, {"starts": [1, 0], "ends": [17, D], "steps": [1, 1]}),
        Node("ReduceMean", "mean", ["patches"], ["mean"], {}, {"axes": [0], "keepdims": 0}),
        Node("Gather", "cls", ["residual"], ["cls"], {}, {"axis": 0, "indices": 0}),
        Node("Scale", "half", ["mean"], ["half"], {}, {"factor": 0.5}),
        Node("Concat", "pooled", ["cls", "half"], ["pooled"], {}, {"axis": 0, "pieces": [0, 1]}),
        lin("head", "pooled", 5, 2 * D),
        Node("Scale", "neg", ["patches"], ["neg"], {}, {"factor": -2.0}),
        Node("Mul", "square", ["neg", "patches"], ["square"]),
    ]
    return Graph("image", (1, 8, 8), nodes, ["head", "square"]).validate()


IMAGES = np.random.default_rng(1).integers(0, 256, (48, 1, 8, 8)).astype(np.uint8)


@pytest.fixture(scope="module")
def compiled():
    g = generic_net()
    p = ip.compile(g, ip.calibrate(g, IMAGES[:32]), QuantConfig())
    return g, p, ip.to_model_input(IMAGES[32:])


def test_shapes_and_float_semantics():
    g = generic_net()
    s = g.tensor_shapes()
    assert (s["pad"], s["crop"], s["cat"], s["scores"], s["mean"], s["cls"], s["pooled"], s["square"]) == \
        ((6, 6, D), (4, 4, D), (17, D), (H, 17, 17), (D,), (D,), (2 * D,), (16, D))
    x = np.random.default_rng(2).random((3, 1, 8, 8)).astype(np.float64)
    t = {}
    head, square = run_float(g, x, observe=t.__setitem__, dtype=np.float64)
    np.testing.assert_array_equal(t["back"], t["crop"])
    np.testing.assert_array_equal(t["crop"], t["grid"])        # pad then crop back: the same values
    np.testing.assert_array_equal(t["cat"][:, 1:], t["tokens"])
    np.testing.assert_allclose(t["scores"], t["q.t"] @ t["kT"])
    np.testing.assert_allclose(t["mean"], t["residual"][:, 1:].mean(axis=1))
    np.testing.assert_array_equal(t["cls"], t["residual"][:, 0])
    np.testing.assert_allclose(square, -2 * t["patches"] ** 2)
    assert head.shape == (3, 5)


def test_lowering_folds_and_integer_ops(compiled):
    g, p, _ = compiled
    kinds = {o.name: o.kind for o in p.ops}
    # layer-scale after a Linear read by it alone folds into that Linear (no op); after the patch
    # embedding it is the channel_mul op; the attention scale folds into the product's scale
    assert kinds["ls0"] == "channel_mul" and "ls1" not in kinds and "scaled" not in kinds
    assert kinds["neg"] == "scale" and p.op("neg").attrs == {"negate": True}
    half = p.op("half")           # after a reduce_mean (no product): a copy at half the scale
    assert half.kind == "scale" and half.attrs == {"negate": False}
    assert p.tensors[half.outputs[0]].scale == p.tensors[half.inputs[0]].scale * 0.5
    # the fold against the same Linear without layer-scale: rows negated or zeroed, scales * |gamma|
    plain = generic_net()
    gamma = plain.node("ls1").params["gamma"].astype(np.float64)
    plain.node("ls1").params["gamma"] = np.ones(D, np.float32)
    p1 = ip.compile(plain, ip.calibrate(plain, IMAGES[:32]), QuantConfig())
    proj, proj1 = p.op("proj"), p1.op("proj")
    sign = np.sign(gamma).astype(np.int64)
    np.testing.assert_array_equal(proj.consts["weight"], proj1.consts["weight"] * sign[:, None])
    np.testing.assert_array_equal(proj.consts["bias"], proj1.consts["bias"] * sign)
    acc, acc1 = p.tensors[proj.outputs[0]], p1.tensors[proj1.outputs[0]]
    assert acc.source == "ls1" and "ls1" not in [o.name for o in p1.ops if o.kind == "channel_mul"]
    np.testing.assert_allclose(acc.scale, np.asarray(acc1.scale) * np.where(gamma == 0, 1, np.abs(gamma)))
    for name in ("grid", "pad", "crop", "swap", "back", "tokens", "cls", "patches"):
        op = p.op(name)
        assert op.spec.startswith("K6") and p.tensors[op.outputs[0]].fmt == p.tensors[op.inputs[0]].fmt
        assert p.tensors[op.outputs[0]].scale == p.tensors[op.inputs[0]].scale
    assert p.tensors[p.op("mean").outputs[0]].fmt == IntFormat(16 + 4)      # 16 values of 16 bits
    assert p.outputs == ["output.0", "output.1"] and p.tensors["output.1"].shape == (16, D)


def test_both_paths_bit_for_bit_and_close_to_float(compiled):
    g, p, x = compiled
    q = quantize_input(p, x)
    for a, b in zip(as_outputs(Executable(p).run(q)), as_outputs(Executable(p, "reference").run(q))):
        np.testing.assert_array_equal(a, b)
    want = as_outputs(run_float(g, x))
    got = as_outputs(Executable(p).infer(x))
    assert metrics.sqnr_db(want[0], got[0]) > 25 and metrics.sqnr_db(want[1], got[1]) > 25


def test_several_outputs_save_load_and_golden(compiled, tmp_path):
    _, p, x = compiled
    p.save(tmp_path / "prog")
    back = Program.load(tmp_path / "prog")
    assert back.outputs == p.outputs and back.fingerprint() == p.fingerprint()
    q = quantize_input(p, x[:2])
    m = golden.dump(p, q, tmp_path / "g", ("npy",))
    assert m["output"] == ["act/output.0", "act/output.1"]
    rebuilt = golden.load_program(tmp_path / "g")
    assert rebuilt.outputs == p.outputs and rebuilt.fingerprint() == p.fingerprint()
    assert golden.load(tmp_path / "g").output.shape == (2, 5)


def test_evaluate_reports_each_output(compiled):
    g, p, _ = compiled
    images = np.random.default_rng(3).integers(0, 256, (6, 1, 8, 8)).astype(np.uint8)
    r = ip.evaluate(g, p, images, labels=np.zeros(6, np.int64), batch=4, progress=False)
    head, square = r["outputs"]
    assert head["kind"] == "class" and head["float_top1"] is not None and "pearson" not in head
    assert square["kind"] == "tensor" and "agreement" not in square and "float_top1" not in square
    assert square["pearson"] > 0.99 and square["max_abs_error"] >= 0 and square["sqnr_db"] > 20
    assert r["agreement"] == head["agreement"] and r["logit_sqnr_db"] == head["sqnr_db"]


# --- the integer rules, by hand --------------------------------------------------------------------
def _one(op_name, node, shapes, program_inputs, out_fmt, consts=None, attrs=None):
    d = semantic_op(op_name)
    from intsim.program import Op, TensorInfo
    tensors = {f"in{i}": TensorInfo(f"in{i}", f, 1.0, s) for i, (f, s) in enumerate(shapes)}
    tensors["out"] = TensorInfo("out", out_fmt, 1.0, d.infer(node, [s for _, s in shapes])[0])
    op = Op(d.kind, "op", list(tensors)[:-1], ["out"], consts or {}, attrs or dict(node.attrs), d.spec)
    prog = Program([op], tensors, "in0", "out")
    return [Executable(prog, path).run(*program_inputs) for path in ("fast", "reference")]


def test_const_add_rule_saturates_once():
    """K7.4: y = sat(x + v); a -inf mask entry is F's minimum."""
    d = semantic_op("ConstAdd")
    fmt = IntFormat(8)
    op_consts = {"value": np.array([100, -128, 5], np.int64)}
    node = Node("ConstAdd", "c", ["x"], ["y"], {"value": np.zeros(3, np.float32)})
    x = np.array([[50, -10, -3]], np.int8)
    for y in _one("ConstAdd", node, [(fmt, (3,))], [x], fmt, op_consts, {}):
        np.testing.assert_array_equal(y, [[127, -128, 2]])
    assert d.spec == "K7.4"


def test_channel_mul_rule_signs_and_zero():
    """K7.3: y = sign * sat_narrow(round_shift(x m, k)); ratio 0.5 -> (2^30, 31), ties up."""
    fmt, out = IntFormat(16), IntFormat(8, narrow=True)
    consts = {"m": np.array([1 << 30] * 3, np.int64), "k": np.array([31] * 3, np.int64),
              "sign": np.array([1, -1, 0], np.int64)}
    node = Node("ChannelMul", "c", ["x"], ["y"], {"gamma": np.ones(3, np.float32)})
    x = np.array([[3, 3, 3], [-3, 1000, 7]], np.int16)
    for y in _one("ChannelMul", node, [(fmt, (3,))], [x], out, consts, {}):
        np.testing.assert_array_equal(y, [[2, -2, 0], [-1, -127, 0]])


def test_reduce_mean_is_an_exact_sum_and_concat_moves_constants():
    node = Node("ReduceMean", "m", ["x"], ["y"], {}, {"axes": [0], "keepdims": 0})
    x = np.array([[[32767, -1], [32767, -32768], [1, 0]]], np.int16)
    for y in _one("ReduceMean", node, [(IntFormat(16), (3, 2))], [x], IntFormat(18)):
        np.testing.assert_array_equal(y, [[65535, -32769]])
    node = Node("Concat", "c", ["a"], ["y"], {"t": np.zeros((1, 2), np.float32)}, {"axis": 0, "pieces": ["t", 0]})
    a = np.array([[[1, 2]], [[3, 4]]], np.int8)
    for y in _one("Concat", node, [(IntFormat(8), (1, 2))], [a], IntFormat(8), {"t": np.array([[-5, 6]], np.int64)}):
        np.testing.assert_array_equal(y, [[[-5, 6], [1, 2]], [[-5, 6], [3, 4]]])


def test_negation_widens_by_one_bit():
    node = Node("Scale", "s", ["x"], ["y"], {}, {"factor": -1.0})
    x = np.array([[-128, 127, 0]], np.int8)
    for y in _one("Scale", node, [(IntFormat(8), (3,))], [x], IntFormat(9), attrs={"negate": True}):
        np.testing.assert_array_equal(y, [[128, -127, 0]])
        assert arith.IntFormat(9).lo <= y.min()


def test_movement_ops_refuse_bad_attributes():
    base = [Node("PatchEmbed", "e", ["image"], ["e"], {"weight": np.ones((2, 1, 2, 2), np.float32),
                                                       "bias": np.zeros(2, np.float32)}, {"patch": 2})]
    bad = [Node("Transpose", "t", ["e"], ["t"], {}, {"perm": [0, 0]}),
           Node("Slice", "s", ["e"], ["s"], {}, {"starts": [2, 0], "ends": [1, 2], "steps": [1, 1]}),
           Node("Gather", "g", ["e"], ["g"], {}, {"axis": 0, "indices": [4]}),
           Node("Reshape", "r", ["e"], ["r"], {}, {"shape": [3, 3]}),
           Node("Pad", "p", ["e"], ["p"], {}, {"pads": [[-1, 0], [0, 0]]}),
           Node("ConstAdd", "c", ["e"], ["c"], {"value": np.ones((3, 2), np.float32)})]
    for n in bad:
        with pytest.raises(GraphError, match=f"node '{n.name}'"):
            Graph("image", (1, 4, 4), base + [n], n.name).validate()
