"""intsim: a bit-exact integer reference simulator for integer-only Vision Transformers."""
import os

# numba/OpenMP worker threads that spin after a parallel region slow the next BLAS call several
# times over on small machines; passive waiting costs nothing measurable here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import numba_cache  # noqa: E402

# before any numba function is compiled and saved: several intsim processes may fill one cache
numba_cache.install()

from .arith import SPEC_VERSION  # noqa: E402,F401
from .version import __version__  # noqa: E402,F401
