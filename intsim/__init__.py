"""intsim: a bit-exact integer reference simulator for integer-only Vision Transformers."""
import os
import signal
import sys

if os.path.basename(sys.argv[0]) == "intsim" or sys.argv[0] == "-m":
    # the `intsim` command starting up (its script, or `python -m intsim`): Ctrl-C during the
    # imports below ends it with one line, not an import traceback; the command's own handling
    # (cli/commands.py) takes over once it runs
    def _interrupted_while_starting(signum, frame):
        sys.stderr.write("intsim: interrupted\n")
        os._exit(130)
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    if sys.stderr.isatty():             # the imports take seconds: say so on a terminal (commands.main
        sys.stderr.write("intsim: starting (loading NumPy, numba, ONNX) ...\r")    # clears the line)
        sys.stderr.flush()

# numba/OpenMP worker threads that spin after a parallel region slow the next BLAS call several
# times over on small machines; passive waiting costs nothing measurable here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import numba_cache  # noqa: E402

# before any numba function is compiled and saved: several intsim processes may fill one cache
numba_cache.install()

from .arith import SPEC_VERSION  # noqa: E402,F401
from .version import __version__  # noqa: E402,F401
