"""What every op kind defines, with one signature across all ops (docs/architecture.md).

An op kind is one file in intsim/ops/ holding one `OpDef` subclass: the semantic op of the float
graph (shape inference, float evaluation) and its integer form (lowering to integer ops with their
constants, execution through its kernel, cost, the declared formats of its constants). Everything
else dispatches through the registry (intsim/ops/__init__.py): the graph checks and the float
interpreter, the compiler, the executor, golden manifests, program loading and the cost model.

    infer(node, in_shapes) -> [out shape]            shapes without the batch dimension
    evaluate(node, inputs, dtype) -> [array]          float32 or float64 NumPy
    lower(node, b)                                    emits integer ops through the compiler's builder
    bind(op, program) -> bound                        run-time state prepared once (kernel plans,
                                                      float copies of weights); plain, explicit
    run(op, inputs, bound, path) -> [array]           path "fast" or "reference": which kernel
                                                      method runs (same integers either way)
    fuse_requant(op, bound, requantizer) -> run|None  the fast path's op + requant in one pass
    cost(op, program) -> OpCost                       integer work per image
    const_formats(op, program) -> {name: ConstFormat} the register of each constant and the values
                                                      the spec allows in it (arith.ConstFormat);
                                                      what golden manifests record and
                                                      ops.check_constants validates
    const_scales(op, program) -> {name: scale}        documentary real scale of a constant
    datapath_widths(op, program) -> {register: bits}  internal registers whose width the op's
                                                      constants decide (golden manifests)
"""
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from ..arith import MULTIPLIER_BITS_DEFAULT
from ..errors import GraphError, ProgramError
from ..kernels import KernelPlan, get_kernel
from ..kernels.base import ElementTable


@dataclass
class OpCost:
    """Integer work of one op for one image: operations by kind (non-linear kernels, requantizers)
    and the bit operations of its multiply-accumulates (MACs x operand bits x operand bits)."""
    ops: dict = field(default_factory=dict)
    mac_bitops: int = 0
    nonlinear: bool = False


class OpDef:
    semantic = None         # op name in the semantic graph ("Linear"); None: integer program only
    kind = ""               # op kind in the integer program ("linear")
    family = ""             # kernel family of a KernelOp ("gelu"); "" for every other op
    spec = ""               # docs/arithmetic.md section of the integer form
    n_inputs = 1            # None: any number >= 1 (Concat)
    n_outputs = 1
    params = ()             # required float parameters of the semantic node
    optional_params = ()
    attrs = ()              # required attributes of the semantic node
    movement = False        # data movement: integers move, nothing is computed (spec K6)
    reads_narrow = False    # realises its inputs at `abits` (a product or GELU reads them): what a
                            # data-movement op carrying an accumulator into it requantizes to
    gram_input = False      # a Linear layer: its first input's X^T X (GPTQ, QuantConfig.weight_round)
                            # and rotated twin (Q8, QuantConfig.rotate) are calibrated

    def calibration_grams(self, node):
        """{input tensor: [(observer name, rows)]}: X^T X that calibration always takes of an
        input, of the rows `rows(x)` gives (PatchEmbed's GPTQ rounding), besides the Linear
        inputs' (gram_input)."""
        return {}

    def reads_wide(self, b, node):
        """Whether this reader wants a tensor that data movement carries to it at residual_bits
        rather than abits (Builder.carry_bits): a Linear that rotates its input (Q8) requantizes it
        after the rotation itself."""
        return False

    def allowed_params(self, node):
        """Parameter names a node of this op may carry besides the required ones."""
        return tuple(self.optional_params)

    # --- the semantic (float) op ---------------------------------------------------------------
    def infer(self, node, in_shapes):
        raise NotImplementedError

    def evaluate(self, node, inputs, dtype):
        raise NotImplementedError

    # --- the integer op ------------------------------------------------------------------------
    def lower(self, node, b):
        raise NotImplementedError

    def bind(self, op, program):
        """Run-time state (default: none). Every op checks here that its constants and attributes
        are what its lowering can produce; this one has no constants."""
        if op.consts:
            raise ProgramError(f"{self.kind} has no constants, got {sorted(op.consts)}")
        return None

    def run(self, op, inputs, bound, path):
        raise NotImplementedError

    def cost(self, op, program):
        return OpCost()

    def fuse_requant(self, op, bound, requantizer):
        """For the executor's fast path: a function run(inputs) -> requantizer(this op's output),
        computed without storing the output (its one reader is that requant), or None when this
        op kind cannot do better than running the two ops one after the other (the default).
        `requantizer` is the requant's kernels.requantize.Requantizer (A6)."""
        return None

    def const_formats(self, op, program):
        """{constant name: arith.ConstFormat}: every constant the op has (none by default)."""
        return {}

    def const_scales(self, op, program):
        return {name: None for name in op.consts}

    def datapath_widths(self, op, program):
        """{register: bits}: none by default (the spec's fixed widths)."""
        return {}

    # --- where a product's contracted axis comes from (docs/quantization.md Q10) -----------------
    def contracted_axes(self, node, shapes):
        """A product of two activations: the axis of each input it sums over (per-sample axes),
        else None."""
        return None

    def contraction_source(self, node, out_index, axis, shapes):
        """How positions along `axis` of output `out_index` come from input 0, walked back by
        head_rotation.rotated_contractions: (input axis, run, section) with `run` the number of
        consecutive positions of the input's last axis that one step along `axis` walks (None:
        unchanged) and `section` the (offset, count) of the input's last axis it reads (None:
        all); None when the op does not carry the positions unchanged."""
        return None

    def fold_input_normalisation(self, node, mean, std):
        """Take x = (pixels / 255 - mean) / std per channel into the node's parameters, so that it
        reads pixels / 255 (graph.fold_input_normalisation); only convolutions can."""
        raise GraphError(f"node {node.name!r} ({node.op}) reads the input: an input normalisation folds "
                         f"only into a PatchEmbed or an unpadded group-1 Conv")

    # --- shared checks -------------------------------------------------------------------------
    def check_shapes(self, op, program, params=None):
        """At load time: the op's attributes (and constant shapes, `params`) give the output shapes
        the program declares, by the op's own shape rule; else a ProgramError."""
        node = SimpleNamespace(op=self.semantic, name=op.name, attrs=op.attrs, params=params or {})
        try:
            shapes = self.infer(node, [tuple(program.tensors[t].shape) for t in op.inputs])
        except (GraphError, KeyError, TypeError, ValueError, IndexError) as e:
            raise ProgramError(f"attributes {op.attrs} do not fit: {e}") from None
        want = [tuple(program.tensors[t].shape) for t in op.outputs]
        if [tuple(s) for s in shapes] != want:
            raise ProgramError(f"attributes {op.attrs} make shapes {shapes}, the program declares {want}")

    def bad(self, node, in_shapes, msg):
        """A GraphError naming the node, the op and the input shapes."""
        raise GraphError(f"node {node.name!r} ({node.op}): {msg}; input shapes {list(in_shapes)}")


def run_kernel(kernel, path, inputs, plan):
    """The kernel's fast or reference method: the only place a path is chosen."""
    return getattr(kernel, path)(inputs, plan)


def multiplier_bits(program):
    """The width B of the program's (m, k) multipliers (A2): its configuration's, else 31."""
    return int(program.meta.get("config", {}).get("multiplier_bits", MULTIPLIER_BITS_DEFAULT))


def tensor_elements(program, name):
    return int(np.prod(program.tensors[name].shape, dtype=np.int64))


class NonProductInput:
    """The input width of an elementwise kernel that no product reads (GELU, QuickGELU, Sigmoid):
    `gelu_bits`, or a `wide` pattern's (docs/quantization.md Q9, Q12); data movement carries a tensor
    to it at residual_bits when that is wider than abits."""
    reads_narrow = True

    def input_bits(self, b, node):
        return b.operand_bits(f"{node.name}.in", b.cfg.gelu_bits)

    def reads_wide(self, b, node):
        return self.input_bits(b, node) > b.cfg.abits


class KernelOp(OpDef):
    """An op computed by one candidate of a non-linear kernel family (GELU, Softmax, LayerNorm):
    its attrs name the family and the candidate, its constants are the candidate's plan."""

    def kernel(self, op):
        return get_kernel(op.attrs["family"], op.attrs["kernel"])

    def infer(self, node, in_shapes):
        return [in_shapes[0]]          # elementwise or along the last axis: the shape is kept

    def lower_at(self, b, node, fmt, **options):
        """The usual lowering: the input requantized to `fmt` at its calibrated scale, the layer's
        candidate planned for that scale with the family's options, the kernel op emitted."""
        src = node.inputs[0]
        kernel = b.kernel_for(node, self.family)
        x = b.realise(src, fmt, b.act_scale(src, fmt), f"{node.name}.in")
        self.emit(b, node, kernel, kernel.plan(float(b.scale_of(x)), fmt, **options), x, b.shapes[src])

    def plan(self, op, program):
        """The candidate and its KernelPlan rebuilt from the program (integers and formats only)."""
        out = program.tensors[op.outputs[0]]
        return self.kernel(op), KernelPlan(op.attrs["kernel"], op.consts, program.tensors[op.inputs[0]].fmt,
                                           out.fmt, out.scale, op.attrs.get("info", {}))

    def bind(self, op, program):
        """The candidate and its plan, its constants checked against what any plan of the
        candidate can hold (its registers and preconditions, Kernel.check_consts)."""
        kernel, plan = self.plan(op, program)
        kernel.check_consts(plan)
        return kernel, kernel.bind(plan)

    def run(self, op, inputs, bound, path):
        kernel, plan = bound
        return [run_kernel(kernel, path, inputs, plan)]

    def fuse_requant(self, op, bound, requantizer):
        """A candidate bound to a table (elementwise, narrow input) and a per-tensor requant after
        it: one table of both (ElementTable.then). Any other candidate: its fast path, then the
        requantizer, in one executor step."""
        kernel, plan = bound
        both = None
        if isinstance(plan.runtime, ElementTable) and not requantizer.per_channel:
            both = plan.runtime.then(requantizer)
        if both is not None:
            return lambda inputs: both(inputs[0])
        return lambda inputs: requantizer(kernel.fast(inputs, plan))

    def const_formats(self, op, program):
        """The candidate's declaration for the plan rebuilt from the program."""
        kernel, plan = self.plan(op, program)
        return kernel.const_formats(plan)

    def datapath_widths(self, op, program):
        kernel, plan = self.plan(op, program)
        return kernel.datapath_widths(plan)

    def cost(self, op, program):
        kernel, plan = self.bind(op, program)
        per_element = kernel.cost(program.tensors[op.outputs[0]].shape, plan)
        n = tensor_elements(program, op.outputs[0])
        return OpCost({k: v * n for k, v in per_element.items()}, 0, True)

    def emit(self, b, node, kernel, plan, x, shape):
        """The kernel op of `node` reading integer tensor x (its plan's constants and formats)."""
        out = b.add_tensor(node.name, plan.out_fmt, plan.out_scale, shape)
        attrs = {"family": self.family, "kernel": kernel.name}
        if plan.info:
            attrs["info"] = {k: (float(v) if isinstance(v, (float, np.floating)) else v)
                             for k, v in plan.info.items()}
        b.emit(self.kind, node.name, [x], [out], plan.consts, attrs, kernel.spec_section)
        b.bind(node.outputs[0], out, shape)


class MovementOp(OpDef):
    """Data movement of one tensor (spec K6): the integers are moved, never changed, so the output
    keeps the input's format and scale. `move(x, attrs)` (x with the batch axis first) is the one
    definition, used by the float interpreter and the integer executor alike.

    Lowering: an input at one scale and at most residual_bits wide moves as it is; an accumulator
    (wider) or a per-channel scale is first requantized to one scale (`Builder.per_tensor`)."""
    movement = True

    def move(self, x, attrs):
        raise NotImplementedError

    def evaluate(self, node, inputs, dtype):
        return [self.move(inputs[0], node.attrs)]

    def lower(self, node, b):
        x = b.per_tensor(node.inputs[0], f"{node.name}.in")
        info = b.tensors[x]
        shape = b.infer(node)[0]
        out = b.add_tensor(node.name, info.fmt, info.scale, shape)
        b.emit(self.kind, node.name, [x], [out], {}, dict(node.attrs), self.spec)
        b.bind(node.outputs[0], out, shape)

    def bind(self, op, program):
        """No constants; the attributes must give the declared output shape, and the output the
        input's format (data movement changes no integer)."""
        super().bind(op, program)
        self.check_shapes(op, program)
        if program.tensors[op.outputs[0]].fmt != program.tensors[op.inputs[0]].fmt:
            raise ProgramError(f"{self.kind}: the output's format differs from the input's")

    def run(self, op, inputs, bound, path):
        return [self.move(inputs[0], op.attrs)]


def batch_axes(axes):
    """Array axes (batch first) of per-sample axes."""
    return [int(a) + 1 for a in axes]
