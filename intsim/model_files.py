"""Where model files come from (one documented rule, the same in a checkout and in an install).

- The shipped Fashion-MNIST ViT is package data: intsim/shipped/ (in the repository its entries
  link to models/, in an installed package they are copies). $INTSIM_MODELS names another folder
  to take it from.
- The names deit-tiny, deit-small, vit-base (optionally ':legacy') are seeded random-weight graphs
  generated on first use by make_models.py (shipped beside the model, loaded by path; needs torch)
  and cached in $INTSIM_MODEL_CACHE or ~/.cache/intsim/models.
- Anything else is a path to an ONNX file.
"""
import importlib.util
import os
from pathlib import Path

from .errors import DataError

SHIPPED = Path(__file__).resolve().parent / "shipped"
DEFAULT_MODEL_NAME = "fmnist_vit_dynamo18.onnx"
GENERATED = ("deit-tiny", "deit-small", "vit-base")


def models_dir():
    return Path(os.environ.get("INTSIM_MODELS") or SHIPPED)


def default_model():
    path = models_dir() / DEFAULT_MODEL_NAME
    if not path.exists():
        raise DataError(f"the shipped model {path} is missing (INTSIM_MODELS names the folder holding "
                        f"{DEFAULT_MODEL_NAME})")
    return path


def model_script(name):
    """A model-making script shipped beside the model (make_models.py, ...), loaded by path."""
    path = SHIPPED / name
    if not path.exists():
        raise DataError(f"{path} is missing: this installation has no model scripts")
    spec = importlib.util.spec_from_file_location(f"intsim_shipped_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resolve_model(model=None):
    """The ONNX path for `model` (None: the shipped model), generating a named model if needed."""
    if not model:
        return default_model()
    name, _, form = str(model).partition(":")
    if name in GENERATED and not Path(model).exists():
        try:
            make_models = model_script("make_models.py")
            return make_models.generated_model(name, form or "dynamo")
        except ImportError as e:
            raise DataError(f"model {model!r}: generating it needs torch ({e})") from None
    return Path(model)
