"""Correlation matrices against scipy.stats, MCS/MMCS against plain loops."""

import warnings

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from rsvc.similarity import layerwise_correlation, mcs, mmcs, paired_correlation, pearson_matrix, spearman_matrix


def scipy_matrix(X, Y, fn):
    R = np.empty((X.shape[1], Y.shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input
        for i in range(X.shape[1]):
            for j in range(Y.shape[1]):
                R[i, j] = fn(X[:, i], Y[:, j])[0]
    return R


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.random((80, 6))
    Y = np.column_stack([X[:, 0] ** 3, rng.random((80, 4)), -X[:, 2]])
    X[:, 4] = 2.5  # constant column
    Y[:, 3] = np.round(Y[:, 3] * 4)  # many ties
    return X, Y


def test_pearson_matches_scipy(data):
    X, Y = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        R = pearson_matrix(X, Y)
    expected = scipy_matrix(X, Y, pearsonr)
    assert np.all(np.isnan(R[4])) and np.all(np.isnan(expected[4]))
    np.testing.assert_allclose(R, expected, atol=1e-10, rtol=0)


def test_spearman_matches_scipy_with_ties(data):
    X, Y = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        R = spearman_matrix(X, Y)
    np.testing.assert_allclose(R, scipy_matrix(X, Y, spearmanr), atol=1e-10, rtol=0)
    assert R[2, 5] == pytest.approx(-1.0)


def test_paired_correlation(data):
    X, Y = data
    for method, fn in (("pearson", pearsonr), ("spearman", spearmanr)):
        r = paired_correlation(X, Y[:, :6], method)
        np.testing.assert_allclose(r, np.diag(scipy_matrix(X, Y[:, :6], fn)), atol=1e-10, rtol=0)


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_layerwise_correlation_matches_pairwise(method):
    rng = np.random.default_rng(1)
    Ua = rng.random((3, 50, 4))
    Ub = rng.random((5, 50, 4))
    Ub[1, :, 2] = 0  # a dead concept
    R = layerwise_correlation(Ua, Ub, method=method)
    assert R.shape == (3, 5, 4, 4)
    fn = pearsonr if method == "pearson" else spearmanr
    for l in range(3):
        for m in range(5):
            np.testing.assert_allclose(R[l, m], scipy_matrix(Ua[l], Ub[m], fn), atol=1e-10, rtol=0)


def test_mcs_mmcs_against_loops():
    rng = np.random.default_rng(2)
    R = rng.uniform(-1, 1, (4, 3, 5, 5))
    R[0, 0, 1, :] = np.nan  # a constant concept of model a
    R[1, 2, :, 3] = np.nan
    R[2, 1] = np.nan  # everything NaN
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mcs_a, mcs_b = mcs(R)
        m = mmcs(R)
    assert mcs_a.shape == (4, 3, 5) and m.shape == (4, 3)
    for l in range(4):
        for n in range(3):
            ra, rb = [], []
            for i in range(5):
                vals = [R[l, n, i, j] for j in range(5) if not np.isnan(R[l, n, i, j])]
                ra.append(max(vals) if vals else np.nan)
            for j in range(5):
                vals = [R[l, n, i, j] for i in range(5) if not np.isnan(R[l, n, i, j])]
                rb.append(max(vals) if vals else np.nan)
            np.testing.assert_array_equal(mcs_a[l, n], ra)
            np.testing.assert_array_equal(mcs_b[l, n], rb)
            fa, fb = [v for v in ra if not np.isnan(v)], [v for v in rb if not np.isnan(v)]
            expected = (np.mean(fa) + np.mean(fb)) / 2 if fa and fb else np.nan
            np.testing.assert_allclose(m[l, n], expected, rtol=1e-14)
    assert np.isnan(m[2, 1])


def test_self_comparison_diagonal_is_one():
    rng = np.random.default_rng(3)
    U = rng.gamma(0.5, 1.0, (6, 200, 10)) * (rng.random((6, 200, 10)) < 0.5)
    U[2, :, 7] = 0  # constant columns are ignored, not counted as 0
    for method in ("pearson", "spearman"):
        M = mmcs(layerwise_correlation(U, U, method=method))
        np.testing.assert_allclose(np.diag(M), 1.0, atol=1e-6)
        off = M[~np.eye(6, dtype=bool)]
        assert np.all(off < 0.9)
