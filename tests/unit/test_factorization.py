"""NMF / Semi-NMF: constraints, monotone objective, planted recovery, determinism."""

import numpy as np
import pytest
from sklearn.decomposition import NMF

from rsvc.factorization import Factorization, choose_method, concept_order, factorize, nmf, semi_nmf


def planted_nonneg(rng, n=150, d=40, k=5):
    U = rng.random((n, k)) * (rng.random((n, k)) < 0.6)
    W = rng.random((k, d)) * (rng.random((k, d)) < 0.6)
    return U @ W


def planted_signed(rng, n=150, d=40, k=5):
    return rng.random((n, k)) @ rng.standard_normal((k, d))


def noisy_nonneg(rng, n=200, d=60):
    Z = rng.gamma(0.4, 1.0, (n, 12)) * (rng.random((n, 12)) < 0.4)
    return np.maximum(Z @ (rng.standard_normal((12, d)) + 0.3) + 0.3 * rng.standard_normal((n, d)), 0)


def check_result(f: Factorization, A: np.ndarray, k: int):
    n, d = A.shape
    assert f.U.shape == (n, k) and f.W.shape == (k, d)
    assert f.U.min() >= 0
    assert f.objective.shape == (f.n_iter,)
    assert np.all(np.diff(f.objective) <= 1e-12 * f.objective[0])  # non-increasing
    direct = np.linalg.norm(A - f.U @ f.W) / np.linalg.norm(A)
    assert f.rel_error == pytest.approx(direct, rel=1e-9, abs=1e-12)
    # the stored objective is the squared residual; computed by expansion it carries round-off of
    # a few thousand eps * ||A||^2 (at the floor for exactly low-rank data), whatever the BLAS
    sq = np.linalg.norm(A) ** 2
    assert abs(f.objective[-1] - direct**2 * sq) <= 2e-6 * direct**2 * sq + 1e-12 * sq


def test_choose_method():
    assert choose_method(np.ones((3, 2))) == "nmf"
    assert choose_method(-np.ones((3, 2))) == "seminmf"
    assert choose_method(np.ones((3, 2)), "seminmf") == "seminmf"
    with pytest.raises(ValueError):
        choose_method(np.ones((3, 2)), "pca")


def test_nmf_recovers_planted_low_rank():
    A = planted_nonneg(np.random.default_rng(0))
    f = nmf(A, 5, tol=1e-10, max_iter=2000)
    check_result(f, A, 5)
    assert f.method == "nmf" and f.W.min() >= 0
    assert f.rel_error < 1e-3


def test_semi_nmf_recovers_planted_low_rank():
    A = planted_signed(np.random.default_rng(1))
    f = semi_nmf(A, 5, tol=1e-10, max_iter=2000)
    check_result(f, A, 5)
    assert f.method == "seminmf" and f.W.min() < 0
    assert f.rel_error < 1e-3


def test_nmf_noisy_data_default_settings_and_sklearn_reference():
    A = noisy_nonneg(np.random.default_rng(2))
    f = factorize(A, 6)
    check_result(f, A, 6)
    assert f.method == "nmf" and f.converged and f.W.min() >= 0
    # a local optimum: scikit-learn's coordinate-descent NMF started from our factors, run to tight
    # convergence, improves the error by less than 1 % (NMF is non-convex, so a cold start may land
    # elsewhere, differently on each processor; it must not find a much better optimum either)
    sk = NMF(6, init="custom", solver="cd", tol=1e-10, max_iter=5000)
    U = sk.fit_transform(A, W=f.U.copy(), H=f.W.copy())
    warm = np.linalg.norm(A - U @ sk.components_) / np.linalg.norm(A)
    assert warm >= f.rel_error * 0.99
    cold = NMF(6, init="nndsvd", solver="cd", tol=1e-8, max_iter=5000, random_state=0).fit(A)
    assert f.rel_error <= 1.10 * np.linalg.norm(A - cold.transform(A) @ cold.components_) / np.linalg.norm(A)


def test_semi_nmf_noisy_signed_data():
    rng = np.random.default_rng(3)
    A = noisy_nonneg(rng) - 0.5
    f = factorize(A, 6)
    check_result(f, A, 6)
    assert f.method == "seminmf" and f.converged
    # W is the exact least-squares solution for the returned U
    W_ls = np.linalg.lstsq(f.U, A, rcond=None)[0]
    np.testing.assert_allclose(f.W, W_ls, atol=1e-8 * np.abs(W_ls).max())


def test_deterministic_and_float32():
    A = noisy_nonneg(np.random.default_rng(4))
    f1, f2 = factorize(A, 5, seed=3), factorize(A, 5, seed=3)
    np.testing.assert_array_equal(f1.U, f2.U)
    np.testing.assert_array_equal(f1.W, f2.W)
    np.testing.assert_array_equal(f1.objective, f2.objective)
    f32 = factorize(A.astype(np.float32), 5, seed=3)
    assert f32.U.dtype == np.float32 and f32.W.dtype == np.float32
    assert f32.rel_error == pytest.approx(f1.rel_error, abs=1e-3)
    assert np.all(np.diff(f32.objective) <= 1e-5 * f32.objective[0])


def test_nmf_rejects_negative_input():
    with pytest.raises(ValueError):
        nmf(-np.ones((5, 3)), 2)


def test_concepts_come_largest_first_and_order_is_scale_free():
    rng = np.random.default_rng(3)
    A = rng.random((120, 5)) @ rng.random((5, 30)) * np.array([1, 4, 2, 8, 3])[None, :].repeat(6, 1)
    fac = nmf(A, 5, seed=0)
    energy = np.linalg.norm(fac.U, axis=0) * np.linalg.norm(fac.W, axis=1)
    assert (np.diff(energy) <= 0).all()
    # brute force: the rank-one terms' Frobenius norms, computed as matrices
    terms = [np.linalg.norm(np.outer(fac.U[:, j], fac.W[j])) for j in range(5)]
    np.testing.assert_allclose(terms, energy, rtol=1e-6)
    scale = rng.uniform(0.1, 10, 5)
    np.testing.assert_array_equal(concept_order(fac.U * scale, fac.W / scale[:, None]), concept_order(fac.U, fac.W))
