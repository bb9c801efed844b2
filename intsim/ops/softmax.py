"""Softmax over the last axis (spec K2): the attention probabilities.

Lowering: the logits are requantized to `logit_bits` at their calibrated scale; the candidate
(bitshift-softmax by default, or a per-layer override) is planned for that scale with the
configured output width (unsigned, scale 2^-softmax_bits)."""
from ..arith import IntFormat
from ..floatfn import softmax
from .base import KernelOp


class Softmax(KernelOp):
    semantic = "Softmax"
    kind = family = "softmax"
    spec = "K2"

    def evaluate(self, node, inputs, dtype):
        return [softmax(inputs[0])]

    def lower(self, node, b):
        self.lower_at(b, node, IntFormat(b.cfg.logit_bits), out_bits=b.cfg.softmax_bits)
