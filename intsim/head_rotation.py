"""Q10 (docs/quantization.md): the contracted axis of a product of two activations (attention
q @ k^T) rotated into the weights of the Linear layers that make both operands.

q @ k^T = (q R)(k R)^T for any orthogonal R. With R block diagonal (Hadamard blocks H_B / sqrt(B),
B a power of two dividing the head dimension) the rotation folds exactly, in real arithmetic, into
the rows of the query and key weights (W -> R^T W, b -> R^T b): the float function is unchanged,
nothing is added to the integer program, and a channel of q or k that carries an outlier has it
spread over its block before q and k are requantized to their 8-bit operands, where the softmax
turns the absolute error of a large logit into a relative error of its probability.

A product is rotated when both of its operands lead back, each through data movement that carries
the contracted positions unchanged (OpDef.contraction_source: Scale, Transpose, Reshape splitting
heads off the channels, QKVSplit) and with no other reader on the way, to a Linear's output
channels: runs of Dh consecutive channels of one section (q's or k's third of a fused qkv)."""
from math import gcd

import numpy as np

from .arith import ArithSpecError
from .kernels import hadamard
from .ops import SEMANTIC


def operand_channels(graph, shapes, tensor, axis):
    """(Linear node, (offset, count), run) whose output channels `tensor` holds along `axis`, or
    None: the channels offset .. offset + count, in runs of `run` consecutive channels that are
    consecutive positions along `axis`."""
    run, section = None, None
    while True:
        node = graph.producer(tensor)
        if node is None or len(graph.consumers(tensor)) != 1:
            return None
        if node.op == "Linear":
            width = shapes[tensor][-1]
            if axis != len(shapes[tensor]) - 1:
                return None
            section = section or (0, width)
            return node, section, run or section[1]
        step = SEMANTIC[node.op].contraction_source(node, node.outputs.index(tensor), axis, shapes)
        if step is None or (step[2] is not None and section is not None):
            return None
        axis, run_here, section_here = step
        run = run_here if run_here is not None else run
        section = section_here if section_here is not None else section
        tensor = node.inputs[0]


def linear_contractions(graph, shapes):
    """For every product of two activations whose two operands both lead back to a Linear's
    output channels (attention q @ k^T): its operand_channels, one per operand."""
    for node in graph.nodes:
        axes = SEMANTIC[node.op].contracted_axes(node, shapes)
        if axes is None:
            continue
        found = [operand_channels(graph, shapes, t, a) for t, a in zip(node.inputs, axes)]
        if all(f is not None for f in found):
            yield found


def query_key_linears(graph):
    """Names of the Linear layers that make the operands of a product of two activations (the
    query and key projections; timm's fused qkv as a whole): QuantConfig.qk_wbits's layers."""
    shapes = graph.tensor_shapes()
    return {linear.name for found in linear_contractions(graph, shapes) for linear, _, _ in found}


def rotated_contractions(graph, max_block):
    """{Linear name: [(offset, count, B), ...]}: the rows each query / key Linear rotates in
    blocks of B, for every product whose two operands can be rotated alike."""
    if max_block < 2:
        return {}
    plan = {}
    for found in linear_contractions(graph, graph.tensor_shapes()):
        block = hadamard.block_for(gcd(*(run for _, _, run in found)), max_block)
        if not block or any(count % block for _, (_, count), _ in found):
            continue
        for linear, (offset, count), _ in found:
            rows = plan.setdefault(linear.name, [])
            if (offset, count, block) not in rows:
                rows.append((offset, count, block))
    return plan


def rotate_heads(graph, max_block):
    """The graph with every rotatable contraction rotated into its Linear weights (in place; the
    float function unchanged). Records the rotations in graph.meta["head_rotation"]."""
    if isinstance(max_block, bool) or max_block != 0 and not hadamard.is_block(max_block):
        raise ArithSpecError(f"head_rotation must be 0 (off) or a power of two in [2, "
                             f"{hadamard.MAX_BLOCK}], got {max_block!r}")
    plan = rotated_contractions(graph, max_block)
    for name, rows in plan.items():
        node = graph.node(name)
        for offset, count, block in rows:
            for key in ("weight", "bias"):
                if key in node.params:
                    p = node.params[key]
                    part = p[offset:offset + count].astype(np.float64)
                    rotated = hadamard.rotate_float(part.reshape(count, -1).T, block).T
                    p[offset:offset + count] = rotated.reshape(part.shape).astype(p.dtype)
    graph.meta["head_rotation"] = {name: [list(r) for r in rows] for name, rows in plan.items()}
    return graph
