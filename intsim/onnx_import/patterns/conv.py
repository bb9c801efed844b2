"""Convolution patterns (registered after the patch embedding, which is tried first at a Conv):
Conv and ConvTranspose with a constant weight, any kernel, strides, pads (explicit, VALID, SAME_*,
or a ConvTranspose's output_shape), dilations and groups, with a BatchNormalization after them
folded into their weight and bias; a BatchNormalization that cannot be folded (not after a
convolution, or after one whose output has other readers) becomes a depthwise 1x1 Conv (a per-channel
affine); GlobalAveragePool."""
import numpy as np

from ...kernels.conv import ConvGeometry
from ..errors import Miss, applies, need
from .registry import matcher


def _ints(n, name, default):
    return tuple(int(v) for v in n.attrs.get(name, default))


def _same_pads(in_hw, geo, mode):
    """Conv auto_pad SAME_UPPER / SAME_LOWER: the output is ceil(in / stride), the extra pad at the
    end (UPPER) or the start (LOWER), as ONNX Runtime splits it."""
    heads, tails = [], []
    for a, n in enumerate(in_hw):
        out = -(-n // geo.strides[a])
        total = max(0, (out - 1) * geo.strides[a] + (geo.kernel[a] - 1) * geo.dilations[a] + 1 - n)
        head = (total + 1) // 2 if mode == "SAME_LOWER" else total // 2
        heads.append(head)
        tails.append(total - head)
    return tuple(heads + tails)


def _transpose_pads(in_hw, out_hw, geo, mode):
    """ConvTranspose pads that give the output size the model has (output_shape, auto_pad SAME_*),
    split as ONNX Runtime splits them (the odd one at the start for SAME_UPPER, else at the end)."""
    heads, tails = [], []
    for a, n in enumerate(in_hw):
        total = max(0, geo.strides[a] * (n - 1) + geo.output_padding[a]
                    + (geo.kernel[a] - 1) * geo.dilations[a] + 1 - out_hw[a])
        head = total - total // 2 if mode == "SAME_UPPER" else total // 2
        heads.append(head)
        tails.append(total - head)
    return tuple(heads + tails)


def geometry(m, n, w, transpose):
    """The ConvGeometry of a Conv / ConvTranspose node with weight w, padding resolved; Broken if
    the node is not a 2-D convolution intsim supports."""
    need(w.ndim == 4, f"only 2-D convolutions are supported (weight of shape {w.shape})")
    x, y = m.shapes[n.inputs[0]], m.shapes[n.outputs[0]]
    geo = ConvGeometry(_ints(n, "kernel_shape", w.shape[2:]), _ints(n, "strides", (1, 1)),
                       _ints(n, "pads", (0, 0, 0, 0)), _ints(n, "dilations", (1, 1)),
                       int(n.attrs.get("group", 1)), _ints(n, "output_padding", (0, 0)))
    need(not geo.check(), geo.check())
    auto = n.attrs.get("auto_pad", "NOTSET")
    need(auto in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"), f"auto_pad {auto!r} is not supported")
    pads = geo.pads if auto == "NOTSET" else (0, 0, 0, 0)
    if transpose and (auto.startswith("SAME") or "output_shape" in n.attrs):
        pads = _transpose_pads(x[2:], y[2:], geo, auto)
    elif not transpose and auto.startswith("SAME"):
        pads = _same_pads(x[2:], geo, auto)
    geo = ConvGeometry(geo.kernel, geo.strides, pads, geo.dilations, geo.group, geo.output_padding)
    out = geo.transpose_out_size(x[2:]) if transpose else geo.out_size(x[2:])
    need(len(x) == 4 and tuple(out) == tuple(y[2:]),
         f"the geometry {geo} gives an output of {tuple(out)}, the model's is {tuple(y[2:])}")
    return geo


def batchnorm_affine(m, bn):
    """(a, c) with BatchNormalization(x) = a * x + c per channel (inference form), float64."""
    need(int(bn.attrs.get("training_mode", 0)) == 0 and len([t for t in bn.outputs if t]) == 1,
         f"{bn!r} runs in training mode")
    scale, bias, mean, var = (np.asarray(m.c(t), dtype=np.float64).reshape(-1) for t in bn.inputs[1:5])
    a = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
    return a, bias - mean * a


def _folded_batchnorm(m, t):
    """The BatchNormalization that alone reads conv output t, as (node, a, c), or None."""
    try:
        bn = m.sole(t, ("BatchNormalization",))
    except Miss:
        return None
    return (bn,) + batchnorm_affine(m, bn)


def _scale_output_channels(w, a, group, transpose):
    """The weight with output channel co multiplied by a[co]: Conv (Cout, C/g, kh, kw); ConvTranspose
    (Cin, Cout/g, kh, kw), where output channel g*Cout/g + j is w[g*Cin/g:(g+1)*Cin/g, j]."""
    if not transpose:
        return w * a.reshape(-1, 1, 1, 1)
    cin, cg = w.shape[:2]
    return (w.reshape(group, cin // group, cg, *w.shape[2:]) * a.reshape(group, 1, cg, 1, 1)).reshape(w.shape)


def _emit_conv(m, n, transpose):
    x = n.inputs[0]
    applies(x in m.live and len(n.inputs) > 1 and n.inputs[1] not in m.live, "its weight is not a constant")
    w = np.asarray(m.c(n.inputs[1]))
    geo = geometry(m, n, w, transpose)
    cout = w.shape[1] * geo.group if transpose else w.shape[0]
    b = m.c(n.inputs[2]).reshape(-1) if len(n.inputs) > 2 and n.inputs[2] else None
    out, claimed = n.outputs[0], [n]
    bn = _folded_batchnorm(m, out)
    if bn is not None:        # exact in real arithmetic: W*a per output channel, b*a + c
        node, a, c = bn
        w = _scale_output_channels(w, a, geo.group, transpose)
        b = (np.zeros(cout) if b is None else b) * a + c
        out, claimed = node.outputs[0], claimed + [node]
    params = dict(weight=np.ascontiguousarray(w))
    if b is not None:
        params["bias"] = np.asarray(b, dtype=w.dtype)
    m.emit("ConvTranspose" if transpose else "Conv", [m.sem(x)], 1, claimed, [out], params,
           geo.to_attrs(transpose), role="conv_transpose" if transpose else "conv", scope=n.scope)


@matcher("Conv", claims=("BatchNormalization",),
         expects="a 2-D Conv with a constant weight and an optional BatchNormalization after it")
def conv(m, n):
    _emit_conv(m, n, transpose=False)


@matcher("ConvTranspose", claims=("BatchNormalization",),
         expects="a 2-D ConvTranspose with a constant weight and an optional BatchNormalization after it")
def conv_transpose(m, n):
    _emit_conv(m, n, transpose=True)


@matcher("BatchNormalization",
         expects="a BatchNormalization (inference mode) of an (N, C, H, W) tensor, as a per-channel affine")
def batchnorm(m, n):
    x = n.inputs[0]
    need(len(m.shapes[x]) == 4, f"its input has shape {m.shapes[x]}; only (N, C, H, W) is supported")
    a, c = batchnorm_affine(m, n)
    channels = m.shapes[x][1]
    m.emit("Conv", [m.sem(x)], 1, [n], [n.outputs[0]], dict(weight=a.reshape(channels, 1, 1, 1), bias=c),
           ConvGeometry((1, 1), group=channels).to_attrs(), role="affine", scope=n.scope)


@matcher("GlobalAveragePool", expects="GlobalAveragePool of an (N, C, ...) tensor")
def global_average_pool(m, n):
    x = n.inputs[0]
    need(len(m.shapes[x]) >= 3, f"its input has shape {m.shapes[x]}")
    m.emit("GlobalAveragePool", [m.sem(x)], 1, [n], [n.outputs[0]], role="pool", scope=n.scope)
