"""The op registry: one OpDef per op kind, one file each (see base.py for the interface).

    semantic_op("Linear")   the OpDef of a semantic graph op (GraphError if unknown)
    program_op("linear")    the OpDef of an integer program op kind (ProgramError if unknown)
    check_constants(program) every constant of every op against its op's declared register
                            (OpDef.const_formats; ProgramError naming op, constant, value, rule)

Adding an op kind is one new file here, one line in OPS, a spec section and its tests
(docs/architecture.md, "Adding an op")."""
from ..errors import GraphError, IntsimError, ProgramError
from .add import Add
from .attn_context import AttnContext
from .attn_scores import AttnScores
from .base import KernelOp, MovementOp, OpCost, OpDef
from .channel_mul import ChannelMul
from .cls_pos import ClsPos
from .cls_select import ClsSelect
from .concat import Concat
from .const_add import ConstAdd
from .conv import Conv
from .conv_transpose import ConvTranspose
from .gather import Gather
from .gelu import Gelu
from .global_avg_pool import GlobalAveragePool
from .hadamard import Hadamard
from .layernorm import LayerNorm
from .linear import Linear
from .matmul import MatMul
from .mul import Mul
from .pad import Pad
from .patch_embed import PatchEmbed
from .qkv_split import QKVSplit
from .quickgelu import QuickGelu
from .reduce_mean import ReduceMean
from .relu import Relu
from .requant import Requant
from .reshape import Reshape
from .resize import Resize
from .scale import Scale
from .sigmoid import Sigmoid
from .slice import Slice
from .softmax import Softmax
from .transpose import Transpose

REQUANT = Requant()       # the compiler inserts it wherever a consumer needs another format or scale
OPS = (PatchEmbed(), ClsPos(), LayerNorm(), Linear(), QKVSplit(), AttnScores(), Softmax(),
       AttnContext(), Gelu(), Add(), ClsSelect(), Relu(), REQUANT,
       # the generic ops: any network around the ViT blocks
       Reshape(), Transpose(), Slice(), Gather(), Pad(), Concat(), MatMul(), Mul(), Scale(),
       ChannelMul(), ConstAdd(), ReduceMean(),
       # the ops around backbones: decoders and heads
       Sigmoid(), QuickGelu(), Conv(), ConvTranspose(), Resize(), GlobalAveragePool(),
       # the compiler's operand rotation (docs/quantization.md Q8)
       Hadamard())
SEMANTIC = {op.semantic: op for op in OPS if op.semantic}
KINDS = {op.kind: op for op in OPS}

__all__ = ["KINDS", "OPS", "REQUANT", "SEMANTIC", "KernelOp", "MovementOp", "OpCost", "OpDef",
           "check_constants", "constant_problems", "program_op", "semantic_op"]


def semantic_op(name, node=None):
    if name not in SEMANTIC:
        where = f"node {node!r}: " if node else ""
        raise GraphError(f"{where}unknown op {name!r}; ops: {', '.join(SEMANTIC)}")
    return SEMANTIC[name]


def program_op(kind, where=""):
    if kind not in KINDS:
        raise ProgramError(f"{where}unknown op kind {kind!r}; kinds: {', '.join(KINDS)}")
    return KINDS[kind]


def constant_problems(program):
    """Every constant of every op against its op's declaration (`const_formats`): one line per
    problem - an undeclared or missing constant, a non-integer, another shape, a value outside the
    register's declared range - naming the op, the constant and the spec section. [] when all hold."""
    problems = []
    for idx, op in enumerate(program.ops):
        where = f"op {idx} {op.kind} {op.name!r}"
        try:
            declared = program_op(op.kind, f"{where}: ").const_formats(op, program)
        except (IntsimError, KeyError, IndexError, TypeError, ValueError) as e:
            problems.append(f"{where}: its constants cannot be checked ({type(e).__name__}: {e})")
            continue
        for name in sorted(set(op.consts) - set(declared)):
            problems.append(f"{where}: constant {name!r} is not one of its constants "
                            f"({', '.join(declared) or 'none'}; spec {op.spec})")
        for name, fmt in declared.items():
            if name not in op.consts:
                problems.append(f"{where}: constant {name!r} is missing (spec {op.spec})")
                continue
            why = fmt.violation(op.consts[name])
            if why:
                problems.append(f"{where} constant {name!r}: {why} (spec {op.spec})")
    return problems


def check_constants(program):
    """Raise ProgramError with the first problem of constant_problems (and how many more)."""
    problems = constant_problems(program)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ProgramError(problems[0] + more)
