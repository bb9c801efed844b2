"""Convolution, transposed convolution, Resize and GlobalAveragePool (spec K1.7, K1.8, K9, K7.8):
the float ops equal ONNX Runtime's on random geometries, the integer kernels are exact (fast =
reference = the float64 product of the integers), Resize's bilinear error stays within its bound,
per-channel scales along the channel axis survive requantization, golden dumps and program files."""
from fractions import Fraction
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from intsim import metrics, pipeline as ip
from intsim.arith import ArithSpecError, IntFormat, IntOverflowError
from intsim.execute import Executable
from intsim.float_ref import run_float
from intsim.graph import Graph, GraphError, Node
from intsim.kernels.conv import (CONV2D, CONV_TRANSPOSE2D, ConvGeometry, conv2d_float,
                                 conv_transpose2d_float)
from intsim.kernels.resize import COORDINATE_MODES, NEAREST_MODES, RESIZE, resize_float, resize_tables
from intsim.program import Program
from intsim.quantize import QuantConfig

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

FAST = settings(max_examples=60, deadline=None)
S8, W8 = IntFormat(8), IntFormat(8, narrow=True)


def run_ort(op, x, consts, attrs, opset=17):
    """One ONNX node on x with constant inputs (name -> array or None for an empty input)."""
    names = ["x"] + [k if v is not None else "" for k, v in consts.items()]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items() if v is not None]
    graph = helper.make_graph([helper.make_node(op, names, ["y"], **attrs)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_empty_tensor_value_info("y")], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]


@st.composite
def geometries(draw, transpose=False):
    g = draw(st.sampled_from([1, 1, 2, 3]))
    c, cout = g * draw(st.integers(1, 3)), g * draw(st.integers(1, 3))
    k = tuple(draw(st.integers(1, 4)) for _ in range(2))
    s = tuple(draw(st.integers(1, 3)) for _ in range(2))
    d = tuple(draw(st.integers(1, 2)) for _ in range(2))
    p = tuple(draw(st.integers(0, 2)) for _ in range(4))
    op = tuple(draw(st.integers(0, si - 1)) for si in s) if transpose else (0, 0)
    geo = ConvGeometry(k, s, p, d, g, op)
    hw = tuple(draw(st.integers(max(1, (ki - 1) * di + 1 - pi - qi), 9))
               for ki, di, pi, qi in zip(k, d, p[:2], p[2:]))
    out = geo.transpose_out_size(hw) if transpose else geo.out_size(hw)
    if min(out) < 1:
        hw = tuple(n + 6 for n in hw)
    return geo, c, cout, hw


def ort_attrs(geo, transpose):
    a = dict(kernel_shape=geo.kernel, strides=geo.strides, pads=geo.pads, dilations=geo.dilations,
             group=geo.group)
    return a | (dict(output_padding=geo.output_padding) if transpose else {})


@pytest.mark.parametrize("transpose", [False, True])
@given(data=st.data())
@FAST
def test_float_convolutions_equal_onnxruntime(transpose, data):
    geo, c, cout, hw = data.draw(geometries(transpose))
    out = geo.transpose_out_size(hw) if transpose else geo.out_size(hw)
    if min(out) < 1:
        return
    r = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    x = r.standard_normal((2, c) + hw).astype(np.float32)
    w = r.standard_normal(((c, cout // geo.group) if transpose else (cout, c // geo.group)) + geo.kernel)
    b = r.standard_normal(cout).astype(np.float32) if data.draw(st.booleans()) else None
    w = w.astype(np.float32)
    op, fn = ("ConvTranspose", conv_transpose2d_float) if transpose else ("Conv", conv2d_float)
    want = run_ort(op, x, {"w": w, "b": b}, ort_attrs(geo, transpose))
    got = fn(x, w, b, geo)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("transpose", [False, True])
@given(data=st.data())
@FAST
def test_integer_convolutions_are_exact_on_both_paths(transpose, data):
    geo, c, cout, hw = data.draw(geometries(transpose))
    out = geo.transpose_out_size(hw) if transpose else geo.out_size(hw)
    if min(out) < 1:
        return
    r = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    unsigned = data.draw(st.booleans())
    x_fmt = IntFormat(8, signed=not unsigned)
    x = r.integers(x_fmt.lo, x_fmt.hi + 1, (2, c) + hw).astype(x_fmt.storage)
    w = r.integers(-127, 128, ((c, cout // geo.group) if transpose else (cout, c // geo.group)) + geo.kernel)
    b = r.integers(-5000, 5000, cout) if data.draw(st.booleans()) else None
    kernel, fn = (CONV_TRANSPOSE2D, conv_transpose2d_float) if transpose else (CONV2D, conv2d_float)
    plan = kernel.plan((1.0, 1.0), (x_fmt, W8), geo, bias=b)
    ref = kernel.reference([x, w.astype(np.int8)], plan)
    fast = kernel.fast([x, kernel.prepare(w, W8, geo.group)], plan)
    exact = fn(x.astype(np.float64), w.astype(np.float64), None if b is None else b.astype(np.float64), geo)
    assert ref.dtype == fast.dtype == np.int32
    np.testing.assert_array_equal(ref, fast)
    np.testing.assert_array_equal(ref, exact)
    assert not kernel.error_bound(plan, [x, w]).any() and kernel.error_bound(plan, [x, w]).shape == ref.shape


def test_accumulator_overflow_is_an_error_not_a_wrap():
    geo = ConvGeometry((4, 4), (2, 2), (1, 1, 1, 1))
    x = np.full((1, 1, 3, 3), 32767, np.int16)
    w = np.full((1, 1, 4, 4), 127, np.int8)
    plan = CONV_TRANSPOSE2D.plan((1.0, 1.0), (IntFormat(16), W8), geo, bias=np.array([2 ** 31 - 2]))
    for path in ("reference", "fast"):
        with pytest.raises(IntOverflowError, match="accumulator"):
            getattr(CONV_TRANSPOSE2D, path)([x, w], plan)


@pytest.mark.parametrize("bad", [ConvGeometry((3,), (1,)), ConvGeometry((3, 3), (0, 1)),
                                 ConvGeometry((3, 3), (2, 2), output_padding=(2, 0)),
                                 ConvGeometry((3, 3), pads=(-1, 0, 0, 0))])
def test_bad_geometry_is_refused(bad):
    with pytest.raises(ArithSpecError, match="geometry"):
        CONV2D.plan((1.0, 1.0), (S8, W8), bad)


def test_input_outside_its_format_is_refused():
    geo = ConvGeometry((1, 1))
    plan = CONV2D.plan((1.0, 1.0), (IntFormat(4), W8), geo)
    with pytest.raises(IntOverflowError, match="convolution input"):
        CONV2D.fast([np.full((1, 1, 2, 2), 9, np.int8), np.ones((1, 1, 1, 1), np.int8)], plan)


# --- Resize (K9) ------------------------------------------------------------------------------------

@st.composite
def resizes(draw):
    mode = draw(st.sampled_from(["nearest", "linear"]))
    coord = draw(st.sampled_from(COORDINATE_MODES))
    nearest = draw(st.sampled_from(NEAREST_MODES))
    hw = tuple(draw(st.integers(1, 9)) for _ in range(2))
    if draw(st.booleans()):
        return mode, coord, nearest, hw, tuple(draw(st.integers(1, 20)) for _ in range(2)), None
    scales = tuple(float(np.float32(draw(st.sampled_from([0.5, 0.6, 1.0, 1.75, 2.0, 2.5, 3.0]))))
                   for _ in range(2))
    out = tuple(int(np.floor(n * s)) for n, s in zip(hw, scales))
    return mode, coord, nearest, hw, tuple(max(1, o) for o in out), scales if min(out) >= 1 else None


def float_decides_a_tie(mode, coord, nearest, hw, out, scales):
    """With `sizes` (scale = out / in), a nearest source coordinate that is exactly on a rounding
    boundary (a half for the round modes, a whole number for floor / ceil) lands on either side
    depending on how the float32 division is evaluated, and ONNX Runtime's builds differ (1.32
    takes 7 -> 2 asymmetric round_prefer_ceil to index 4, not float32's 1 / (2/7) = 3.4999998 ->
    3): docs/arithmetic.md K9.1 names intsim's choice; the comparison skips these cases."""
    if mode != "nearest" or scales is not None or coord == "align_corners":
        return False
    edge = Fraction(0) if nearest in ("floor", "ceil") else Fraction(1, 2)
    half = Fraction(0) if coord == "asymmetric" else Fraction(1, 2)
    for n_in, n_out in zip(hw, out):
        if coord == "pytorch_half_pixel" and n_out == 1:
            continue        # the coordinate is 0 by definition
        for x in range(n_out):
            c = (x + half) * Fraction(n_in, n_out) - half
            if c - math.floor(c) == edge:
                return True
    return False


@given(resizes(), st.integers(0, 2 ** 32 - 1))
@FAST
def test_float_resize_equals_onnxruntime(cfg, seed):
    mode, coord, nearest, hw, out, scales = cfg
    assume(not float_decides_a_tie(*cfg))
    x = np.random.default_rng(seed).standard_normal((2, 3) + hw).astype(np.float32)
    consts = {"roi": None, "scales": None if scales is None else np.array((1, 1) + scales, np.float32),
              "sizes": np.array((2, 3) + out, np.int64) if scales is None else None}
    want = run_ort("Resize", x, consts, dict(mode=mode, coordinate_transformation_mode=coord,
                                             nearest_mode=nearest))
    got = resize_float(x, resize_tables(hw, out, scales, mode, coord, nearest))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@given(resizes(), st.integers(0, 2 ** 32 - 1), st.integers(2, 16))
@FAST
def test_integer_resize_paths_agree_and_stay_within_the_bound(cfg, seed, bits):
    mode, coord, nearest, hw, out, scales = cfg
    fmt = IntFormat(bits)
    x = np.random.default_rng(seed).integers(fmt.lo, fmt.hi + 1, (2, 3) + hw).astype(fmt.storage)
    plan = RESIZE.plan(0.01, fmt, hw, out, mode, coord, nearest, scales)
    ref, fast = RESIZE.reference([x], plan), RESIZE.fast([x], plan)
    assert ref.dtype == fast.dtype == fmt.storage and ref.shape == (2, 3) + out
    np.testing.assert_array_equal(ref, fast)
    err = np.abs(ref * 0.01 - RESIZE.float_reference(x * 0.01, plan))
    assert np.all(err <= RESIZE.error_bound(plan, [x]))
    if mode == "nearest":      # an exact gather: ONNX Runtime's own nearest on the integers
        want = resize_float(x.astype(np.float64), resize_tables(hw, out, scales, mode, coord, nearest))
        np.testing.assert_array_equal(ref, want)


def test_resize_worked_example():
    """docs/arithmetic.md K9.3: 2 -> 4 bilinear, half_pixel, P = 12."""
    plan = RESIZE.plan(1.0, S8, (1, 2), (1, 4), "linear")
    np.testing.assert_array_equal(plan.consts["ix0"], [0, 0, 0, 1])
    np.testing.assert_array_equal(plan.consts["wx"], [0, 1024, 3072, 0])
    out = RESIZE.reference([np.array([[[[10, -7]]]])], plan)
    np.testing.assert_array_equal(out, [[[[10, 6, -3, -7]]]])


@pytest.mark.parametrize("bad", [dict(mode="cubic"), dict(coord_mode="tf_crop_and_resize"),
                                 dict(nearest_mode="nearest", mode="nearest"), dict(out_hw=(0, 4))])
def test_resize_bad_options(bad):
    opts = dict(in_hw=(2, 2), out_hw=(4, 4), mode="linear") | bad
    with pytest.raises(ArithSpecError, match="resize"):
        RESIZE.plan(1.0, S8, **opts)


# --- ops through the compiler: hand-built graphs ------------------------------------------------------

def geo_attrs(k, s=1, p=0, d=1, g=1, transpose=False):
    return ConvGeometry((k, k), (s, s), (p,) * 4, (d, d), g).to_attrs(transpose)


def decoder_graph(seed=0):
    r = np.random.default_rng(seed)

    def f(*shape, scale=1.0):
        return (r.standard_normal(shape) * scale).astype(np.float32)
    nodes = [
        Node("Conv", "conv1", ["image"], ["conv1"], {"weight": f(8, 3, 3, 3, scale=0.5), "bias": f(8)},
             geo_attrs(3, p=1)),
        Node("Relu", "relu1", ["conv1"], ["relu1"]),
        Node("ConvTranspose", "up", ["relu1"], ["up"], {"weight": f(8, 2, 4, 4, scale=0.3), "bias": f(4)},
             geo_attrs(4, s=2, p=1, g=2, transpose=True)),
        Node("Conv", "affine", ["up"], ["affine"], {"weight": f(4, 1, 1, 1), "bias": f(4)}, geo_attrs(1, g=4)),
        Node("Relu", "relu2", ["affine"], ["relu2"]),
        Node("Conv", "head", ["relu2"], ["head"], {"weight": f(1, 4, 1, 1), "bias": f(1)}, geo_attrs(1)),
        Node("Resize", "resize", ["head"], ["resize"],
             attrs=dict(mode="linear", coordinate_transformation_mode="half_pixel",
                        nearest_mode="round_prefer_floor", size=[40, 40])),
        Node("Sigmoid", "prob", ["resize"], ["prob"]),
    ]
    return Graph("image", (3, 16, 16), nodes, "prob").validate()


def test_decoder_graph_compiles_and_runs_integer_only(tmp_path):
    g = decoder_graph()
    assert g.tensor_shapes()["up"] == (4, 32, 32) and g.tensor_shapes()["prob"] == (1, 40, 40)
    images = np.random.default_rng(1).integers(0, 256, (24, 3, 16, 16)).astype(np.uint8)
    p = ip.compile(g, ip.calibrate(g, images[:16]), QuantConfig())
    kinds = [op.kind for op in p.ops]
    assert kinds.count("conv") == 3 and "conv_transpose" in kinds and "resize" in kinds
    assert p.tensors["conv1.acc"].axis == -3 and len(p.tensors["conv1.acc"].scale) == 8
    assert p.op("up.in").attrs == {"axis": -3} and p.tensors["up.in"].fmt.describe() == "u8[0, 255]"
    assert p.tensors["resize"].scale == p.tensors["resize.in"].scale      # no requant after Resize
    x = ip.to_model_input(images[16:])
    out = Executable(p).infer(x)
    np.testing.assert_array_equal(out, Executable(p, "reference").infer(x))
    assert metrics.sqnr_db(run_float(g, x), out) > 30
    np.testing.assert_array_equal(Executable(Program.load(p.save(tmp_path / "prog"))).infer(x), out)


def test_a_resize_read_by_a_sigmoid_and_the_sigmoid_read_16_bits(tmp_path):
    """docs/quantization.md Q12: no product reads them, so they take gelu_bits (Sigmoid) and the
    width data movement would carry (Resize: residual_bits before a Sigmoid, abits before a Conv);
    with gelu_bits = 8 and a Conv after the Resize, both are back at 8 bits."""
    g = decoder_graph()
    images = np.random.default_rng(1).integers(0, 256, (16, 3, 16, 16)).astype(np.uint8)
    obs = ip.calibrate(g, images)
    bits = (lambda p: (p.tensors["resize.in"].fmt.bits, p.tensors[p.op("prob").inputs[0]].fmt.bits))
    assert bits(ip.compile(g, obs, QuantConfig())) == (16, 16)
    assert bits(ip.compile(g, obs, QuantConfig(gelu_bits=8))) == (8, 8)
    conv_after = Graph("image", g.input_shape, g.nodes[:-1] + [
        Node("Conv", "post", ["resize"], ["post"], {"weight": np.ones((1, 1, 1, 1), np.float32)},
             geo_attrs(1))], "post").validate()
    p = ip.compile(conv_after, ip.calibrate(conv_after, images), QuantConfig())
    assert p.tensors["resize.in"].fmt.bits == 8


def test_channel_axis_dequantizes_per_channel():
    g = decoder_graph()
    images = np.random.default_rng(1).integers(0, 256, (16, 3, 16, 16)).astype(np.uint8)
    p = ip.compile(g, ip.calibrate(g, images), QuantConfig())
    info = p.tensors["conv1.acc"]
    q = np.ones((1,) + info.shape, np.int32)
    np.testing.assert_array_equal(info.dequantize(q)[0, :, 0, 0], info.scale)
    assert {t: d.get("axis") for t, d in ((t, p.tensors[t].to_dict()) for t in ("conv1.acc", "up.in"))} \
        == {"conv1.acc": -3, "up.in": None}


def test_global_average_pool_is_an_exact_sum_with_the_count_in_the_scale():
    r = np.random.default_rng(0)
    nodes = [Node("Conv", "conv", ["image"], ["conv"], {"weight": r.standard_normal((4, 3, 3, 3)).astype(np.float32)},
                  geo_attrs(3)),
             Node("GlobalAveragePool", "pool", ["conv"], ["pool"])]
    g = Graph("image", (3, 8, 8), nodes, "pool").validate()
    assert g.tensor_shapes()["pool"] == (4, 1, 1)
    images = r.integers(0, 256, (20, 3, 8, 8)).astype(np.uint8)
    p = ip.compile(g, ip.calibrate(g, images[:12]), QuantConfig())
    op = p.op("pool")
    assert op.attrs == {"count": 36} and p.tensors["pool"].scale == p.tensors["pool.in"].scale / 36
    seen = {}
    out = Executable(p).infer(ip.to_model_input(images[12:]), observe=lambda o, i, y: seen.update({o.name: (i, y)}))
    (x,), (y,) = seen["pool"]
    np.testing.assert_array_equal(y, x.astype(np.int64).sum(axis=(2, 3), keepdims=True))
    assert metrics.sqnr_db(run_float(g, ip.to_model_input(images[12:])), out) > 35


@pytest.mark.parametrize("node,msg", [
    (Node("Conv", "c", ["image"], ["c"], {"weight": np.ones((4, 2, 3, 3), np.float32)}, geo_attrs(3)),
     "do not fit"),
    (Node("Conv", "c", ["image"], ["c"], {"weight": np.ones((4, 3, 9, 9), np.float32)}, geo_attrs(9)),
     "smaller than"),
    (Node("Resize", "r", ["image"], ["r"], attrs=dict(mode="cubic", coordinate_transformation_mode="half_pixel",
                                                      nearest_mode="floor", size=[4, 4])), "cubic"),
])
def test_bad_nodes_are_named(node, msg):
    with pytest.raises(GraphError, match=msg):
        Graph("image", (3, 8, 8), [node], node.outputs[0]).validate()


def test_golden_dump_keeps_the_channel_axis(tmp_path):
    from intsim import golden
    from intsim.execute import quantize_input
    g = decoder_graph()
    images = np.random.default_rng(1).integers(0, 256, (18, 3, 16, 16)).astype(np.uint8)
    p = ip.compile(g, ip.calibrate(g, images[:16]), QuantConfig())
    q = quantize_input(p, ip.to_model_input(images[16:]))
    golden.dump(p, q, tmp_path / "gold", ("npy",), 1, False, "test")
    back = golden.load_program(tmp_path / "gold")
    assert back.tensors["conv1.acc"].axis == -3 and back.tensors["relu1"].axis == -3
    assert back.tensors["up.in"].axis == -1
    np.testing.assert_array_equal(Executable(back).run(q), Executable(p).run(q))


def test_input_normalisation_folds_exactly_into_unpadded_convolutions():
    from intsim.graph import fold_input_normalisation
    r = np.random.default_rng(3)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def graph(pads):
        w = r.standard_normal((4, 3, 2, 2)).astype(np.float32)
        return Graph("image", (3, 8, 8), [Node("Conv", "c", ["image"], ["c"], {"weight": w, "bias": np.ones(4, np.float32)},
                                               geo_attrs(2, s=2, p=pads))], "c").validate()
    g = graph(0)
    x = r.random((2, 3, 8, 8))
    m, s = (np.array(v).reshape(1, 3, 1, 1) for v in (mean, std))
    want = run_float(g, (x - m) / s, dtype=np.float64)
    got = run_float(fold_input_normalisation(g, mean, std), x, dtype=np.float64)
    # equal to the float64 interpreter's precision (products on two 21-bit grid slices: ~2^-42)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    assert g.meta["input_normalisation"]["std"] == list(std)
    with pytest.raises(GraphError, match="unpadded group-1 Conv"):
        fold_input_normalisation(graph(1), mean, std)
