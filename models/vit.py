"""A timm-compatible Vision Transformer, written out so that it exports to plain ONNX.

Used only for *making* models (training the Fashion-MNIST ViT, generating DeiT-shaped graphs).
Parameter names follow timm (patch_embed.proj, cls_token, pos_embed, blocks.N.norm1, attn.qkv,
attn.proj, norm2, mlp.fc1, mlp.fc2, norm, head) so a timm state dict loads unchanged. Attention is
written explicitly (no scaled_dot_product_attention) so the export is
MatMul(q*scale, k^T) -> Softmax -> MatMul(., v). Needs torch; the intsim runtime never imports it.
"""
import torch
from torch import nn


class PatchEmbed(nn.Module):
    def __init__(self, img_size, patch_size, in_chans, embed_dim):
        super().__init__()
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = q * self.scale
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact erf GELU: exports as Div -> Erf -> Add -> Mul -> Mul
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=192,
                 depth=12, num_heads=3, mlp_ratio=4.0):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        x = self.blocks(x)
        x = self.norm(x)
        return self.head(x[:, 0])


# Shapes of the models intsim is measured on (timm's definitions).
CONFIGS = {
    "fmnist-vit": dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=96,
                       depth=4, num_heads=4, mlp_ratio=2.0),
    "deit-tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "deit-small": dict(embed_dim=384, depth=12, num_heads=6),
    "vit-base": dict(embed_dim=768, depth=12, num_heads=12),
}


def export_onnx(model, path, in_shape, form, output_names=("logits",), legacy_opset=13,
                example_batch=1):
    """Export in one of the two forms intsim imports: 'legacy' (TorchScript, opset `legacy_opset`,
    LayerNorm decomposed below opset 17) or 'dynamo' (opset 18, LayerNormalization op). The input is
    "image"; batch is the only dynamic axis (model.forward's argument must be named x). Some models
    need example_batch >= 2 for the dynamo form: torch.export specialises a dimension traced at 1."""
    model.eval()
    example = torch.zeros(example_batch, *in_shape)
    output_names = list(output_names)
    if form == "legacy":
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=legacy_opset,
                          input_names=["image"], output_names=output_names,
                          dynamic_axes={name: {0: "batch"} for name in ["image"] + output_names})
    elif form == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=4096)
        prog = torch.onnx.export(model, (example,), dynamo=True, opset_version=18,
                                 input_names=["image"], output_names=output_names,
                                 dynamic_shapes={"x": {0: batch}}, external_data=False)
        prog.save(str(path), external_data=False)
    else:
        raise ValueError(f"unknown export form {form!r}: use 'legacy' or 'dynamo'")
