"""intsim.reproducible: products exact on their grids (so no BLAS kernel, thread count or FMA can
change them), sequential sums, and GPTQ's factor (docs/quantization.md Q18)."""
import numpy as np
import pytest

from intsim import reproducible as R


def exact_on_grid(a, b):
    """The product of the grid-rounded operands in exact integer arithmetic (int64: every chunk sum
    is below 2^53), chunks added in float64 in order, then scaled: what matmul must return."""
    (na,), sa = R.grid_slices(a, -1)
    (nb,), sb = R.grid_slices(b, -2)
    k = a.shape[-1]
    out = None
    for c in range(0, k, R.CHUNK):
        part = (np.matmul(na[..., c:c + R.CHUNK].astype(np.int64), nb[..., c:c + R.CHUNK, :].astype(np.int64))
                .astype(np.float64))
        out = part if out is None else out + part
    return out * sa * sb


@pytest.mark.parametrize("shape", [((7, 13), (13, 5)), ((3, 2, 9, 64), (3, 2, 64, 9)), ((5, 3000), (3000, 4))])
def test_matmul_is_the_exact_product_on_the_grids(shape):
    rng = np.random.default_rng(1)
    a = (rng.standard_normal(shape[0]) * rng.gamma(1.0, size=shape[0][-1])).astype(np.float32)
    b = rng.standard_normal(shape[1]).astype(np.float32)
    b[..., 0, :] *= 1e-3               # rows of very different size
    got = R.matmul(a, b)
    assert np.array_equal(got, exact_on_grid(a, b))
    ref = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(a).max(axis=-1, keepdims=True) * np.abs(b).max(axis=-2, keepdims=True) * shape[0][-1]
    assert np.all(np.abs(got - ref) <= 2.0 ** -(R.GRID_BITS - 1) * scale)


def test_the_grid_rounds_each_row_to_grid_bits_below_its_maximum():
    x = np.array([[3.0, -1.0 / 3.0, 1e-9, 0.0], [0.0, 0.0, 0.0, 0.0]])
    (n,), step = R.grid_slices(x, -1)
    assert step[0, 0] == 2.0 ** (2 - R.GRID_BITS)          # 3 < 2^2
    assert np.array_equal(n[0], np.rint(x[0] / step[0, 0])) and np.abs(n).max() <= 2 ** R.GRID_BITS
    assert not n[1].any()


def test_two_slices_carry_twice_the_bits():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((20, 300)), rng.standard_normal((300, 30))
    ref = a @ b
    err1, err2 = (np.abs(R.matmul(a, b, slices=s) - ref).max() / np.abs(ref).max() for s in (1, 2))
    assert err2 < 1e-12 < err1 < 1e-5


def test_gram_is_exact_on_the_channel_grids():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((9000, 40)) * rng.gamma(1.0, size=40)).astype(np.float32)
    (n,), step = R.grid_slices(x, 0, bits=R.GRAM_BITS)
    want = None
    for c in range(0, len(n), R.GRAM_CHUNK):
        ni = n[c:c + R.GRAM_CHUNK].astype(np.int64)
        part = (ni.T @ ni).astype(np.float64)
        want = part if want is None else want + part
    assert np.array_equal(R.gram(x), want * step.T * step)


def test_sums_are_sequential_in_index_order():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 5)) * 10.0 ** rng.integers(-8, 8, (3, 4, 5))
    seq = np.zeros((3, 1, 1))
    for i in range(3):
        s = 0.0
        for v in x[i].ravel():
            s += v
        seq[i] = s
    assert np.array_equal(R.row_sums(x, (1, 2)), seq)
    s = 0.0
    for v in x.ravel():
        s += v
    assert R.total(x) == s and R.mean(x) == s / x.size


@pytest.mark.parametrize("n", [1, 11, 128, 301])
def test_inverse_upper_cholesky_is_the_factor_of_the_inverse(n):
    """GPTQ's U (H^-1 = U^T U, U upper) from the Cholesky factor of the reversed H and a triangular
    inverse by halves: the definition chol(H^-1)^T to the grids' precision, at sizes below, at and
    above the block size."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3 * n + 5, n)) * rng.gamma(1.0, size=n)
    h = x.T @ x
    h[np.diag_indices_from(h)] += 0.01 * np.mean(np.diag(h))
    u, want = R.inverse_upper_cholesky(h), np.linalg.cholesky(np.linalg.inv(h)).T
    assert np.array_equal(u, np.triu(u)) and (np.diag(u) > 0).all()
    np.testing.assert_allclose(u, want, rtol=0, atol=1e-5 * np.abs(want).max())
    m = R.cholesky(h)
    np.testing.assert_allclose(m @ m.T, h, rtol=0, atol=1e-6 * np.abs(h).max())
    np.testing.assert_allclose(R.lower_inverse(m) @ m, np.eye(n), rtol=0, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_cholesky_over_threads_is_the_same_bits(threads, monkeypatch):
    """compile's products_over_threads splits the trailing update in two row bands (one per thread,
    or both on the one thread there is): the factor is the serial one, bit for bit, at a size where
    the split happens (n = 400: 272 trailing rows of 128 columns)."""
    from intsim import parallel
    rng = np.random.default_rng(7)
    x = rng.normal(size=(900, 400)) * rng.gamma(1.0, size=400)
    h = x.T @ x
    h[np.diag_indices_from(h)] += 0.01 * np.mean(np.diag(h))
    serial = R.cholesky(h)
    monkeypatch.setattr(parallel, "threads", lambda: threads)
    with R.products_over_threads():
        split = R.cholesky(h)
    assert np.array_equal(split, serial)


def test_cholesky_refuses_a_matrix_that_is_not_positive_definite():
    with pytest.raises(np.linalg.LinAlgError):
        R.cholesky(np.array([[1.0, 2.0], [2.0, 1.0]]))


def test_gptq_rounds_every_output_channel_on_its_own():
    """GPTQ's rows (output channels) share only the factor of H: rounding the rows in two halves
    (as two threads do) gives the same integers, bit for bit."""
    from intsim.quantize import gptq_round, weight_format
    rng = np.random.default_rng(6)
    x = rng.normal(size=(500, 160)) * rng.gamma(1.0, size=160)
    w = rng.normal(size=(300, 160)) * 0.05
    s = np.abs(w).max(axis=1) / 7
    whole = gptq_round(w, s, x.T @ x, weight_format(4))
    halves = np.concatenate([gptq_round(w[:131], s[:131], x.T @ x, weight_format(4)),
                             gptq_round(w[131:], s[131:], x.T @ x, weight_format(4))])
    assert np.array_equal(whole, halves)
