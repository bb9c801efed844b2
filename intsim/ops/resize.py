"""Resize: (N, C, H, W) -> (N, C, Ho, Wo), nearest or bilinear, ONNX's coordinate transformation
modes (spec K9: nearest is an exact gather; bilinear uses P-bit integer weights and one rounding).

Lowering: the input is requantized, at the scale calibrated for the *output* (an interpolation
never leaves the range of its input, so the output needs no requantization of its own and its
consumer reads it as is), to the width data movement would carry it at (`Builder.carry_bits`:
`abits` when its readers are products, residual_bits, at most 16, when a reader wants more - a
Sigmoid, an output; docs/quantization.md Q12); index and weight tables are the op's integer
constants."""
import numpy as np

from ..kernels import KernelPlan
from ..kernels.resize import IN_BITS_MAX, RESIZE, resize_float, resize_tables
from .base import OpCost, OpDef, run_kernel, tensor_elements

ATTRS = ("mode", "coordinate_transformation_mode", "nearest_mode", "size")


def geometry(attrs):
    """The kernel plan options of a Resize node's or op's attributes."""
    return dict(out_hw=tuple(attrs["size"]), mode=attrs["mode"],
                coord_mode=attrs["coordinate_transformation_mode"], nearest_mode=attrs["nearest_mode"],
                scales=attrs.get("scales"))


class Resize(OpDef):
    semantic = "Resize"
    kind = "resize"
    spec = "K9"
    reads_narrow = True
    attrs = ATTRS

    def infer(self, node, in_shapes):
        x, size = in_shapes[0], tuple(node.attrs["size"])
        if len(x) != 3 or len(size) != 2 or min(size) < 1:
            self.bad(node, in_shapes, f"expects a (C, H, W) input and an output size (Ho, Wo), got {size}")
        try:
            resize_tables(x[1:], size, node.attrs.get("scales"), node.attrs["mode"],
                          node.attrs["coordinate_transformation_mode"], node.attrs["nearest_mode"])
        except ValueError as e:       # ArithSpecError: an unsupported mode, a bad scale
            self.bad(node, in_shapes, str(e))
        return [(x[0],) + size]

    def evaluate(self, node, inputs, dtype):
        x = inputs[0]
        g = geometry(node.attrs)
        tables = resize_tables(x.shape[2:], g["out_hw"], g["scales"], g["mode"], g["coord_mode"],
                               g["nearest_mode"])
        return [resize_float(x, tables)]

    def input_bits(self, b, node):
        return min(b.carry_bits(node.outputs[0]), IN_BITS_MAX)

    def reads_wide(self, b, node):
        return self.input_bits(b, node) > b.cfg.abits

    def lower(self, node, b):
        y = node.outputs[0]
        fmt = b.act_format(y, self.input_bits(b, node))
        s = b.act_scale(y, fmt)
        x = b.realise(node.inputs[0], fmt, s, f"{node.name}.in")
        plan = RESIZE.plan(s, fmt, b.shapes[node.inputs[0]][1:], **geometry(node.attrs))
        shape = b.shapes[node.inputs[0]][:1] + tuple(node.attrs["size"])
        out = b.add_tensor(node.name, fmt, s, shape)
        attrs = {k: node.attrs[k] for k in ATTRS} | (
            {"scales": [float(v) for v in node.attrs["scales"]]} if node.attrs.get("scales") else {})
        b.emit(self.kind, node.name, [x], [out], plan.consts, attrs, self.spec)
        b.bind(y, out, shape)

    def bind(self, op, program):
        x = program.tensors[op.inputs[0]]
        plan = KernelPlan(RESIZE.name, op.consts, x.fmt, program.tensors[op.outputs[0]].fmt,
                          info={"in_hw": tuple(x.shape[-2:])})
        RESIZE.check_consts(plan)
        return plan

    def run(self, op, inputs, plan, path):
        return [run_kernel(RESIZE, path, inputs, plan)]

    def cost(self, op, program):
        per = RESIZE.cost(program.tensors[op.outputs[0]].shape, self.bind(op, program))
        n = tensor_elements(program, op.outputs[0])
        return OpCost({k: v * n for k, v in per.items()})

    def const_formats(self, op, program):
        """K9.0's index and weight tables (the kernel's declaration)."""
        return RESIZE.const_formats(self.bind(op, program))

    def const_scales(self, op, program):
        return {name: None for name in op.consts}       # indices and weights: pure integers
