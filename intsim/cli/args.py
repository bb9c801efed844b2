"""Arguments shared by the commands, and the front half they share: model + data + settings ->
(graph, data, program). Every argument is checked here, before any model is loaded."""
import argparse
from pathlib import Path
import sys
import tempfile

from .. import pipeline as ip
from ..errors import IntsimError
from ..experiment.plans import load_plan
from ..kernels import DEFAULTS, FAMILIES
from ..quantize import ACT_CALIB, WEIGHT_ROUND, QuantConfig


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2): the message names the option and the value."""

    def error(self, message):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def count(minimum):
    """An argparse type: an integer >= minimum."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {v}")
        return v
    return parse


def writable_file(path, what):
    """Refuse, before any work, an output file that cannot be written: a directory in its place or
    a parent folder that cannot be created or written."""
    p = Path(path)
    if p.is_dir():
        raise IntsimError(f"{what} {p}: is a directory")
    writable_dir(p.parent, what)
    return p


def writable_dir(path, what):
    """Refuse, before any work, an output folder that cannot be created: the nearest existing
    ancestor must be a folder where a file can be made (probed, so root and read-only file systems
    are judged by what happens, not by permission bits)."""
    p = Path(path)
    existing = p
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise IntsimError(f"{what} {path}: {existing} is not a folder")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as e:
        raise IntsimError(f"{what} {path}: cannot write in {existing} ({e.strerror or e})") from None
    return p


def add_model_args(p, data=True):
    p.add_argument("model", nargs="?", default=None,
                   help="ONNX ViT (default: the shipped Fashion-MNIST model)")
    if data:
        p.add_argument("--data", default="fashion-mnist",
                       help="fashion-mnist (default), photos, a folder of images, or an .npz with "
                            "'images'[, 'labels']")
        p.add_argument("--calib", type=count(1), default=256, help="calibration images (default 256)")


def add_quant_args(p):
    p.add_argument("--wbits", type=int, default=8, help="weight bits, 2..8 (default 8)")
    p.add_argument("--abits", type=int, default=8, help="activation bits, 2..8 (default 8)")
    p.add_argument("--residual-bits", type=int, default=16, help="residual stream bits (default 16)")
    p.add_argument("--logit-bits", type=int, default=16, help="softmax input bits (default 16)")
    p.add_argument("--gelu-bits", type=int, default=QuantConfig().gelu_bits,
                   help=f"GELU, QuickGELU and Sigmoid input bits, 2..16 (default {QuantConfig().gelu_bits})")
    p.add_argument("--softmax-bits", type=int, default=16, help="softmax output bits (default 16)")
    p.add_argument("--multiplier-bits", type=int, default=31, help="requant multiplier bits (default 31)")
    p.add_argument("--act-calib", default=QuantConfig().act_calib, choices=list(ACT_CALIB),
                   help="activation calibration (mse-top: MSE with the 1024 largest |x| kept exactly)")
    p.add_argument("--smooth", type=float, default=0.0,
                   help="migration strength for requantized Linear inputs, 0..1 (default 0 = off)")
    p.add_argument("--weight-round", default="auto", choices=list(WEIGHT_ROUND),
                   help="Linear weight rounding: nearest, gptq (with calibration data) or auto "
                        "(default: gptq, nearest with a warning when the calibration has no X^T X)")
    p.add_argument("--gptq-damp", type=float, default=QuantConfig().gptq_damp, metavar="D",
                   help="GPTQ's damping, x the mean diagonal of X^T X (default 0: 0.3 at 8-bit "
                        "weights, 0.01 below)")
    p.add_argument("--weight-group", type=int, default=0, metavar="G",
                   help="Linear weights with one scale per G input columns, each an integer multiple "
                        "of its row's (default 0: one scale per output channel)")
    p.add_argument("--group-scale-bits", type=int, default=QuantConfig().group_scale_bits, metavar="M",
                   help=f"bits of a weight group's scale multiplier (default {QuantConfig().group_scale_bits})")
    p.add_argument("--rotate", type=int, default=QuantConfig().rotate, metavar="B",
                   help="rotate Linear inputs by Hadamard blocks of at most B channels where that "
                        f"lowers their quantization error (power of two; 0 = off; default {QuantConfig().rotate})")
    p.add_argument("--wide", action="append", default=[], metavar="REGEX=BITS",
                   help=r"operands whose label matches REGEX at BITS (2..16), e.g. 'mlp\.fc2\.in$=12' "
                        "(repeatable)")
    p.add_argument("--bias-correction", action=argparse.BooleanOptionalAction,
                   default=QuantConfig().bias_correction,
                   help="subtract from each Linear's bias the mean output error of its weights' rounding, "
                        "E[x] (W_q - W)^T, from the calibration means (default off)")
    p.add_argument("--layer-wbits", action="append", default=[], metavar="REGEX=BITS",
                   help=r"weights of the layers whose name matches REGEX at BITS (2..8) instead of "
                        r"--wbits, e.g. 'attn\.qkv$=8' (repeatable)")
    p.add_argument("--qk-wbits", type=int, default=0, metavar="BITS",
                   help="weights of the layers that make attention queries and keys (found in the graph; "
                        "timm's fused qkv whole) at BITS (2..8) instead of --wbits (default 0: --wbits)")
    for fam in FAMILIES:
        p.add_argument(f"--{fam}", default=DEFAULTS[fam], help=f"{fam} candidate (default {DEFAULTS[fam]})")
    p.add_argument("--override", action="append", default=[], metavar="LAYER=CANDIDATE",
                   help="per-layer candidate, e.g. blocks.0.mlp.act=ibert-gelu (repeatable)")
    p.add_argument("--plan", default=None, help="a selection plan (intsim select --out) to apply")


def patterns_arg(a, option):
    """--wide / --layer-wbits items REGEX=BITS as {regex: bits}, in the order given."""
    patterns = {}
    for item in getattr(a, option, []):
        pattern, sep, bits = item.rpartition("=")
        if not sep or not bits.strip().isdigit():
            raise IntsimError(f"--{option.replace('_', '-')} {item!r}: use REGEX=BITS")
        patterns[pattern] = int(bits)
    return patterns


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
                       logit_bits=a.logit_bits, gelu_bits=getattr(a, "gelu_bits", QuantConfig().gelu_bits),
                       softmax_bits=a.softmax_bits,
                       multiplier_bits=a.multiplier_bits, act_calib=a.act_calib,
                       smooth=getattr(a, "smooth", 0.0), wide=patterns_arg(a, "wide"),
                       layer_wbits=patterns_arg(a, "layer_wbits"),
                       qk_wbits=getattr(a, "qk_wbits", 0),
                       bias_correction=getattr(a, "bias_correction", QuantConfig().bias_correction),
                       weight_round=getattr(a, "weight_round", "auto"),
                       gptq_damp=getattr(a, "gptq_damp", QuantConfig().gptq_damp),
                       weight_group=getattr(a, "weight_group", 0),
                       group_scale_bits=getattr(a, "group_scale_bits", QuantConfig().group_scale_bits),
                       rotate=getattr(a, "rotate", QuantConfig().rotate), overrides=overrides, **{fam: getattr(a, fam) for fam in FAMILIES})


def build_program(a, config, graph=None, data=None):
    """model + data + settings -> (graph, data, program, images calibrated on): the shared front
    half of run/golden."""
    graph = graph or ip.load(a.model)
    c, h, w = graph.input_shape
    data = data or ip.open_data(a.data, image_size=h if h == w and c == 3 else 224)
    calib = data.calibration(a.calib)
    if len(calib) < a.calib:
        print(f"warning: --calib {a.calib}: {data.name} has {len(calib)} calibration images; "
              f"calibrating on all of them", file=sys.stderr)
    observers = ip.calibrate(graph, calib, gram=config.gptq, rotate=config.rotate)
    return graph, data, ip.compile(graph, observers, config), len(calib)
