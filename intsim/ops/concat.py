"""Concat: tensors and constants joined along one axis of a sample (spec K6.6): class,
distillation and register tokens before the patches, the four strided views of Swin's patch
merging, the two halves of a cyclic shift. `pieces` lists the parts in order: an int is an input's
position, a string names a constant parameter (per sample, broadcast over the batch).

Lowering: every part is brought to one format and scale: the output's calibrated scale at the
widest of the inputs' formats (at most residual_bits); constants are quantized there (ties to even,
saturated like any value of that format). Then the integers only move."""
import numpy as np

from .. import arith
from ..arith import ConstFormat
from ..errors import ProgramError
from ..kernels import check_registers
from .base import OpDef
from .cls_pos import const_at_scale


class Concat(OpDef):
    semantic = "Concat"
    kind = "concat"
    spec = "K6.6"
    n_inputs = None
    attrs = ("axis", "pieces")
    movement = True

    def allowed_params(self, node):
        return tuple(p for p in node.attrs.get("pieces", ()) if isinstance(p, str))

    def _parts(self, node, in_shapes):
        return [in_shapes[p] if isinstance(p, int) else node.params[p].shape for p in node.attrs["pieces"]]

    def infer(self, node, in_shapes):
        axis, pieces = int(node.attrs["axis"]), node.attrs["pieces"]
        used = sorted(p for p in pieces if isinstance(p, int))
        parts = self._parts(node, in_shapes) if used == list(range(len(in_shapes))) else None
        if (parts is None or not 0 <= axis < len(parts[0])
                or any(len(s) != len(parts[0]) or s[:axis] + s[axis + 1:] != parts[0][:axis] + parts[0][axis + 1:]
                       for s in parts)):
            self.bad(node, in_shapes, f"pieces {pieces} (shapes {parts}) cannot be joined on axis {axis}")
        return [parts[0][:axis] + (sum(s[axis] for s in parts),) + parts[0][axis + 1:]]

    def _join(self, pieces, axis, inputs, consts, dtype):
        n = inputs[0].shape[0]
        arrays = [inputs[p] if isinstance(p, int) else
                  np.broadcast_to(np.asarray(consts[p], dtype=dtype), (n,) + np.shape(consts[p]))
                  for p in pieces]
        return np.concatenate(arrays, axis=int(axis) + 1).astype(dtype, copy=False)

    def evaluate(self, node, inputs, dtype):
        return [self._join(node.attrs["pieces"], node.attrs["axis"], inputs, node.params, dtype)]

    def lower(self, node, b):
        bits = max(min(b.tensors[b.realised[t]].fmt.bits, b.cfg.residual_bits) for t in node.inputs)
        fmt = b.act_format(node.outputs[0], bits)
        s = b.act_scale(node.outputs[0], fmt)
        ins = [b.realise(t, fmt, s, f"{node.name}.in{i}") for i, t in enumerate(node.inputs)]
        consts = {k: const_at_scale(v, s, fmt) for k, v in node.params.items()}
        shape = b.infer(node)[0]
        out = b.add_tensor(node.name, fmt, s, shape)
        b.emit(self.kind, node.name, ins, [out], consts, dict(node.attrs), self.spec)
        b.bind(node.outputs[0], out, shape)

    def bind(self, op, program):
        """The constants are the pieces the attributes name, within the output's format."""
        out = program.tensors[op.outputs[0]]
        names = set(self.allowed_params(op))
        if set(op.consts) != names:
            raise ProgramError(f"concat: constants {sorted(op.consts)}, the pieces name {sorted(names)}")
        self.check_shapes(op, program, {k: np.asarray(v) for k, v in op.consts.items()})
        check_registers(f"{op.kind} {op.name!r}", self.const_formats(op, program), op.consts)
        for t in op.inputs:
            if program.tensors[t].fmt != out.fmt:
                raise ProgramError(f"concat: input {t!r} is not in the output's format")
        return out.fmt.storage

    def run(self, op, inputs, storage, path):
        return [self._join(op.attrs["pieces"], op.attrs["axis"], inputs, op.consts, storage)]

    def const_formats(self, op, program):
        """Each constant piece the attributes name: a value of the output's format (its shape is
        checked against the other pieces by the shape rule, at bind)."""
        fmt = program.tensors[op.outputs[0]].fmt
        return {name: ConstFormat.of(fmt, tuple(np.shape(op.consts[name])) if name in op.consts else None)
                for name in self.allowed_params(op)}

    def const_scales(self, op, program):
        s = program.tensors[op.outputs[0]].scale
        return {name: s for name in op.consts}
