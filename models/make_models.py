"""Generate DeiT/ViT-shaped ONNX models with seeded random weights (no pretrained weights exist
offline; these graphs are for speed, import robustness and agreement-with-float studies).

    python models/make_models.py deit-tiny deit-small vit-base [--form legacy|dynamo|both]

`generated_model(config, form)` returns the path of a cached ONNX file, generating it with torch on
first use. Cache: $INTSIM_MODEL_CACHE or ~/.cache/intsim/models (outside the repository). Files are
deterministic for a given (config, form, depth, seed, INIT_VERSION, torch version): the file name
carries all but the torch version.

Shapes: models/vit.py CONFIGS (DeiT/ViT: 224x224, patch 16, 3 channels, 1000 classes; fmnist-vit:
28x28, patch 4, 1 channel, 10 classes). `depth` overrides the number of blocks (quick variants).

Inputs: pixels / 255 in [0, 1], intsim's one input convention. The weights are drawn for inputs of
unit scale (ImageNet-normalised RGB, (pixels/255 - mean) / std with mean (0.485, 0.456, 0.406),
std (0.229, 0.224, 0.225)) and that normalisation is then folded exactly into the patch embedding
(`fold_normalisation`); recorded in the model's metadata_props ("intsim.preprocess").

Random weights ("informative" init; INIT_VERSION 2 = v1 + the folded normalisation). timm's init (trunc-normal std 0.02, zero
biases, LayerNorm gamma 1, beta 0) makes a random ViT degenerate: q.k is ~0 so every attention row
is uniform, GELU sees only |x| << 1 (its linear part), the residual stream barely changes, and the
logits are nearly equal for every image. Instead each weight matrix is drawn N(0, (g / sqrt(fan_in))^2)
(truncated at 2 std), so activations stay at unit scale, with gains g that put every non-linearity
in its interesting range:
  - patch embedding g = 1;
  - qkv g = 1.75: attention rows peaked but not one-hot (DeiT-Tiny on 7 scikit-image photos:
    scores std 3.7-4.6, mean row maximum 0.40 in block 0 falling to 0.19 in block 11);
  - fc1 g = 1.5: GELU inputs with std 1.5-1.7, across its curved region and negative tail;
  - proj, fc2 g = 0.5: the residual stream grows slowly over the blocks (std 0.8 -> 3.4);
  - head g = 2.5: logits with std ~2.6; the 7 photos get 5 different top-1 classes;
  - biases N(0, 0.1^2), non-zero so bias quantization is exercised;
  - LayerNorm gamma = 1 + N(0, 0.2^2), beta = N(0, 0.1^2), and 2 % of channels with gamma x4
    (the outlier channels of real ViTs that quantizers must survive);
  - cls token N(0, 1), position embedding N(0, 0.5^2).
Sharper attention (qkv g = 2) makes the network chaotic enough that float32 rounding alone moves
DeiT-Tiny's logits by ~2e-4 (float32 vs float64, or ONNX Runtime vs NumPy); with g = 1.75 that is
~3e-5, so "matches ONNX Runtime to 1e-4" stays a meaningful test.
"""
import argparse
import functools
import hashlib
import importlib.util
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
FORMS = ("legacy", "dynamo")
INIT_VERSION = 2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESS = "pixels/255 (ImageNet mean/std normalisation folded into the patch embedding)"


def cache_dir():
    return Path(os.environ.get("INTSIM_MODEL_CACHE") or Path.home() / ".cache" / "intsim" / "models")


@functools.lru_cache(maxsize=1)
def _vit():
    """vit.py beside this file, loaded by path (models/ is not a package; nothing joins sys.path)."""
    spec = importlib.util.spec_from_file_location("intsim_models_vit", HERE / "vit.py")
    vit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vit)
    return vit


def model_config(config, depth=None):
    cfgs = _vit().CONFIGS
    if config not in cfgs:
        raise ValueError(f"unknown config {config!r}; choose from {', '.join(cfgs)}")
    cfg = dict(cfgs[config])
    if depth is not None:
        if not (isinstance(depth, int) and depth >= 1):
            raise ValueError(f"depth must be a positive int, got {depth!r}")
        cfg["depth"] = depth
    return cfg


def input_shape(config):
    cfg = {**dict(img_size=224, in_chans=3), **model_config(config)}
    return (cfg["in_chans"], cfg["img_size"], cfg["img_size"])


def informative_init(model, seed):
    """Re-draw every parameter as described in the module docstring (deterministic in seed)."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    normal = truncated_normal(gen)
    gains = {"qkv": 1.75, "fc1": 1.5, "proj": 0.5, "fc2": 0.5, "head": 2.5}
    with torch.no_grad():
        for name, mod in model.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
                init_weight_and_bias(mod, gains.get(leaf, 1.0), normal)
            elif isinstance(mod, torch.nn.LayerNorm):
                init_layernorm(mod, normal, gen)
        model.cls_token.copy_(normal(model.cls_token.shape, 1.0))
        model.pos_embed.copy_(normal(model.pos_embed.shape, 0.5))
    return model


def truncated_normal(gen):
    """normal(shape, std): N(0, std^2) truncated at 2 std, float32, drawn from the generator gen."""
    import torch

    def normal(shape, std):
        return (torch.randn(shape, generator=gen).clamp_(-2, 2) * std).float()
    return normal


def init_weight_and_bias(mod, gain, normal, fan_in=None):
    """Weight N(0, (gain / sqrt(fan_in))^2), bias N(0, 0.1^2) (if the layer has one). fan_in defaults
    to the inputs of one output (Linear, Conv)."""
    fan_in = fan_in or mod.weight[0].numel()
    mod.weight.copy_(normal(mod.weight.shape, gain / fan_in ** 0.5))
    if mod.bias is not None:
        mod.bias.copy_(normal(mod.bias.shape, 0.1))


def init_layernorm(mod, normal, gen):
    """gamma = 1 + N(0, 0.2^2) with 2 % of the channels x4 (outliers), beta = N(0, 0.1^2)."""
    import torch
    gamma = 1 + normal(mod.weight.shape, 0.2)
    n_out = max(1, round(0.02 * gamma.numel()))
    idx = torch.randperm(gamma.numel(), generator=gen)[:n_out]
    gamma[idx] *= 4
    mod.weight.copy_(gamma)
    if mod.bias is not None:
        mod.bias.copy_(normal(mod.bias.shape, 0.1))


def fold_normalisation(model, mean, std):
    """Make a model that expects (pixels/255 - mean)/std take pixels/255 instead, exactly: the patch
    embedding is linear, so W' = W / std[c] and b' = b - sum W[:, c] mean[c] / std[c]. intsim then
    has one input convention for every model (pixels / 255)."""
    fold_normalisation_into_conv(model.patch_embed.proj, mean, std)
    return model


def fold_normalisation_into_conv(conv, mean, std):
    """fold_normalisation on one unpadded Conv2d (a patch embedding); gives it a bias if it had none."""
    import torch
    if any(p != 0 for p in conv.padding) or conv.in_channels != len(mean):
        raise ValueError(f"cannot fold a {len(mean)}-channel normalisation into {conv}: it is exact "
                         "only for an unpadded convolution over the image channels")
    if conv.bias is None:
        conv.bias = torch.nn.Parameter(torch.zeros(conv.out_channels, dtype=conv.weight.dtype))
    with torch.no_grad():
        s = torch.tensor(std, dtype=conv.weight.dtype).view(1, -1, 1, 1)
        m = torch.tensor(mean, dtype=conv.weight.dtype).view(1, -1, 1, 1)
        w = conv.weight / s
        conv.bias.sub_((w * m).sum(dim=(1, 2, 3)))
        conv.weight.copy_(w)
    return conv


def build_model(config, depth=None, seed=0):
    import torch
    vit = _vit()
    torch.manual_seed(seed)
    model = informative_init(vit.VisionTransformer(**model_config(config, depth)), seed)
    if input_shape(config)[0] == 3:
        fold_normalisation(model, IMAGENET_MEAN, IMAGENET_STD)
    return model.eval()


def _file_name(config, form, depth, seed):
    d = "" if depth is None else f"_d{depth}"
    return f"{config}{d}_{form}_seed{seed}_init{INIT_VERSION}.onnx"


def generated_model(config, form, depth=None, seed=0, cache=None):
    """Path of the cached ONNX file for (config, form, depth, seed); generated on first use."""
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; use one of {', '.join(FORMS)}")
    model_config(config, depth)                          # validate before touching the disk
    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / _file_name(config, form, depth, seed)
    if path.is_file():
        return path
    model = build_model(config, depth, seed)
    meta = {"intsim.config": config, "intsim.depth": str(model_config(config, depth)["depth"]),
            "intsim.seed": str(seed), "intsim.form": form, "intsim.init": f"informative v{INIT_VERSION}",
            "intsim.preprocess": PREPROCESS if input_shape(config)[0] == 3 else "pixels/255"}
    return write_model(path, lambda tmp: export_quietly(model, tmp, input_shape(config), form), meta)


def write_model(path, export, meta):
    """Write the ONNX file `path` with `export(tmp_path)`, adding `meta` and the weights' SHA-1 to its
    metadata_props. A unique temporary name, then an atomic rename: concurrent callers never see a
    partial file."""
    import onnx
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        export(tmp)
        proto = onnx.load(str(tmp))
        meta = {**meta, "intsim.weights_sha1": hashlib.sha1(b"".join(
            t.raw_data for t in proto.graph.initializer)).hexdigest()}
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def export_quietly(model, path, in_shape, form, **export_options):
    """models/vit.export_onnx without the dynamo exporter's progress chatter on stdout."""
    import contextlib
    import io
    import logging
    import warnings
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)          # "torchvision is not installed" notices
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _vit().export_onnx(model, path, in_shape, form, **export_options)
    finally:
        log.setLevel(level)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", nargs="+", help="deit-tiny deit-small vit-base fmnist-vit")
    ap.add_argument("--form", choices=FORMS + ("both",), default="both")
    ap.add_argument("--depth", type=int, default=None, help="override the number of blocks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=None, help=f"output folder (default {cache_dir()})")
    args = ap.parse_args(argv)
    forms = FORMS if args.form == "both" else (args.form,)
    for config in args.configs:
        for form in forms:
            print(generated_model(config, form, args.depth, args.seed, args.cache), flush=True)


if __name__ == "__main__":
    main()
