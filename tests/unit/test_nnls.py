"""nnls_batched against scipy.optimize.nnls row by row, and against the KKT conditions."""

import itertools
import warnings

import numpy as np
import pytest
from scipy.optimize import nnls

from rsvc.nnls import nnls_batched


def scipy_rows(A, W):
    return np.array([nnls(W.T, a)[0] for a in A])


def kkt_violation(A, W, U):
    """Largest violation of x >= 0, grad >= 0, x * grad = 0 (relative)."""
    grad = (U @ W - A) @ W.T  # gradient of 1/2 ||a - W^T x||^2
    scale = np.linalg.norm(A, axis=1, keepdims=True) * np.linalg.norm(W, axis=1) + 1e-300
    return max(float(-U.min()), float(np.max(-grad / scale)), float(np.max(np.abs(U * grad) / scale)))


def nonneg_problem(rng, n=300, d=40, k=8):
    W = np.abs(rng.standard_normal((k, d)))
    H = np.abs(rng.standard_normal((n, k))) * (rng.random((n, k)) < 0.5)
    A = H @ W + 0.5 * np.abs(rng.standard_normal((n, d)))
    return A, W


def test_matches_scipy_nonnegative():
    A, W = nonneg_problem(np.random.default_rng(0))
    U = nnls_batched(A, W)
    assert U.shape == (300, 8) and U.dtype == np.float64
    np.testing.assert_allclose(U, scipy_rows(A, W), atol=1e-6, rtol=0)
    assert kkt_violation(A, W, U) < 1e-9


def test_matches_scipy_signed():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((10, 50))
    A = rng.standard_normal((300, 50))
    U = nnls_batched(A, W)
    np.testing.assert_allclose(U, scipy_rows(A, W), atol=1e-6, rtol=0)
    assert (U == 0).any() and (U > 0).any()


@pytest.mark.parametrize("cond", [1e2, 1e4, 1e5])
def test_ill_conditioned_basis(cond):
    rng = np.random.default_rng(2)
    k, d = 8, 30
    Q1, _ = np.linalg.qr(rng.standard_normal((k, k)))
    Q2, _ = np.linalg.qr(rng.standard_normal((d, k)))
    W = (Q1 * np.logspace(0, -np.log10(cond), k)) @ Q2.T
    A = rng.standard_normal((200, d))
    R = scipy_rows(A, W)
    U = nnls_batched(A, W)
    np.testing.assert_allclose(U, R, atol=1e-6 * max(1.0, np.abs(R).max()), rtol=0)


def test_duplicated_concepts_follow_scipy():
    """Rank-deficient W: the minimiser is not unique; scipy's choice must be reproduced."""
    rng = np.random.default_rng(3)
    A, W = nonneg_problem(rng)
    W[3] = W[7]
    W[5] = W[1]
    np.testing.assert_allclose(nnls_batched(A, W), scipy_rows(A, W), atol=1e-6, rtol=0)
    Ws = rng.standard_normal((8, 40))
    Ws[6] = Ws[2]
    As = rng.standard_normal((300, 40))
    np.testing.assert_allclose(nnls_batched(As, Ws), scipy_rows(As, Ws), atol=1e-6, rtol=0)


def test_linearly_dependent_concepts_follow_scipy():
    rng = np.random.default_rng(4)
    A, W = nonneg_problem(rng, k=10)
    W[2] = W[0] + W[1]
    W[9] = 2 * W[4] - 0.5 * W[6]
    np.testing.assert_allclose(nnls_batched(A, W), scipy_rows(A, W), atol=1e-6, rtol=0)


def test_dependent_signed_concepts_same_fit():
    """Where scipy's choice between equivalent minimisers is decided by round-off
    (an exact tie only in real arithmetic), the fitted reconstruction U W, which
    is unique, must still agree."""
    rng = np.random.default_rng(5)
    W = rng.standard_normal((10, 40))
    W[2] = W[0] - W[1]
    W[9] = W[3]
    A = rng.standard_normal((300, 40))
    U, R = nnls_batched(A, W), scipy_rows(A, W)
    assert U.min() >= 0
    np.testing.assert_allclose(U @ W, R @ W, atol=1e-8, rtol=0)


def test_zero_rows_and_zero_concept():
    rng = np.random.default_rng(6)
    A, W = nonneg_problem(rng)
    A[::7] = 0
    W[4] = 0
    U = nnls_batched(A, W)
    assert np.all(U[::7] == 0)
    np.testing.assert_allclose(U, scipy_rows(A, W), atol=1e-6, rtol=0)


def test_fewer_dimensions_than_concepts():
    rng = np.random.default_rng(7)
    W = rng.standard_normal((8, 5))
    A = rng.standard_normal((100, 5))
    np.testing.assert_allclose(nnls_batched(A, W), scipy_rows(A, W), atol=1e-6, rtol=0)


def test_float32_and_shapes():
    A, W = nonneg_problem(np.random.default_rng(8))
    U32 = nnls_batched(A.astype(np.float32), W.astype(np.float32))
    assert U32.dtype == np.float32
    U64 = nnls_batched(A, W)
    np.testing.assert_allclose(U32, U64, atol=1e-4 * np.abs(U64).max())
    assert nnls_batched(np.zeros((0, 40)), W).shape == (0, 8)
    with pytest.raises(ValueError):
        nnls_batched(A, W[:, :5])


def test_rows_past_max_iter_are_finished_by_scipy():
    """Rows that exhaust ``max_iter`` are solved by scipy.optimize.nnls: same fit, feasible, no warning."""
    A, W = nonneg_problem(np.random.default_rng(9))
    W[1] = W[0]  # force the active-set path
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        U = nnls_batched(A, W, max_iter=2)
        nnls_batched(A, W)
    assert U.min() >= 0
    np.testing.assert_allclose(U @ W, scipy_rows(A, W) @ W, atol=1e-8, rtol=0)


def conditioned_problem(rng, cond, k=6, d=12, n=200):
    """W: (k, d) with singular values 1 ... 1/cond; A: (n, d) = sparse non-negative mixtures with
    coefficients over five decades plus 1e-4 to 1e-1 relative noise, a quarter of the rows random signed."""
    Q1, _ = np.linalg.qr(rng.standard_normal((k, k)))
    Q2, _ = np.linalg.qr(rng.standard_normal((d, k)))
    W = (Q1 * np.logspace(0, -np.log10(cond), k)) @ Q2.T
    H = np.abs(rng.standard_normal((n, k))) * (rng.random((n, k)) < 0.6) * 10.0 ** rng.uniform(-2, 3, (n, 1))
    A = H @ W
    noise = 10.0 ** rng.uniform(-4, -1, (n, 1)) * np.linalg.norm(A, axis=1, keepdims=True) / np.sqrt(d)
    A += noise * rng.standard_normal((n, d))
    A[: n // 4] = rng.standard_normal((n // 4, d))
    return A, W


def exact_objective(W, a, x):
    """||a - W^T x||^2 in 40-digit arithmetic for the float64 numbers given (no cancellation)."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 40
    r = [
        mp.mpf(ai) - mp.fsum(mp.mpf(xj) * mp.mpf(wj) for xj, wj in zip(x.tolist(), col))
        for ai, col in zip(a.tolist(), W.T.tolist())
    ]
    return mp.fsum(v * v for v in r)


def reference_objective(W, a):
    """The NNLS minimum by brute force: every passive set solved by QR in 40-digit arithmetic."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 40
    best = mp.fsum(mp.mpf(v) ** 2 for v in a.tolist())
    am = mp.matrix(a.tolist())
    for m in range(1, W.shape[0] + 1):
        for P in itertools.combinations(range(W.shape[0]), m):
            z, res = mp.qr_solve(mp.matrix(W[list(P)].T.tolist()), am)
            if min(z) >= 0:
                best = min(best, res**2)
    return best


@pytest.mark.parametrize("cond", [1e3, 1e6, 1e9])
def test_objective_matches_scipy_and_a_high_precision_reference(cond):
    """At any conditioning the objective is within 1e-9 (relative) of scipy's and of the true
    minimum, up to what storing x in float64 costs: moving each x_j by one ulp changes the
    residual by at most rho = eps * sum_j |x_j| ||W_j||, the objective by 2 sqrt(f) rho + rho^2.
    (Before the final check this failed by factors of 1e6-1e9 at cond 1e6 and 1e9.)"""
    worst_scipy = worst_ref = 0.0
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        A, W = conditioned_problem(rng, cond)
        U = nnls_batched(A, W)
        f = np.square(A - U @ W).sum(axis=1)
        fs = np.array([nnls(W.T, a, maxiter=300)[1] ** 2 for a in A])
        # exact objectives on the rows where the float64 objectives differ most, and two more
        gap = np.abs(f - fs) / np.maximum(fs, 1e-300)
        for i in np.r_[np.argsort(-gap)[:3], rng.choice(len(A), 2, replace=False)]:
            rho = np.finfo(float).eps * float(np.abs(U[i]) @ np.linalg.norm(W, axis=1))
            ours = exact_objective(W, A[i], U[i])
            scipy_f = exact_objective(W, A[i], nnls(W.T, A[i], maxiter=300)[0])
            for other, name in ((scipy_f, "scipy"), (reference_objective(W, A[i]), "ref")):
                bound = 1e-9 * float(other) + 2 * float(other) ** 0.5 * rho + rho**2 + 1e-300
                excess = float(ours - other) / bound
                if name == "scipy":
                    worst_scipy = max(worst_scipy, excess)
                else:
                    worst_ref = max(worst_ref, excess)
    assert worst_scipy <= 1.0 and worst_ref <= 1.0, (worst_scipy, worst_ref)
