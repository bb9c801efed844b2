"""Hadamard: a block Hadamard rotation of the last axis (spec K10), exact (sums only). An
integer-program op only: the compiler inserts it before the requantization of a Linear input it
rotates (docs/quantization.md Q8), so it has no semantic twin. attrs["block"] is B."""
import numpy as np

from ..arith import ArithSpecError, IntFormat
from ..errors import ProgramError
from ..kernels import hadamard
from .base import OpCost, OpDef, tensor_elements


class Hadamard(OpDef):
    kind = "hadamard"
    spec = "K10"

    def infer(self, node, in_shapes):
        return [in_shapes[0]]

    def bind(self, op, program):
        """The block is a power of two dividing the channels; the output has the format K10.2
        gives the input's (so no sum can overflow it)."""
        super().bind(op, program)
        self.check_shapes(op, program)
        x, z = program.tensors[op.inputs[0]], program.tensors[op.outputs[0]]
        block = op.attrs.get("block")
        try:
            hadamard.check(x.fmt, block, x.shape[-1])
        except ArithSpecError as e:
            raise ProgramError(str(e)) from None
        if z.fmt != hadamard.out_format(x.fmt, block):
            raise ProgramError(f"hadamard: output format {z.fmt} is not K10.2's "
                               f"{hadamard.out_format(x.fmt, block)} for a {x.fmt} input and block {block}")
        return int(block), z.fmt.storage

    def run(self, op, inputs, bound, path):
        block, storage = bound
        z = hadamard.reference(inputs[0], block) if path == "reference" else \
            hadamard.fast(inputs[0], block, fits_int32=True)        # bind checked K10.1's 32 bits
        return [z.astype(storage, copy=False)]

    def fuse_requant(self, op, bound, requantizer):
        """The rotated sums requantized in the same executor step (no check pass over the
        intermediate: K10.2 proves its range)."""
        block, _ = bound
        return lambda inputs: requantizer(hadamard.fast(inputs[0], block, fits_int32=True))

    def cost(self, op, program):
        n = int(op.attrs["block"]).bit_length() - 1          # n butterfly stages, one add each
        return OpCost({"add": tensor_elements(program, op.outputs[0]) * n})


def lower_rotation(b, float_name, block, label):
    """The rotated copy of float_name's integer tensor (one per tensor, shared by every reader),
    at its real scale / sqrt(B); bound under `rotated_name(float_name)` so that a reader realises
    it like any tensor (its requantization is the reader's operand). A tensor too wide for the
    sums to fit 32 bits (a 32-bit LayerNorm output) is first requantized to the widest input that
    fits (32 - n bits signed, 31 - n unsigned), at its calibrated max |x| (no clipping: the
    requantization after the rotation clips)."""
    name = rotated_name(float_name, block)
    if name in b.realised:
        return name
    x = b.realised[float_name]
    info = b.tensors[x]
    if hadamard.out_bits(info.fmt, block) > 32:
        signed = not b.observer(float_name).nonnegative
        fmt = IntFormat(32 - (int(block).bit_length() - 1) - (0 if signed else 1), signed=signed)
        x = b.realise(float_name, fmt, b.observer(float_name).scale(fmt, "minmax"), f"{label}.in")
        info = b.tensors[x]
    out = b.add_tensor(label, hadamard.out_format(info.fmt, block), float(info.scale) / np.sqrt(block),
                       info.shape)
    b.emit(Hadamard.kind, label, [x], [out], {}, {"block": int(block)}, Hadamard.spec)
    b.bind(name, out, b.shapes[float_name])
    return name


def rotated_name(float_name, block):
    """The name of a tensor's twin rotated by blocks of B: its observer (calibrated with rotate)
    and its realisation in the compiler."""
    return f"{float_name}#hadamard{int(block)}"
