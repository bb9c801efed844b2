"""PatchEmbed: the patchify convolution (kernel = stride = patch, no padding) as a Linear on
unfolded patches (spec K1, K1.4: patches in row-major order, features in (C, ph, pw) order, the
order of the Conv weight flattened). (N, C, H, W) -> (N, P, D); rows/columns that do not fill a
whole patch are dropped, as the convolution does."""
import numpy as np

from .. import reproducible
from ..errors import GraphError, ProgramError
from .linear import Linear, quantize_linear


def fold_normalisation_into_conv(node, mean, std):
    """W / std per input channel, b - sum W * mean / std (float64): exact in real arithmetic for a
    convolution without padding (padding would be 0 after the normalisation, not before)."""
    w = node.params["weight"].astype(np.float64)
    if w.shape[1] != mean.size or std.size != mean.size:
        raise GraphError(f"node {node.name!r}: a normalisation of {mean.size} channels for a weight "
                         f"{w.shape}")
    bias = node.params.get("bias", np.zeros(w.shape[0])).astype(np.float64)
    m, s = mean.reshape(1, -1, 1, 1), std.reshape(1, -1, 1, 1)
    node.params["weight"] = w / s
    node.params["bias"] = bias - reproducible.row_sums(w * m / s, (1, 2, 3)).reshape(-1)


def patch_gram_name(node):
    """The observer holding X^T X of a PatchEmbed's unfolded input patches."""
    return f"{node.inputs[0]}#patches{int(node.attrs['patch'])}"


def unfold_patches(x, p):
    """(N, C, H, W) -> (N, P, C*p*p), patches row-major, features in (C, ph, pw) order."""
    n, c, h, w = x.shape
    gh, gw = h // p, w // p
    x = x[:, :, :gh * p, :gw * p].reshape(n, c, gh, p, gw, p).transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(n, gh * gw, c * p * p)


class PatchEmbed(Linear):
    semantic = "PatchEmbed"
    kind = "patch_embed"
    gram_input = False      # no Linear-input statistics: its patches' X^T X is calibration_grams
    params = ("weight", "bias")
    optional_params = ()
    attrs = ("patch",)

    def infer(self, node, in_shapes):
        x, w = in_shapes[0], node.params["weight"].shape
        patch = int(node.attrs["patch"])
        if (len(x) != 3 or len(w) != 4 or w[1] != x[0] or w[2:] != (patch, patch)
                or node.params["bias"].shape != w[:1]):
            self.bad(node, in_shapes, f"weight {w} / bias {node.params['bias'].shape} / patch {patch} "
                                      f"do not fit")
        if x[1] < patch or x[2] < patch:
            self.bad(node, in_shapes, f"image smaller than the patch {patch}")
        return [((x[1] // patch) * (x[2] // patch), w[0])]

    def evaluate(self, node, inputs, dtype):
        w = node.params["weight"]
        cols = unfold_patches(inputs[0], int(node.attrs["patch"]))
        return [reproducible.linear(cols, w.reshape(w.shape[0], -1), node.params["bias"], dtype)]

    def calibration_grams(self, node):
        p = int(node.attrs["patch"])
        return {node.inputs[0]: [(patch_gram_name(node), lambda x: unfold_patches(x, p))]}

    def lower(self, node, b):
        """The weight GPTQ-rounded against the calibration patches' X^T X whenever calibration took
        it (docs/quantization.md Q11), damped as the layer's weight width says (Q16): raw pixels
        are all positive and neighbours nearly equal, so nearest rounding errors add up
        coherently over a patch."""
        src = node.inputs[0]
        w = node.params["weight"]
        c, h, wd = b.shapes[src]
        p = int(node.attrs["patch"])
        x = b.realised[src]
        stats = b.obs.get(patch_gram_name(node))
        consts, attrs, acc_scale = quantize_linear(b.layer_config(node.name), float(b.scale_of(x)), w.reshape(w.shape[0], -1),
                                                   node.params.get("bias"), {"patch": p},
                                                   hessian=None if stats is None else stats.gram)
        self.emit_product(b, node, x, consts, attrs, acc_scale, ((h // p) * (wd // p), w.shape[0]))

    def bind(self, op, program):
        """The patch size checked against the image; the weight's shape (Out, C p p) is its
        register's (Linear.bind)."""
        patch, chw = op.attrs.get("patch"), program.tensors[op.inputs[0]].shape
        if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1 or len(chw) != 3:
            raise ProgramError(f"patch = {patch!r} does not fit an input {chw}")
        return super().bind(op, program)

    def operand(self, x, op):
        return unfold_patches(x, op.attrs["patch"])

    def fold_input_normalisation(self, node, mean, std):
        fold_normalisation_into_conv(node, mean, std)

    def inner(self, op, program):
        channels = program.tensors[op.inputs[0]].shape[0]
        return channels * int(op.attrs["patch"]) ** 2
