"""The conformance kernels: the names a testbench selects by, their op kind and spec section,
and the generator of each one's cases."""
from . import arithmetic, elementwise, gelu, hadamard, layernorm, resize, softmax

CONFORMANCE_SCHEMA = "intsim-conformance"

# kernel name -> (op kind, spec section, family or None); the names a testbench selects by
KERNELS = {
    "requantize": ("requant", "A6", None),
    "residual-add": ("add", "K5", None),
    "matmul": ("linear", "K1", None),
    "bitshift-softmax": ("softmax", "K2.1", "softmax"),
    "ivit-shiftmax": ("softmax", "K2.2", "softmax"),
    "ibert-softmax": ("softmax", "K2.3", "softmax"),
    "poly-gelu": ("gelu", "K3.1", "gelu"),
    "ibert-gelu": ("gelu", "K3.2", "gelu"),
    "ivit-shiftgelu": ("gelu", "K3.3", "gelu"),
    "isqrt-layernorm": ("layernorm", "K4.2", "layernorm"),
    "ivit-layernorm": ("layernorm", "K4.3", "layernorm"),
    "data-movement": ("cls_pos", "K6", None),
    "relu": ("relu", "K7.1", None),
    "bitshift-sigmoid": ("sigmoid", "K8.1", "sigmoid"),
    "bitshift-quickgelu": ("quickgelu", "K8.2", "quickgelu"),
    "hadamard": ("hadamard", "K10", None),
    "resize": ("resize", "K9", None),
}


GENERATORS = {
    "requantize": arithmetic.requantize_cases,
    "residual-add": arithmetic.residual_add_cases,
    "matmul": arithmetic.matmul_cases,
    "bitshift-softmax": softmax.bitshift_softmax_cases,
    "ivit-shiftmax": softmax.ivit_softmax_cases,
    "ibert-softmax": softmax.ibert_softmax_cases,
    "poly-gelu": gelu.poly_gelu_cases,
    "ibert-gelu": gelu.ibert_gelu_cases,
    "ivit-shiftgelu": gelu.ivit_gelu_cases,
    "isqrt-layernorm": layernorm.isqrt_layernorm_cases,
    "ivit-layernorm": layernorm.ivit_layernorm_cases,
    "data-movement": elementwise.data_movement_cases,
    "relu": elementwise.relu_cases,
    "bitshift-sigmoid": elementwise.sigmoid_family_cases("bitshift-sigmoid", "sigmoid", 1.0),
    "bitshift-quickgelu": elementwise.sigmoid_family_cases("bitshift-quickgelu", "quickgelu", 1.702),
    "hadamard": hadamard.hadamard_cases,
    "resize": resize.resize_cases,
}
assert set(GENERATORS) == set(KERNELS)

