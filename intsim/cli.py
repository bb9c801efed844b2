"""The `intsim` command line."""
import argparse
import json
import sys

from . import __version__
from .arith import ArithSpecError

COMMANDS = {}


def command(name, help_):
    def deco(fn):
        COMMANDS[name] = (fn, help_)
        return fn
    return deco


def add_model_args(p, data=True):
    p.add_argument("model", nargs="?", default=None,
                   help="ONNX ViT (default: the shipped Fashion-MNIST model)")
    if data:
        p.add_argument("--data", default="fashion-mnist",
                       help="fashion-mnist (default), a folder of images, or an .npz with 'images'[, 'labels']")
        p.add_argument("--calib", type=int, default=256, help="calibration images (default 256)")


def add_quant_args(p):
    from .kernels import FAMILIES, DEFAULTS
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
    from .quantize import QuantConfig
    overrides = {}
    if getattr(a, "plan", None):
        from .select import load_plan
        overrides.update(load_plan(a.plan))
    for item in a.override:
        if "=" not in item:
            raise ArithSpecError(f"--override {item!r}: use LAYER=CANDIDATE")
        layer, cand = item.split("=", 1)
        overrides[layer] = cand
    return QuantConfig(wbits=a.wbits, abits=a.abits, residual_bits=a.residual_bits,
                       logit_bits=a.logit_bits, softmax_bits=a.softmax_bits,
                       multiplier_bits=a.multiplier_bits, act_calib=a.act_calib, gelu=a.gelu,
                       softmax=a.softmax, layernorm=a.layernorm, overrides=overrides)


def build_program(a, graph=None, data=None):
    """model + data + settings -> (graph, data, program): the shared front half of run/golden/select."""
    from . import pipeline as ip
    graph = graph or ip.load(a.model)
    data = data or ip.open_data(a.data)
    cfg = config_from_args(a)
    observers = ip.calibrate(graph, data.calibration(a.calib))
    return graph, data, ip.compile(graph, observers, cfg)


@command("run", "quantize a model and run it integer-only on a data set")
def cmd_run(argv):
    p = argparse.ArgumentParser(prog="intsim run", description="Post-training quantize an ONNX ViT, "
                                "run it integer-only, and compare it with float.")
    add_model_args(p)
    add_quant_args(p)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--save-program", default=None, help="write the integer program (PATH.json + PATH.npz)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)
    from . import pipeline as ip
    graph, data, program = build_program(a)
    if a.save_program:
        program.save(a.save_program)
    images, labels = data.evaluation(a.limit)
    report = ip.evaluate(graph, program, images, labels, batch=a.batch)
    report.update(model=graph.meta.get("path"), data=data.name, config=program.meta["config"])
    if a.json:
        print(json.dumps(report))
        return 0
    cfg = program.meta["config"]
    print(f"model     {report['model']}")
    print(f"data      {data.name}: {report['images']} images, calibrated on {a.calib}")
    print(f"config    W{cfg['wbits']}A{cfg['abits']} residual {cfg['residual_bits']}b, gelu "
          f"{cfg['gelu']}, softmax {cfg['softmax']}, layernorm {cfg['layernorm']}")
    if report["float_top1"] is not None:
        print(f"float top-1    {100 * report['float_top1']:.2f} %")
        print(f"integer top-1  {100 * report['int_top1']:.2f} %")
    print(f"agreement      {100 * report['agreement']:.2f} %")
    print(f"logit SQNR     {report['logit_sqnr_db']:.2f} dB")
    print(f"speed          {report['images_per_s']:.1f} images/s (integer path)")
    return 0


def _load_commands():
    """Command modules register themselves with @command when imported."""
    import importlib
    for mod in ("golden_cli", "select", "sweep", "conformance_cli", "coverage_cli"):
        try:
            importlib.import_module(f"{__package__}.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.{mod}":
                raise


def main(argv=None):
    _load_commands()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"intsim {__version__}: bit-exact integer-only ViT simulator\n\ncommands:")
        for name, (_, h) in COMMANDS.items():
            print(f"  {name:<10}{h}")
        print("\n'intsim COMMAND --help' for a command's options")
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    if argv[0] not in COMMANDS:
        print(f"intsim: unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from .data import DataError
    try:
        return COMMANDS[argv[0]][0](argv[1:])
    except (ArithSpecError, DataError, ValueError, OSError) as e:
        print(f"intsim {argv[0]}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # run through the package's module so that command modules register where main() looks
    from intsim.cli import main as _main
    sys.exit(_main())
