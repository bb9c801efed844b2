"""Fidelity metrics of an integer result against its float reference, defined once (evaluate,
per-layer analysis, sweeps and selection all use these). Float64 throughout."""
import math

import numpy as np


class Sqnr:
    """Signal-to-quantization-noise ratio accumulated over batches: 10 log10(sum ref^2 /
    sum (ref - test)^2) in dB; +inf when the noise is exactly zero."""

    def __init__(self):
        self.signal = 0.0
        self.noise = 0.0

    def add(self, ref, test):
        ref = np.asarray(ref, dtype=np.float64)
        self.signal += float(np.sum(ref * ref))
        self.noise += float(np.sum((ref - np.asarray(test, dtype=np.float64)) ** 2))
        return self

    @property
    def db(self):
        if self.noise == 0.0:
            return math.inf
        return 10.0 * math.log10(max(self.signal, 1e-300) / self.noise)


def sqnr_db(ref, test):
    return Sqnr().add(ref, test).db


def agreement(ref_logits, test_logits):
    """Fraction of rows whose argmax (over the last axis) agrees."""
    return float(np.mean(np.argmax(ref_logits, -1) == np.argmax(test_logits, -1)))


def top1(logits, labels):
    return float(np.mean(np.argmax(logits, -1) == np.asarray(labels)))


def _log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def kl_divergence(ref_logits, test_logits):
    """Mean over rows of KL(softmax(ref) || softmax(test)), in nats."""
    lp, lq = _log_softmax(ref_logits), _log_softmax(test_logits)
    return float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=-1)))


def pearson(ref, test):
    """Pearson correlation of the flattened tensors (1.0 for two identical constant tensors)."""
    a = np.asarray(ref, dtype=np.float64).ravel()
    b = np.asarray(test, dtype=np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    if den == 0.0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(a @ b) / den


def max_abs_error(ref, test):
    return float(np.max(np.abs(np.asarray(ref, dtype=np.float64) - np.asarray(test, dtype=np.float64))))
