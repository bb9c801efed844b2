"""The compiler: graph + calibration + QuantConfig -> integer program (docs/quantization.md)."""
from dataclasses import replace

import numpy as np
import pytest

from intsim import metrics
from intsim import pipeline as ip
from intsim.arith import ArithSpecError
from intsim.errors import CompileError
from intsim.execute import Executable
from intsim.float_ref import run_float
from intsim.graph import Graph, Node
from intsim.quantize import QuantConfig

D, HEADS, HIDDEN, CLASSES = 16, 2, 32, 10


def tiny_vit(seed=0):
    """One pre-norm block on 8x8 one-channel images, patch 4: every semantic op once or more."""
    r = np.random.default_rng(seed)

    def w(*shape, s=0.3):
        return (r.standard_normal(shape) * s).astype(np.float32)

    def linear(name, x, n_out, n_in):
        return Node("Linear", name, [x], [name], {"weight": w(n_out, n_in), "bias": w(n_out, s=0.05)})

    def ln(name, x):
        return Node("LayerNorm", name, [x], [name], {"gamma": 1 + w(D, s=0.1), "beta": w(D, s=0.1)},
                    {"eps": 1e-6})
    qkv = ["attn.q", "attn.k", "attn.v"]
    nodes = [
        Node("PatchEmbed", "patch_embed", ["image"], ["patch_embed"], {"weight": w(D, 1, 4, 4), "bias": w(D)},
             {"patch": 4}),
        Node("ClsPos", "cls_pos", ["patch_embed"], ["cls_pos"], {"cls": w(D), "pos": w(5, D, s=0.1)}),
        ln("norm1", "cls_pos"), linear("attn.qkv", "norm1", 3 * D, D),
        Node("QKVSplit", "attn.split", ["attn.qkv"], qkv, {}, {"heads": HEADS}),
        Node("AttnScores", "attn.scores", qkv[:2], ["attn.scores"], {}, {"scale": (D // HEADS) ** -0.5}),
        Node("Softmax", "attn.softmax", ["attn.scores"], ["attn.softmax"]),
        Node("AttnContext", "attn.context", ["attn.softmax", qkv[2]], ["attn.context"]),
        linear("attn.proj", "attn.context", D, D),
        Node("Add", "residual1", ["cls_pos", "attn.proj"], ["residual1"]),
        ln("norm2", "residual1"), linear("mlp.fc1", "norm2", HIDDEN, D),
        Node("GELU", "mlp.act", ["mlp.fc1"], ["mlp.act"]), linear("mlp.fc2", "mlp.act", D, HIDDEN),
        Node("Add", "residual2", ["residual1", "mlp.fc2"], ["residual2"]),
        ln("norm", "residual2"), Node("ClsSelect", "cls", ["norm"], ["cls"]),
        linear("head", "cls", CLASSES, D),
    ]
    return Graph("image", (1, 8, 8), nodes, "head").validate()


@pytest.fixture(scope="module")
def calibrated():
    graph = tiny_vit()
    images = np.random.default_rng(1).integers(0, 256, (96, 1, 8, 8)).astype(np.uint8)
    return graph, ip.calibrate(graph, images[:64]), images[64:]


def test_every_op_lowered_and_requantized_where_formats_differ(calibrated):
    graph, obs, _ = calibrated
    p = ip.compile(graph, obs, QuantConfig())
    kinds = [o.kind for o in p.ops]
    assert kinds.count("linear") == 5 and kinds.count("layernorm") == 3 and "patch_embed" in kinds
    for o in p.ops:
        assert o.spec, o.name
        if o.kind in ("gelu", "softmax"):          # int32 accumulators are requantized first
            src = p.op(o.inputs[0])
            assert src.kind == "requant" and src.name == f"{o.name}.in"
    assert p.output_name == "logits" and p.ops[-1].kind == "requant"
    assert {t.source for t in p.tensors.values()} >= {n.outputs[0] for n in graph.nodes}


def test_integer_program_tracks_float(calibrated):
    graph, obs, test = calibrated
    p = ip.compile(graph, obs, QuantConfig())
    x = ip.to_model_input(test)
    db = metrics.sqnr_db(run_float(graph, x), Executable(p).infer(x))
    assert db > 25, db
    w4 = ip.compile(graph, obs, QuantConfig(wbits=4, weight_round="nearest"))
    assert metrics.sqnr_db(run_float(graph, x), Executable(w4).infer(x)) < db


def test_overrides_choose_the_candidate(calibrated):
    graph, obs, _ = calibrated
    p = ip.compile(graph, obs, QuantConfig(overrides={"mlp.act": "ibert-gelu", "norm": "ivit-layernorm"}))
    assert p.op("mlp.act").attrs["kernel"] == "ibert-gelu" and p.op("mlp.act").spec == "K3.2"
    assert p.op("norm").attrs["kernel"] == "ivit-layernorm"
    assert p.op("norm1").attrs["kernel"] == "isqrt-layernorm"
    with pytest.raises(CompileError, match="'blocks.0.mlp.act': not a Softmax, GELU or LayerNorm"):
        ip.compile(graph, obs, QuantConfig(overrides={"blocks.0.mlp.act": "ibert-gelu"}))
    with pytest.raises(CompileError, match="unknown candidate 'ibert-softmax'"):
        ip.compile(graph, obs, QuantConfig(overrides={"mlp.act": "ibert-softmax"}))


def test_equalization_moves_channel_factors_into_the_weights(calibrated):
    graph, obs, _ = calibrated
    off = ip.compile(graph, obs, QuantConfig(equalize=0))
    on = ip.compile(graph, obs, QuantConfig(equalize=0.5))
    assert isinstance(off.tensors["norm1"].scale, float)
    assert isinstance(on.tensors["norm1"].scale, list) and len(on.tensors["norm1"].scale) == D
    # the Linear input is requantized with one multiplier (the factors cancel in the ratio)
    assert np.ndim(on.op("attn.qkv.in").consts["m"]) == 0
    assert not np.array_equal(on.op("attn.qkv").consts["weight"], off.op("attn.qkv").consts["weight"])


def test_missing_statistics_name_the_tensor(calibrated):
    graph, obs, _ = calibrated
    partial = {k: v for k, v in obs.items() if k != "mlp.act"}
    with pytest.raises(CompileError, match="no calibration statistics for tensor 'mlp.act'"):
        ip.compile(graph, partial, QuantConfig())


def test_compile_is_deterministic_and_integer_only(calibrated):
    graph, obs, _ = calibrated
    a, b = ip.compile(graph, obs, QuantConfig()), ip.compile(graph, obs, QuantConfig())
    assert a.fingerprint() == b.fingerprint()
    for o in a.ops:
        for name, v in o.consts.items():
            assert isinstance(v, int) or v.dtype.kind in "iu", (o.name, name)


def test_wide_operands_widen_the_matching_inputs_only(calibrated):
    graph, obs, test = calibrated
    base = ip.compile(graph, obs, QuantConfig())
    wide = ip.compile(graph, obs, QuantConfig(wide={r"fc2\.in$": 12, r"^attn\.proj": 10, r"act\.in$": 12}))
    assert base.tensors["mlp.fc2.in"].fmt.bits == 8 and wide.tensors["mlp.fc2.in"].fmt.bits == 12
    assert wide.tensors["attn.proj.in"].fmt.bits == 10 and wide.tensors["mlp.fc1.in"].fmt.bits == 8
    assert wide.tensors["mlp.act.in"].fmt.bits == 12          # GELU's input too
    x = ip.to_model_input(test)
    f = run_float(graph, x)
    assert metrics.sqnr_db(f, Executable(wide).infer(x)) > metrics.sqnr_db(f, Executable(base).infer(x))
    assert Executable(wide, path="reference").infer(x).tolist() == Executable(wide).infer(x).tolist()


def test_smoothing_moves_factors_into_a_requantized_linear_input(calibrated):
    graph, obs, test = calibrated
    off, on = (ip.compile(graph, obs, QuantConfig(smooth=s)) for s in (0.0, 0.5))
    # fc2 reads the GELU output through a requantization anyway: it becomes per channel
    assert np.ndim(off.op("mlp.fc2.in").consts["m"]) == 0 and np.ndim(on.op("mlp.fc2.in").consts["m"]) == 1
    assert not np.array_equal(on.op("mlp.fc2").consts["weight"], off.op("mlp.fc2").consts["weight"])
    x = ip.to_model_input(test)
    assert metrics.sqnr_db(run_float(graph, x), Executable(on).infer(x)) > 20
    assert Executable(on, path="reference").infer(x).tolist() == Executable(on).infer(x).tolist()


def test_gptq_rounding_lowers_the_output_error_at_4_bits(calibrated):
    graph, _, test = calibrated
    images = np.random.default_rng(1).integers(0, 256, (64, 1, 8, 8)).astype(np.uint8)
    obs = ip.calibrate(graph, images, gram=True)
    x = ip.to_model_input(test)
    f = run_float(graph, x)
    near, gptq = (ip.compile(graph, obs, QuantConfig(wbits=4, weight_round=r)) for r in ("nearest", "gptq"))
    assert metrics.sqnr_db(f, Executable(gptq).infer(x)) > metrics.sqnr_db(f, Executable(near).infer(x))
    w = gptq.op("mlp.fc2").consts["weight"]
    assert np.abs(w).max() <= 7 and not np.array_equal(w, near.op("mlp.fc2").consts["weight"])
    with pytest.raises(CompileError, match="gram=True"):
        ip.compile(graph, ip.calibrate(graph, images, gram=False), QuantConfig(weight_round="gptq"))


def test_weight_round_auto_is_gptq_damped_by_width_and_falls_back_to_nearest_with_a_warning(calibrated):
    """QuantConfig's default `auto` (docs/quantization.md Q7, Q16): GPTQ at every width when the
    calibration holds X^T X (the default calibration does), damped by 0.3 x mean diag at 8 bits and
    0.01 below unless gptq_damp says; without X^T X an IntsimWarning and the nearest program."""
    from intsim.errors import IntsimWarning
    graph, obs, _ = calibrated
    assert QuantConfig().weight_round == "auto"
    assert [QuantConfig(wbits=w, weight_round=r).gptq for w, r in
            ((8, "auto"), (4, "auto"), (8, "gptq"), (4, "nearest"), (8, "nearest"))] == [True, True, True, False, False]
    assert [QuantConfig(wbits=w, gptq_damp=d).damping for w, d in ((8, 0), (6, 0), (4, 0), (4, 0.3))] == [0.3, 0.01, 0.01, 0.3]
    assert QuantConfig(layer_wbits={"fc2": 4}).for_layer("mlp.fc2").damping == 0.01
    weights = (lambda p: p.op("mlp.fc2").consts["weight"].tolist())
    for w in (8, 4):
        auto, gptq, near = (ip.compile(graph, obs, QuantConfig(wbits=w, weight_round=r))
                            for r in ("auto", "gptq", "nearest"))
        assert weights(auto) == weights(gptq) != weights(near)
    # the damping reaches the rounding: the 4-bit damping at 8 bits gives other fc2 weights
    w8, w8_light = (ip.compile(graph, obs, QuantConfig(gptq_damp=d)) for d in (0, 0.01))
    assert weights(w8) != weights(w8_light)
    plain = ip.calibrate(graph, np.random.default_rng(1).integers(0, 256, (64, 1, 8, 8)).astype(np.uint8), gram=False)
    for w in (8, 4):
        with pytest.warns(IntsimWarning, match="X\\^T X"):
            fallback = ip.compile(graph, plain, QuantConfig(wbits=w))
        assert weights(fallback) == weights(ip.compile(graph, plain, QuantConfig(wbits=w, weight_round="nearest")))
    for bad in (-0.1, 101, True):
        with pytest.raises(ArithSpecError, match="gptq_damp"):
            QuantConfig(gptq_damp=bad)


def test_layer_wbits_sets_the_weight_width_of_the_matching_layers_only(calibrated):
    """layer_wbits (docs/quantization.md Q14): the first pattern a layer's name matches gives its
    weights' width, the others keep wbits; `auto` rounds each layer by its own width (GPTQ damped
    as at that width: the qkv weights are those of a uniform W8 program); the widths are in the ops'
    weight formats, the cost and save/load; both paths agree."""
    from intsim.experiment.cost import program_cost
    from intsim.program import Program
    import tempfile
    graph, _, test = calibrated
    images = np.random.default_rng(1).integers(0, 256, (64, 1, 8, 8)).astype(np.uint8)
    obs = ip.calibrate(graph, images, gram=True)
    cfg = QuantConfig(wbits=4, layer_wbits={r"attn\.qkv$": 8, r"attn\.": 6, r"^head$": 5})
    assert [cfg.weight_bits(n) for n in ("attn.qkv", "attn.proj", "mlp.fc1", "head")] == [8, 6, 4, 5]
    assert [cfg.for_layer(n).damping for n in ("attn.qkv", "mlp.fc1")] == [0.3, 0.01]
    mixed = ip.compile(graph, obs, cfg)
    bits = {op.name: op.attrs["weight_fmt"]["bits"] for op in mixed.ops if "weight_fmt" in op.attrs}
    assert bits == {"patch_embed": 4, "attn.qkv": 8, "attn.proj": 6, "mlp.fc1": 4, "mlp.fc2": 4, "head": 5}
    for name, b in bits.items():
        assert np.abs(mixed.op(name).consts["weight"]).max() == (1 << (b - 1)) - 1, name
    w8, w4 = (ip.compile(graph, obs, QuantConfig(wbits=w)) for w in (8, 4))
    assert mixed.op("attn.qkv").consts["weight"].tolist() == w8.op("attn.qkv").consts["weight"].tolist()
    assert mixed.op("mlp.fc2").consts["weight"].tolist() == w4.op("mlp.fc2").consts["weight"].tolist()
    assert (cost := lambda p: program_cost(p)["matmul_mbops"])(w4) < cost(mixed) < cost(w8)
    x = ip.to_model_input(test)
    assert Executable(mixed, path="reference").infer(x).tolist() == Executable(mixed).infer(x).tolist()
    with tempfile.TemporaryDirectory() as d:
        mixed.save(f"{d}/p")
        again = Program.load(f"{d}/p")
        assert again.meta["config"]["layer_wbits"] == cfg.layer_wbits
        assert Executable(again).infer(x).tolist() == Executable(mixed).infer(x).tolist()
    with pytest.raises(CompileError, match=r"layer_wbits pattern 'attn.*qvk' matches no layer.*attn\.qkv"):
        ip.compile(graph, obs, QuantConfig(wbits=4, layer_wbits={r"attn\.qvk": 8}))
    for bad, match in (({"fc(": 8}, "layer_wbits pattern"), ({"fc": 9}, r"\[2, 8\]"), ([("fc", 8)], "dict")):
        with pytest.raises(ArithSpecError, match=match):
            QuantConfig(layer_wbits=bad)


def test_qk_wbits_widens_the_layers_that_make_queries_and_keys(calibrated):
    """qk_wbits (docs/quantization.md Q17): the Linear layers found in the graph to make both
    operands of q @ k^T (here the fused attn.qkv) take that width, rounded exactly as a uniform
    program at that width rounds them; layer_wbits still wins where it matches; a model without
    such a product is a compile error, a width outside [2, 8] a configuration error."""
    from intsim.graph import Graph, Node
    graph, _, test = calibrated
    images = np.random.default_rng(1).integers(0, 256, (64, 1, 8, 8)).astype(np.uint8)
    obs = ip.calibrate(graph, images, gram=True)
    bits = (lambda p: {op.name: op.attrs["weight_fmt"]["bits"] for op in p.ops if "weight_fmt" in op.attrs})
    wide = ip.compile(graph, obs, QuantConfig(wbits=4, qk_wbits=8))
    assert bits(wide) == {"patch_embed": 4, "attn.qkv": 8, "attn.proj": 4, "mlp.fc1": 4, "mlp.fc2": 4, "head": 4}
    w8, w4 = (ip.compile(graph, obs, QuantConfig(wbits=w)) for w in (8, 4))
    assert wide.op("attn.qkv").consts["weight"].tolist() == w8.op("attn.qkv").consts["weight"].tolist()
    assert wide.op("mlp.fc1").consts["weight"].tolist() == w4.op("mlp.fc1").consts["weight"].tolist()
    assert wide.meta["config"]["qk_wbits"] == 8
    both = ip.compile(graph, obs, QuantConfig(wbits=4, qk_wbits=8, layer_wbits={"qkv": 6, "fc1": 5}))
    assert bits(both) == {**bits(wide), "attn.qkv": 6, "mlp.fc1": 5}
    x = ip.to_model_input(test)
    assert Executable(wide, path="reference").infer(x).tolist() == Executable(wide).infer(x).tolist()
    rng = np.random.default_rng(0)
    mlp = Graph("x", (1, 3, 4), [Node("Linear", "fc", ["x"], ["y"], {"weight": rng.normal(size=(2, 4)).astype(np.float32)})],
                "y").validate()
    mlp_obs = ip.calibrate(mlp, rng.integers(0, 256, (8, 1, 3, 4)).astype(np.uint8))
    assert bits(ip.compile(mlp, mlp_obs, QuantConfig(wbits=4))) == {"fc": 4}
    with pytest.raises(CompileError, match="qk_wbits 8: this model has no Linear layer that makes both operands"):
        ip.compile(mlp, mlp_obs, QuantConfig(wbits=4, qk_wbits=8))
    for bad in (9, 1, True, "8"):
        with pytest.raises(ArithSpecError, match=r"qk_wbits \(0: as wbits\) must be an integer in \[2, 8\]"):
            QuantConfig(qk_wbits=bad)


def test_bias_correction_subtracts_the_weights_mean_output_error(calibrated):
    """bias_correction (docs/quantization.md Q15): each Linear's bias is b - E[z] (W_q - W)^T, z its
    operand as the weight sees it (fc2's: the GELU output, neither rotated nor equalized here), E[z]
    the exact calibration mean (Observer.chan_mean, divided by equalization factors where they
    apply); only the biases change; both paths agree."""
    from intsim.quantize import Observer, quantize_bias
    graph, obs, test = calibrated
    x = np.random.default_rng(3).standard_normal((2, 7, 5)).astype(np.float32)
    o = Observer("x")
    o.update(x[:1]), o.update(x[1:])
    np.testing.assert_allclose(o.chan_mean, x.reshape(-1, 5).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(o.divided(np.arange(1, 6)).chan_mean, o.chan_mean / np.arange(1, 6))
    o.update(x[0, :, :3])               # the channels changed: the mean restarts on the new rows
    np.testing.assert_allclose(o.chan_mean, x[0, :, :3].mean(axis=0), rtol=1e-6)
    cfg = QuantConfig(wbits=4, weight_round="nearest", rotate=0)
    plain, corrected = (ip.compile(graph, obs, replace(cfg, bias_correction=c)) for c in (False, True))
    fc2, fc2_plain = corrected.op("mlp.fc2"), plain.op("mlp.fc2")
    assert fc2.consts["weight"].tolist() == fc2_plain.consts["weight"].tolist()
    assert fc2.consts["bias"].tolist() != fc2_plain.consts["bias"].tolist()
    node = graph.node("mlp.fc2")
    w_real = fc2.consts["weight"] * np.asarray(fc2.attrs["weight_scale"])[:, None]
    want = node.params["bias"] - obs["mlp.act"].chan_mean @ (w_real - node.params["weight"].astype(np.float64)).T
    acc_scale = np.asarray(corrected.tensors["mlp.fc2.acc"].scale)
    assert fc2.consts["bias"].tolist() == quantize_bias(want, acc_scale).tolist()
    t = ip.to_model_input(test)
    assert Executable(corrected, path="reference").infer(t).tolist() == Executable(corrected).infer(t).tolist()
    with pytest.raises(ArithSpecError, match="bias_correction"):
        QuantConfig(bias_correction="yes")


def test_gptq_round_is_the_column_by_column_algorithm():
    """The numba block loop against a plain transcription of GPTQ (one column at a time, every later
    column updated at once), with a dead input channel and a width that is not a multiple of the
    block."""
    from intsim.quantize import gptq_round, weight_format
    rng = np.random.default_rng(3)
    w = rng.normal(size=(6, 11))
    x = rng.normal(size=(40, 11)) * rng.gamma(1.0, size=11)
    x[:, 4] = 0.0
    h, s, fmt = x.T @ x, np.abs(w).max(axis=1) / 7, weight_format(4)
    order = np.argsort(-np.diag(h), kind="stable")
    wp, hp = w[:, order].copy(), h[np.ix_(order, order)].copy()
    dead = np.diag(hp) == 0
    hp[dead, dead], wp[:, dead] = 1.0, 0.0
    hp[np.diag_indices_from(hp)] += 0.01 * np.mean(np.diag(hp))
    u = np.linalg.cholesky(np.linalg.inv(hp)).T
    q = np.zeros_like(wp)
    for i in range(wp.shape[1]):
        q[:, i] = np.clip(np.rint(wp[:, i] / s), -7, 7)
        wp[:, i + 1:] -= np.outer((wp[:, i] - q[:, i] * s) / u[i, i], u[i, i + 1:])
    want = np.empty_like(q)
    want[:, order] = q
    for block in (4, 128):
        np.testing.assert_array_equal(gptq_round(w, s, h, fmt, block=block), want)
        np.testing.assert_array_equal(gptq_round(w, np.repeat(s[:, None], 11, axis=1), h, fmt, block=block), want)
    assert not want[:, 4].any()
    # per-weight scales (grouped weights, Q13): each column rounded at its own scale
    s2 = s[:, None] * rng.uniform(0.5, 1.0, size=(6, 11))
    wp, sp = w[:, order].copy(), s2[:, order]
    wp[:, dead] = 0.0
    for i in range(wp.shape[1]):
        q[:, i] = np.clip(np.rint(wp[:, i] / sp[:, i]), -7, 7)
        wp[:, i + 1:] -= np.outer((wp[:, i] - q[:, i] * sp[:, i]) / u[i, i], u[i, i + 1:])
    want[:, order] = q
    np.testing.assert_array_equal(gptq_round(w, s2, h, fmt, block=4), want)


def test_grouped_weights_are_q_times_group_scale_in_the_product(calibrated):
    """weight_group (K1.9, docs/quantization.md Q13): every Linear and the patch embedding hold
    wbits integers and per-group unsigned multipliers; the accumulator is sum_g m_g sum_(t in g) x_t q_t
    exactly (checked against that sum on the op's own input), both paths agree, the program survives
    save/load, and at 4 bits the output is closer to float than with one scale per row."""
    from intsim.program import Program
    graph, _, test = calibrated
    images = np.random.default_rng(1).integers(0, 256, (64, 1, 8, 8)).astype(np.uint8)
    obs = ip.calibrate(graph, images, gram=True)
    x = ip.to_model_input(test)
    f = run_float(graph, x)
    flat = ip.compile(graph, obs, QuantConfig(wbits=4))
    grouped = ip.compile(graph, obs, QuantConfig(wbits=4, weight_group=4, group_scale_bits=6))
    assert metrics.sqnr_db(f, Executable(grouped).infer(x)) > metrics.sqnr_db(f, Executable(flat).infer(x))
    fc2 = grouped.op("mlp.fc2")
    q, m = fc2.consts["weight"], fc2.consts["group_scale"]
    assert q.shape == (D, HIDDEN) and m.shape == (D, HIDDEN // 4) and np.abs(q).max() <= 7
    assert m.min() >= 1 and m.max() == 63 and fc2.attrs["weight_group"] == 4
    assert "group_scale" in grouped.op("patch_embed").consts
    seen = {}

    def observe(op, ins, outs):
        if op.name == "mlp.fc2":
            seen["x"], seen["acc"] = ins[0], outs[0]
    Executable(grouped, path="reference").infer(x, observe=observe)
    xs = np.asarray(seen["x"], np.int64).reshape(-1, HIDDEN)
    want = sum(m[:, g] * (xs[:, 4 * g:4 * g + 4] @ q[:, 4 * g:4 * g + 4].T.astype(np.int64))
               for g in range(HIDDEN // 4)) + fc2.consts["bias"]
    np.testing.assert_array_equal(np.asarray(seen["acc"]).reshape(want.shape), want)
    assert Executable(grouped, path="reference").infer(x).tolist() == Executable(grouped).infer(x).tolist()
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        grouped.save(f"{d}/p")
        again = Program.load(f"{d}/p")
    assert Executable(again).infer(x).tolist() == Executable(grouped).infer(x).tolist()
    with pytest.raises(ArithSpecError, match="weight_group"):
        QuantConfig(weight_group=-1)
    with pytest.raises(ArithSpecError, match="group_scale_bits"):
        QuantConfig(group_scale_bits=9)


def test_a_grouped_weight_outside_its_registers_is_refused(calibrated):
    """A group multiplier beyond its format, or a group size that is not one, names the op."""
    from intsim.errors import ProgramError
    graph, obs, _ = calibrated
    program = ip.compile(graph, obs, QuantConfig(wbits=4, weight_group=8, group_scale_bits=4,
                                                 weight_round="nearest"))
    fc1 = program.op("mlp.fc1")
    fc1.consts["group_scale"] = fc1.consts["group_scale"] + 16
    with pytest.raises(ProgramError, match="mlp.fc1.*group_scale.*outside u4"):
        Executable(program)
    fc1.consts["group_scale"] = fc1.consts["group_scale"] - 16
    fc1.attrs["weight_group"] = 0
    with pytest.raises(ProgramError, match="mlp.fc1.*weight_group"):
        Executable(program)


def test_local_sqnr_isolates_each_ops_own_error(calibrated):
    from intsim import analysis
    graph, obs, test = calibrated
    p = ip.compile(graph, obs, QuantConfig(wbits=4, weight_round="nearest"))
    acc, loc = analysis.tensor_sqnr(graph, p, test), analysis.local_sqnr(graph, p, test)
    assert set(loc) <= set(acc) and "logits" in loc
    # the head on exact inputs adds less error than the whole program carries into the logits
    assert loc["logits"] > acc["logits"] + 3, (loc["logits"], acc["logits"])
    # the first op reads the exact input either way: nothing inherited to remove
    first = p.ops[0].outputs[0]
    assert loc[first] == pytest.approx(acc[first])


def test_gelu_reads_gelu_bits_unless_a_wide_pattern_says_otherwise(calibrated):
    """Q9: GELU's input is requantized to gelu_bits (default 16: no product reads it); abits stays
    the width of the product operands; a --wide pattern on the GELU's input label decides first."""
    graph, obs, test = calibrated

    def gelu_input_bits(**cfg):
        p = ip.compile(graph, obs, QuantConfig(**cfg))
        gelu = next(op for op in p.ops if op.kind == "gelu")
        return p.tensors[gelu.inputs[0]].fmt.bits, p.tensors[p.op("mlp.fc1").inputs[0]].fmt.bits
    assert QuantConfig().gelu_bits == 16
    assert gelu_input_bits() == (16, 8)
    assert gelu_input_bits(gelu_bits=8) == (8, 8)
    assert gelu_input_bits(gelu_bits=12, abits=6) == (12, 6)
    assert gelu_input_bits(wide={r"mlp\.act\.in$": 10}) == (10, 8)
    with pytest.raises(ArithSpecError, match="gelu_bits"):
        QuantConfig(gelu_bits=17)


def test_gptq_damp_option_reaches_the_configuration():
    """--gptq-damp (docs/quantization.md Q16) sets QuantConfig.gptq_damp; its default leaves the
    damping to the weights' width."""
    import argparse
    from intsim.cli.args import add_quant_args, config_from_args
    p = argparse.ArgumentParser()
    add_quant_args(p)
    assert config_from_args(p.parse_args([])).damping == 0.3
    assert config_from_args(p.parse_args(["--wbits", "4"])).damping == 0.01
    assert config_from_args(p.parse_args(["--gptq-damp", "0.05"])).damping == 0.05
