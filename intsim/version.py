"""The package version (one place; the package face and program metadata read it), and the
versions of the libraries that can change a program's integers."""
import importlib
import platform

__version__ = "0.1.0"

# Python and NumPy compute the float statistics calibration takes (with machine-independent
# arithmetic, docs/quantization.md Q18: recorded as provenance); numba compiles the kernels' fast
# paths; onnx imports the model; onnxruntime runs the exact integer GEMM engine.
VERSIONED = ("numpy", "numba", "onnx", "onnxruntime")


def library_versions():
    """{"python": ..., "numpy": ..., ...}: the versions of VERSIONED that import here."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue                # onnxruntime is optional
        versions[name] = getattr(module, "__version__", "unknown")
    return versions
