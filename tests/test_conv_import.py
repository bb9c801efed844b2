"""Importer patterns around backbones (intsim/onnx_import/patterns/conv.py, activation.py, resize.py):
Conv / ConvTranspose with BatchNormalization folded, a BatchNormalization that cannot be folded as a
per-channel affine, auto_pad, Resize from sizes computed on the image path or from scales,
GlobalAveragePool, Relu, Sigmoid and QuickGELU; the float graph matches ONNX Runtime to 1e-4 of the
output's range and runs integer-only; unsupported forms are named."""
import numpy as np
import pytest

from intsim import metrics, pipeline as ip
from intsim.execute import Executable
from intsim.float_ref import run_float
from intsim.onnx_import import OnnxImportError, load_onnx
from intsim.quantize import QuantConfig

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

TOL = 1e-4          # max |float graph - ONNX Runtime| relative to the output's range


class Builder:
    """A small ONNX graph on an image input, built node by node with seeded weights."""

    def __init__(self, shape=(3, 16, 16), seed=0):
        self.r = np.random.default_rng(seed)
        self.shape, self.nodes, self.inits = shape, [], []

    def const(self, name, value):
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def rand(self, *shape, scale=1.0):
        return (self.r.standard_normal(shape) * scale).astype(np.float32)

    def node(self, op, inputs, name, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def batchnorm(self, x, c, name):
        b = self.rand
        return self.node("BatchNormalization", [x, self.const(f"{name}.g", 1 + b(c, scale=0.2)),
                                                self.const(f"{name}.b", b(c, scale=0.1)),
                                                self.const(f"{name}.m", b(c, scale=0.1)),
                                                self.const(f"{name}.v", 1 + np.abs(b(c, scale=0.2)))],
                         name, epsilon=1e-5)

    def model(self, out, opset=17):
        graph = helper.make_graph(self.nodes, "m", [helper.make_tensor_value_info(
            "image", TensorProto.FLOAT, ["N", *self.shape])],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], self.inits)
        graph.output[0].type.tensor_type.shape.dim.add().dim_param = "N"
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def saliency_like(seed=0):
    """Conv 3x3 -> BN -> Relu -> ConvTranspose (groups 2) -> BN -> Relu -> BN (not foldable: after a
    Relu) -> Conv 3x3 SAME_UPPER stride 2 -> Conv 1x1 -> Resize to the image size (sizes from Shape)
    -> Sigmoid."""
    b = Builder(seed=seed)
    x = b.node("Conv", ["image", b.const("w1", b.rand(8, 3, 3, 3, scale=0.4)), b.const("b1", b.rand(8))],
               "conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    x = b.node("Relu", [b.batchnorm(x, 8, "bn1")], "relu1")
    x = b.node("ConvTranspose", [x, b.const("w2", b.rand(8, 3, 4, 4, scale=0.3)), b.const("b2", b.rand(6))],
               "up", kernel_shape=[4, 4], strides=[2, 2], pads=[1, 1, 1, 1], group=2)
    x = b.node("Relu", [b.batchnorm(x, 6, "bn2")], "relu2")
    x = b.batchnorm(x, 6, "bn3")
    x = b.node("Conv", [x, b.const("w3", b.rand(4, 6, 3, 3, scale=0.3))], "down", kernel_shape=[3, 3],
               strides=[2, 2], auto_pad="SAME_UPPER")
    x = b.node("Conv", [x, b.const("w4", b.rand(1, 4, 1, 1)), b.const("b4", b.rand(1))], "head")
    b.node("Shape", ["image"], "shape")
    b.node("Slice", ["shape", b.const("two", np.array([2])), b.const("four", np.array([4]))], "hw")
    b.node("Shape", [x], "head_shape")
    b.node("Slice", ["head_shape", b.const("zero", np.array([0])), "two"], "nc")
    b.node("Concat", ["nc", "hw"], "sizes", axis=0)
    b.node("Resize", [x, "", "", "sizes"], "resize", mode="linear", coordinate_transformation_mode="half_pixel")
    b.node("Sigmoid", ["resize"], "saliency")
    return b.model("saliency")


def pooled_quickgelu(seed=0):
    """Conv -> QuickGELU (Mul 1.702 -> Sigmoid -> Mul) -> Resize nearest by scales -> SiLU (x *
    sigmoid(x)) -> GlobalAveragePool."""
    b = Builder(seed=seed)
    x = b.node("Conv", ["image", b.const("w", b.rand(6, 3, 2, 2, scale=0.5))], "conv", kernel_shape=[2, 2],
               strides=[2, 2], pads=[0, 0, 1, 1])
    g = b.node("Mul", [x, b.const("alpha", np.array(1.702, np.float32))], "gain")
    x = b.node("Mul", [b.node("Sigmoid", [g], "gate"), x], "quickgelu")
    x = b.node("Resize", [x, "", b.const("scales", np.array([1, 1, 2, 1.5], np.float32))], "up",
               mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    x = b.node("Mul", [x, b.node("Sigmoid", [x], "silu_gate")], "silu")
    b.node("GlobalAveragePool", [x], "pool")
    return b.model("pool")


def check_against_onnxruntime(model, graph, batch=4, seed=3):
    x = np.random.default_rng(seed).random((batch,) + tuple(graph.input_shape), dtype=np.float32)
    want = ort.InferenceSession(model.SerializeToString() if not isinstance(model, str) else model,
                                providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    got = run_float(graph, x)
    err = float(np.max(np.abs(got - want)))
    assert got.shape == want.shape and err <= TOL * float(np.ptp(want)), err
    return x


def integer_run(graph, seed=0, calib=16, evaluate=8):
    images = np.random.default_rng(seed).integers(0, 256, (calib + evaluate,) + graph.input_shape).astype(np.uint8)
    p = ip.compile(graph, ip.calibrate(graph, images[:calib]), QuantConfig())
    x = ip.to_model_input(images[calib:])
    out = Executable(p).infer(x)
    np.testing.assert_array_equal(out, Executable(p, "reference").infer(x))
    return p, metrics.sqnr_db(run_float(graph, x), out)


def test_saliency_like_decoder_imports_folds_and_runs():
    model = saliency_like()
    g = load_onnx(model)
    assert g.ops() == ["Conv", "Relu", "ConvTranspose", "Relu", "Conv", "Conv", "Conv", "Resize", "Sigmoid"]
    conv1, affine, down = g.nodes[0], g.nodes[4], g.nodes[5]
    assert conv1.params["weight"].dtype == np.float64           # BatchNormalization folded in
    assert affine.attrs["group"] == 6 and affine.params["weight"].shape == (6, 1, 1, 1)
    assert down.attrs["pads"] == [0, 0, 1, 1]                    # SAME_UPPER: the extra pad at the end
    assert g.nodes[-2].attrs["size"] == [16, 16] and "scales" not in g.nodes[-2].attrs
    check_against_onnxruntime(model, g)
    p, sqnr = integer_run(g)
    assert sqnr > 30
    assert [op.kind for op in p.ops].count("requant") >= 5


def test_quickgelu_silu_nearest_resize_and_pool():
    model = pooled_quickgelu()
    g = load_onnx(model)
    assert g.ops() == ["Conv", "QuickGELU", "Resize", "QuickGELU", "GlobalAveragePool"]
    assert [n.attrs.get("alpha") for n in g.nodes if n.op == "QuickGELU"] == [pytest.approx(1.702), 1.0]
    assert g.nodes[2].attrs["scales"] == [2.0, 1.5] and g.nodes[2].attrs["size"] == [16, 12]
    check_against_onnxruntime(model, g)
    p, sqnr = integer_run(g)
    assert sqnr > 30 and [op.attrs.get("kernel") for op in p.ops if op.kind == "quickgelu"] == \
        ["bitshift-quickgelu"] * 2


@pytest.mark.parametrize("change,msg", [
    (lambda n: n.attribute.extend([helper.make_attribute("mode", "cubic")]) if n.op_type == "Resize" else None,
     "mode 'cubic' is not supported"),
    (lambda n: n.attribute.extend([helper.make_attribute("coordinate_transformation_mode", "tf_crop_and_resize")])
     if n.op_type == "Resize" else None, "tf_crop_and_resize"),
])
def test_unsupported_forms_name_the_node_and_the_reason(change, msg):
    model = saliency_like()
    for n in model.graph.node:
        if n.op_type == "Resize":
            del n.attribute[:]
        change(n)
    with pytest.raises(OnnxImportError, match=msg):
        load_onnx(model, verify=False)


@pytest.fixture(scope="module")
def torch_decoder(tmp_path_factory, make_models):
    """A torch decoder (Conv-BN-ReLU, grouped ConvTranspose-BN, QuickGELU, dilated grouped Conv,
    F.relu, 1x1 Conv, bilinear interpolate, sigmoid), exported in both forms."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.up, self.bn2 = nn.ConvTranspose2d(8, 6, 4, stride=2, padding=1, groups=2), nn.BatchNorm2d(6)
            self.dw = nn.Conv2d(6, 6, 3, stride=2, padding=2, dilation=2, groups=3)
            self.head = nn.Conv2d(6, 1, 1)

        def forward(self, x):
            y = self.bn2(self.up(torch.relu(self.bn1(self.conv1(x)))))
            y = self.head(torch.relu(self.dw(y * torch.sigmoid(1.702 * y))))
            y = nn.functional.interpolate(y, size=(28, 28), mode="bilinear", align_corners=False)
            return torch.sigmoid(y)
    torch.manual_seed(0)
    model = Decoder().eval()
    with torch.no_grad():
        for bn in (model.bn1, model.bn2):
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.8, 1.3)
    out = tmp_path_factory.mktemp("decoder")
    paths = {}
    for form in ("legacy", "dynamo"):
        if form == "dynamo":
            pytest.importorskip("onnxscript")
        paths[form] = str(out / f"decoder_{form}.onnx")
        make_models.export_quietly(model, paths[form], (3, 20, 20), form, output_names=["saliency"],
                                   legacy_opset=14, example_batch=2)
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("form", ["legacy", "dynamo"])
def test_torch_exported_decoder(torch_decoder, form):
    g = load_onnx(torch_decoder[form])
    assert g.ops() == ["Conv", "Relu", "ConvTranspose", "QuickGELU", "Conv", "Relu", "Conv", "Resize", "Sigmoid"]
    names = [n.name for n in g.nodes]
    assert "head" in names and "dw" in names and g.tensor_shapes()[g.output_name] == (1, 28, 28)
    check_against_onnxruntime(torch_decoder[form], g)
    _, sqnr = integer_run(g)
    assert sqnr > 30
