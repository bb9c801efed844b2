"""`intsim COMMAND ...`: dispatch to one module per command; every intsim error is one line."""
import signal
import sys
import threading
import warnings

from ..errors import IntsimError, IntsimWarning, Terminated
from ..experiment.tasks import interrupt_on_term
from ..version import __version__
from . import conformance, golden, layers, run, select, sweep

COMMANDS = {
    "run": (run.main, "quantize a model and run it integer-only on a data set"),
    "golden": (golden.golden_main, "dump golden vectors (every op's integer tensors and constants) for RTL"),
    "compare": (golden.compare_main, "compare a dump (RTL, another tool) with a golden dump, bit for bit"),
    "layers": (layers.main, "per-tensor SQNR against float through depth (where a model loses fidelity)"),
    "select": (select.main, "choose each non-linear layer's approximation by the unified metric Omega"),
    "sweep": (sweep.main, "accuracy over a grid of bit widths and kernel choices (parallel, resumable)"),
    "conformance": (conformance.conformance_main,
                    "write directed + random conformance vectors of every kernel (golden format)"),
    "coverage": (conformance.coverage_main,
                 "report which spec coverage bins a golden or conformance dump hits"),
}


def main(argv=None):
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)    # Ctrl-C: KeyboardInterrupt again
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"intsim {__version__}: bit-exact integer-only ViT simulator\n\ncommands:")
        width = max(map(len, COMMANDS)) + 2          # the longest name still has two spaces
        for name, (_, h) in COMMANDS.items():
            print(f"  {name:<{width}}{h}")
        print("\n'intsim COMMAND --help' for a command's options")
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    if argv[0] not in COMMANDS:
        print(f"intsim: unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    show = warnings.showwarning

    def one_line(message, category, *args, **kwargs):
        if issubclass(category, IntsimWarning):
            print(f"intsim {argv[0]}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, *args, **kwargs)
    warnings.showwarning = one_line
    try:
        with interrupt_on_term():
            return COMMANDS[argv[0]][0](argv[1:])
    except (IntsimError, OSError) as e:
        print(f"intsim {argv[0]}: error: {e}", file=sys.stderr)
        return 1
    except Terminated:
        print(f"intsim {argv[0]}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"intsim {argv[0]}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show
