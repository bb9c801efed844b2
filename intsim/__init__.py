"""intsim: a bit-exact integer reference simulator for integer-only Vision Transformers."""
__version__ = "0.1.0"
from .arith import SPEC_VERSION  # noqa: E402,F401
