"""`intsim COMMAND ...`: dispatch to one module per command; every intsim error is one line."""
import _thread
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


class _InterruptsInCallbacks:
    """Ctrl-C or SIGTERM that lands while C code runs a Python callback (numba's compiler calls
    Python from LLVM through ctypes) is printed by ctypes as 'Exception ignored' and lost. This
    unraisable hook keeps it quiet and delivers the signal again a moment later, once the callback
    has returned (at once it would land in the hook or the callback again); an error the lost
    interrupt caused on the way out (a half-saved numba cache entry) counts as the interrupt."""
    REDELIVER_AFTER_S = 0.05

    def __init__(self):
        self.lost = None
        self.redelivery = None

    def __enter__(self):
        self.previous = sys.unraisablehook
        sys.unraisablehook = self.hook
        return self

    def __exit__(self, *exc):
        sys.unraisablehook = self.previous
        if self.redelivery is not None:
            self.redelivery.cancel()

    def hook(self, unraisable):
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            return self.previous(unraisable)
        self.lost = unraisable.exc_value
        signum = signal.SIGTERM if isinstance(self.lost, Terminated) else signal.SIGINT
        self.redelivery = threading.Timer(self.REDELIVER_AFTER_S, _thread.interrupt_main, [signum])
        self.redelivery.daemon = True
        self.redelivery.start()

    def run(self, command, argv):
        try:
            status = command(argv)
        except KeyboardInterrupt:
            raise
        except Exception:
            if self.lost is None:
                raise
            raise self.lost from None
        if self.lost is not None:       # the command ended before the interrupt came back
            raise self.lost
        return status


def main(argv=None):
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")       # the start-up line of intsim/__init__.py, if any
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
        with interrupt_on_term(), _InterruptsInCallbacks() as callbacks:
            return callbacks.run(COMMANDS[argv[0]][0], argv[1:])
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
