"""Resize of the spatial axes of an (N, C, H, W) tensor (opset >= 11): nearest or linear, with the
coordinate transformation modes of intsim.kernels.resize; sizes or scales are constants (a size
computed from an image-path tensor's Shape is one at the concrete batch)."""
import numpy as np

from ...kernels.resize import COORDINATE_MODES, MODES, NEAREST_MODES
from ..errors import need
from .registry import matcher


def _optional_constant(m, n, i):
    """Input i of n as a constant array, or None when absent or empty."""
    if len(n.inputs) <= i or not n.inputs[i]:
        return None
    v = np.asarray(m.c(n.inputs[i]))
    return v if v.size else None


def _check_attributes(m, n):
    a = n.attrs
    mode, coord = a.get("mode", "nearest"), a.get("coordinate_transformation_mode", "half_pixel")
    nearest = a.get("nearest_mode", "round_prefer_floor")
    need(m.opset >= 11, f"Resize of opset {m.opset} (before 11) is not supported")
    need(mode in MODES, f"mode {mode!r} is not supported (only {', '.join(MODES)})")
    need(coord in COORDINATE_MODES, f"coordinate_transformation_mode {coord!r} is not supported "
                                    f"(only {', '.join(COORDINATE_MODES)})")
    need(mode != "nearest" or nearest in NEAREST_MODES, f"nearest_mode {nearest!r} is not supported")
    need(not a.get("antialias", 0), "antialias is not supported")
    need(a.get("keep_aspect_ratio_policy", "stretch") == "stretch",
         f"keep_aspect_ratio_policy {a.get('keep_aspect_ratio_policy')!r} is not supported")
    return mode, coord, nearest


@matcher("Resize", expects="Resize (nearest or linear) of the H and W axes of an (N, C, H, W) tensor")
def resize(m, n):
    x, y = n.inputs[0], n.outputs[0]
    mode, coord, nearest = _check_attributes(m, n)
    sx, sy = m.shapes[x], m.shapes[y]
    need(len(sx) == 4 and sx[:2] == sy[:2], f"it resizes {sx} to {sy}; only the last two axes of a "
                                            f"4-D tensor may change")
    scales = _optional_constant(m, n, 2)
    axes = [int(v) % 4 for v in n.attrs.get("axes", range(4))]
    if scales is not None:
        full = dict(zip(axes, scales.reshape(-1).tolist()))
        need(full.get(0, 1.0) == 1.0 and full.get(1, 1.0) == 1.0, f"its scales {scales} resize N or C")
        scales = [float(np.float32(full.get(2, 1.0))), float(np.float32(full.get(3, 1.0)))]
    attrs = dict(mode=mode, coordinate_transformation_mode=coord, nearest_mode=nearest,
                 size=[int(sy[2]), int(sy[3])])
    if scales is not None:
        attrs["scales"] = scales
    m.emit("Resize", [m.sem(x)], 1, [n], [y], attrs=attrs, role="resize", scope=n.scope)
