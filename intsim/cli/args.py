"""Arguments shared by the commands, and the front half they share: model + data + settings ->
(graph, data, program). Every argument is checked here, before any model is loaded."""
from .. import pipeline as ip
from ..errors import IntsimError
from ..experiment.plans import load_plan
from ..kernels import DEFAULTS, FAMILIES
from ..quantize import QuantConfig


def add_model_args(p, data=True):
    p.add_argument("model", nargs="?", default=None,
                   help="ONNX ViT (default: the shipped Fashion-MNIST model)")
    if data:
        p.add_argument("--data", default="fashion-mnist",
                       help="fashion-mnist (default), photos, a folder of images, or an .npz with "
                            "'images'[, 'labels']")
        p.add_argument("--calib", type=int, default=256, help="calibration images (default 256)")


def add_quant_args(p):
    p.add_argument("--wbits", type=int, default=8, help="weight bits, 2..8 (default 8)")
    p.add_argument("--abits", type=int, default=8, help="activation bits, 2..8 (default 8)")
    p.add_argument("--residual-bits", type=int, default=16, help="residual stream bits (default 16)")
    p.add_argument("--logit-bits", type=int, default=16, help="softmax input bits (default 16)")
    p.add_argument("--softmax-bits", type=int, default=16, help="softmax output bits (default 16)")
    p.add_argument("--multiplier-bits", type=int, default=31, help="requant multiplier bits (default 31)")
    p.add_argument("--act-calib", default="mse", choices=["minmax", "percentile", "mse"])
    for fam in FAMILIES:
        p.add_argument(f"--{fam}", default=DEFAULTS[fam], help=f"{fam} candidate (default {DEFAULTS[fam]})")
    p.add_argument("--override", action="append", default=[], metavar="LAYER=CANDIDATE",
                   help="per-layer candidate, e.g. blocks.0.mlp.act=ibert-gelu (repeatable)")
    p.add_argument("--plan", default=None, help="a selection plan (intsim select --out) to apply")


def config_from_args(a):
    overrides = {}
    if getattr(a, "plan", None):
        overrides.update(load_plan(a.plan))
    for item in a.override:
        if "=" not in item:
            raise IntsimError(f"--override {item!r}: use LAYER=CANDIDATE")
        layer, cand = item.split("=", 1)
        overrides[layer] = cand
    return QuantConfig(wbits=a.wbits, abits=a.abits, residual_bits=a.residual_bits,
                       logit_bits=a.logit_bits, softmax_bits=a.softmax_bits,
                       multiplier_bits=a.multiplier_bits, act_calib=a.act_calib, gelu=a.gelu,
                       softmax=a.softmax, layernorm=a.layernorm, overrides=overrides)


def build_program(a, config, graph=None, data=None):
    """model + data + settings -> (graph, data, program): the shared front half of run/golden."""
    graph = graph or ip.load(a.model)
    data = data or ip.open_data(a.data)
    observers = ip.calibrate(graph, data.calibration(a.calib))
    return graph, data, ip.compile(graph, observers, config)
