"""Fidelity metrics of an integer result against its float reference, defined once (evaluate,
per-layer analysis, sweeps and selection all use these). Float64 throughout; logarithms and
exponentials by intsim.elementary, so a selection that compares them chooses alike everywhere."""
import math

import numpy as np

from . import elementary

LN10 = float(elementary.log(10.0))


def db(ratio):
    """10 log10(ratio) for a positive ratio (intsim.elementary's log)."""
    return 10.0 * float(elementary.log(ratio)) / LN10


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
        return db(max(self.signal, 1e-300) / self.noise)


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
    return z - elementary.log(elementary.exp(z).sum(axis=-1, keepdims=True))


def kl_divergence(ref_logits, test_logits):
    """Mean over rows of KL(softmax(ref) || softmax(test)), in nats."""
    lp, lq = _log_softmax(ref_logits), _log_softmax(test_logits)
    return float(np.mean(np.sum(elementary.exp(lp) * (lp - lq), axis=-1)))


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


class Pearson:
    """Pearson correlation of two tensors accumulated over batches (the batches' means, sums of
    squares and co-moments merged exactly as Chan et al.'s parallel variance): the same value as
    `pearson` on the concatenated tensors, up to float64 rounding."""

    def __init__(self):
        self.n, self.mean_a, self.mean_b = 0, 0.0, 0.0
        self.m2a = self.m2b = self.cab = 0.0

    def add(self, ref, test):
        a = np.asarray(ref, dtype=np.float64).ravel()
        b = np.asarray(test, dtype=np.float64).ravel()
        n, ma, mb = a.size, float(a.mean()), float(b.mean())
        da, db = a - ma, b - mb
        tot = self.n + n
        delta_a, delta_b = ma - self.mean_a, mb - self.mean_b
        self.m2a += float(da @ da) + delta_a * delta_a * self.n * n / tot
        self.m2b += float(db @ db) + delta_b * delta_b * self.n * n / tot
        self.cab += float(da @ db) + delta_a * delta_b * self.n * n / tot
        self.mean_a += delta_a * n / tot
        self.mean_b += delta_b * n / tot
        self.n = tot
        return self

    @property
    def value(self):
        den = math.sqrt(self.m2a * self.m2b)
        if den == 0.0:
            return 1.0 if self.m2a == self.m2b == 0.0 and self.mean_a == self.mean_b else 0.0
        return self.cab / den


def is_class_vector(shape):
    """Whether an output of this per-sample shape is a class vector (scores over classes, one axis):
    it gets top-1 and agreement; any other tensor gets SQNR, Pearson correlation and max abs error."""
    return len(tuple(shape)) == 1 and tuple(shape)[0] >= 2


class OutputComparison:
    """One output of a model compared with its reference over batches (evaluate, the zoo table):
    SQNR always; for a class vector, argmax agreement and, given labels, top-1 of both; for any
    other tensor, Pearson correlation and max abs error."""

    def __init__(self, name, shape):
        self.name, self.shape = name, tuple(int(d) for d in shape)
        self.is_class = is_class_vector(self.shape)
        self.sqnr, self.pearson, self.max_abs = Sqnr(), Pearson(), 0.0
        self.n = self.agree = self.ref_correct = self.test_correct = 0
        self.labelled = False

    def add(self, ref, test, labels=None):
        ref, test = np.asarray(ref, dtype=np.float64), np.asarray(test, dtype=np.float64)
        self.sqnr.add(ref, test)
        self.n += len(ref)
        if self.is_class:
            rp, tp = ref.argmax(-1), test.argmax(-1)
            self.agree += int((rp == tp).sum())
            if labels is not None:
                self.labelled = True
                self.ref_correct += int((rp == np.asarray(labels)).sum())
                self.test_correct += int((tp == np.asarray(labels)).sum())
        else:
            self.pearson.add(ref, test)
            self.max_abs = max(self.max_abs, max_abs_error(ref, test))
        return self

    def result(self):
        out = {"name": self.name, "shape": list(self.shape), "kind": "class" if self.is_class else "tensor",
               "sqnr_db": self.sqnr.db}
        if self.is_class:
            out["agreement"] = self.agree / self.n if self.n else None
            out["float_top1"] = self.ref_correct / self.n if self.labelled else None
            out["int_top1"] = self.test_correct / self.n if self.labelled else None
        else:
            out["pearson"] = self.pearson.value
            out["max_abs_error"] = self.max_abs
        return out
