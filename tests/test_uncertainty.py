"""Intervals, chance baseline and stability (rsvc.uncertainty) against brute force, scipy and known truths."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from rsvc.factorization import factorize
from rsvc.similarity import mcs, pearson_matrix
from rsvc.uncertainty import (
    bootstrap_paired_pearson,
    concept_stability,
    image_bootstrap_weights,
    permutation_null_mcs,
    weighted_paired_pearson,
    weighted_pearson_matrix,
)


def _clustered_pair(rng, rho, n_images=40, per_image=16, k=1):
    """Rows of ``n_images`` images: (x, y) with correlation ``rho`` both between images and within them."""
    cov = [[1, rho], [rho, 1]]
    img = rng.multivariate_normal([0, 0], cov, size=(n_images, k))  # (n_images, k, 2)
    patch = rng.multivariate_normal([0, 0], cov, size=(n_images, per_image, k))
    xy = img[:, None] + patch
    groups = np.repeat(np.arange(n_images), per_image)
    return xy[..., 0].reshape(-1, k), xy[..., 1].reshape(-1, k), groups


def test_weighted_correlations_equal_those_of_the_repeated_rows():
    rng = np.random.default_rng(0)
    x, y, groups = _clustered_pair(rng, 0.5, n_images=12, per_image=4, k=3)
    w = image_bootstrap_weights(groups, 5, seed=1)
    assert w.shape == (5, len(groups)) and np.all(w.sum(axis=1) == len(groups))  # n_images draws of 4 rows
    r = weighted_paired_pearson(x, y, w)
    R = weighted_pearson_matrix(x, y, w)
    for b in range(5):
        rows = np.repeat(np.arange(len(groups)), w[b].astype(int))
        for j in range(3):
            assert r[b, j] == pytest.approx(stats.pearsonr(x[rows, j], y[rows, j])[0], abs=1e-12)
        np.testing.assert_allclose(R[b], pearson_matrix(x[rows], y[rows]), atol=1e-12)
        # every row of an image has the same weight: images, not patches, are resampled
        for g in np.unique(groups):
            assert len(set(w[b, groups == g])) == 1


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.9])
def test_the_95_percent_interval_covers_the_true_correlation(rho):
    rng = np.random.default_rng(int(rho * 10))
    covered = 0
    for rep in range(200):
        x, y, groups = _clustered_pair(rng, rho)
        low, high = bootstrap_paired_pearson(x, y, groups, B=200, seed=rep)
        covered += bool(low[0] <= rho <= high[0])
    assert 0.90 * 200 <= covered <= 0.99 * 200, covered


def _brute_force_null(Ua, Ub, groups, P, seed):
    rng = np.random.default_rng(seed)
    images = np.unique(groups)
    order = np.concatenate([np.flatnonzero(groups == g) for g in images])
    a, b = Ua[order], Ub[order].reshape(len(images), -1, Ub.shape[1])
    null = []
    for _ in range(P):
        bp = b[rng.permutation(len(images))].reshape(len(order), -1)
        R = np.array([[stats.pearsonr(a[:, i], bp[:, j])[0] for j in range(bp.shape[1])] for i in range(a.shape[1])])
        null.append(R.max(axis=1))
    return np.mean(null, axis=0)


def test_permutation_null_mean_matches_brute_force():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(20), 4)
    Ua, Ub = rng.random((80, 3)), rng.random((80, 4))
    null_a, p_a, null_b, p_b = permutation_null_mcs(Ua, Ub, groups, P=30, seed=5)
    np.testing.assert_allclose(null_a, _brute_force_null(Ua, Ub, groups, 30, 5), atol=1e-12)
    assert null_a.shape == (3,) and null_b.shape == (4,)
    assert np.all((p_a > 0) & (p_a <= 1)) and np.all((p_b > 0) & (p_b <= 1))


def test_null_p_values_are_uniform_for_independent_models():
    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(25), 4)
    ps = []
    for rep in range(150):
        Ua, Ub = rng.random((100, 3)), rng.random((100, 3))
        _, p_a, _, _ = permutation_null_mcs(Ua, Ub, groups, P=99, seed=rep)
        ps.append(p_a[0])
    # p-values on the grid 1/100 ... 1: compare with the uniform on (0, 1]; jitter within a grid cell
    jittered = np.asarray(ps) - rng.random(len(ps)) / 100
    assert stats.kstest(jittered, "uniform").pvalue > 0.01


def test_a_shared_concept_beats_the_null():
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(30), 4)
    shared = rng.random((120, 1))
    Ua = np.hstack([shared, rng.random((120, 2))])
    Ub = np.hstack([rng.random((120, 2)), shared + 0.1 * rng.random((120, 1))])
    null_a, p_a, _, _ = permutation_null_mcs(Ua, Ub, groups, P=99, seed=0)
    assert p_a[0] == pytest.approx(1 / 100) and mcs(pearson_matrix(Ua, Ub))[0][0] > null_a[0] + 0.5


def test_stability_is_near_one_for_recoverable_components_and_drops_with_noise():
    rng = np.random.default_rng(6)
    k, d, n = 4, 30, 400
    W_true = rng.random((k, d)) ** 4  # sparse-ish, distinct non-negative parts
    U_true = rng.random((n, k)) ** 2
    clean = U_true @ W_true
    fits = [factorize(clean, k, method="nmf", seed=s, max_iter=500, tol=1e-7, init="random").W for s in range(4)]
    stable = concept_stability(fits[0], fits[1:])
    assert stable.min() > 0.98, stable
    noisy = clean + rng.random(clean.shape) * clean.mean() * 3
    fits = [factorize(noisy, k, method="nmf", seed=s, max_iter=500, tol=1e-7, init="random").W for s in range(4)]
    assert concept_stability(fits[0], fits[1:]).mean() < stable.mean()
    assert np.all(concept_stability(fits[0], [fits[0]]) == pytest.approx(1.0))


def test_class_bootstrap_interval_of_the_layerwise_mean_matches_brute_force():
    from rsvc.tables import class_bootstrap_interval, nan_mean

    rng = np.random.default_rng(7)
    mats = [rng.random((3, 2)) for _ in range(9)]
    mats[2][0, 0] = np.nan  # a cell without a value in one class
    low, high = class_bootstrap_interval(mats, B=50, seed=3)
    draws = np.random.default_rng(3).integers(0, 9, size=(50, 9))
    means = np.stack([nan_mean([mats[i] for i in d])[0] for d in draws])
    np.testing.assert_allclose(low, np.quantile(means, 0.025, axis=0), atol=1e-12)
    np.testing.assert_allclose(high, np.quantile(means, 0.975, axis=0), atol=1e-12)
    mean = nan_mean(mats)[0]
    assert np.all(low <= mean) and np.all(mean <= high)
