"""The cost model: integer work of a program per image, from each op's own count (OpDef.cost),
weighted by the relative price of each operation kind (docs/selection.md S3).

    program_cost(program)   {"nonlinear_ops": weighted ops of the non-linear kernels per image,
                             "matmul_mbops": MAC bit operations of the matmuls, in millions}
"""

from ..arith import ArithSpecError, check_nonnegative
from ..kernels.base import OP_KINDS
from ..ops import program_op

# relative price of one integer op (docs/selection.md S3): a 32-bit multiplier costs a few adders
# in area and 3-4 adder delays (CPU imul: 3 cycles vs 1); a divider is iterative, one
# subtract-and-shift per quotient bit, 16+ steps (CPU idiv: 20-40 cycles)
COST_WEIGHTS = {"mul": 4.0, "div": 16.0, "shift": 1.0, "add": 1.0, "cmp": 1.0}


def parse_weights(spec, defaults, what):
    if spec is None:
        return dict(defaults)
    if isinstance(spec, dict):
        items = spec.items()
    else:
        items = []
        for part in str(spec).split(","):
            if "=" not in part:
                raise ArithSpecError(f"{what} {spec!r}: use NAME=VALUE,...")
            k, v = part.split("=", 1)
            items.append((k.strip(), v))
    out = dict(defaults)
    for k, v in items:
        if k not in defaults:
            raise ArithSpecError(f"{what}: unknown name {k!r}; names: {', '.join(defaults)}")
        v = check_nonnegative(f"{what}: {k}", v)
        out[k] = v
    return out


def resolve_cost_weights(spec=None):
    """'mul=4,div=16' or a dict (missing kinds keep their defaults) -> {kind: weight}."""
    w = parse_weights(spec, COST_WEIGHTS, "--cost-weights")
    if not any(w.values()):
        raise ArithSpecError("--cost-weights: at least one weight must be positive")
    return w


def weighted(ops, weights):
    unknown = set(ops) - set(OP_KINDS)
    if unknown:
        raise ArithSpecError(f"cost reports op kinds {sorted(unknown)} that have no weight")
    return sum(weights[k] * float(v) for k, v in ops.items())


def op_cost(program, op):
    return program_op(op.kind).cost(op, program)


def program_cost(program, weights=None):
    """Per image: weighted integer ops of the non-linear kernels, and the matmuls' bit operations
    (MACs x operand bits x operand bits) in millions."""
    weights = weights or COST_WEIGHTS
    nl, bitops = 0.0, 0
    for op in program.ops:
        c = op_cost(program, op)
        if c.nonlinear:
            nl += weighted(c.ops, weights)
        bitops += c.mac_bitops
    return {"nonlinear_ops": nl, "matmul_mbops": bitops / 1e6}


def kernel_ops(program, op):
    """Integer ops per output element of a compiled kernel op, by kind, from its kernel's cost()
    with the op's own plan and shape (row length = the last axis)."""
    kernel, plan = program_op(op.kind).bind(op, program)
    ops = kernel.cost(program.tensors[op.outputs[0]].shape, plan)
    weighted(ops, COST_WEIGHTS)             # every kind must have a weight
    return {k: float(ops.get(k, 0.0)) for k in OP_KINDS}
