"""Group folds, celer lasso against scikit-learn, cross-fitting against a direct per-fold computation."""

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.linear_model import Lasso
from sklearn.preprocessing import StandardScaler

from rsvc.regression import concept_regression, cross_fitted_lasso, fit_lasso, group_folds


def make_data(seed=0, n_images=30, per_image=8, d=25, k=3):
    rng = np.random.default_rng(seed)
    groups = np.repeat(rng.permutation(1000)[:n_images], per_image)
    n = len(groups)
    X = rng.gamma(1.0, 1.0, (n, d)) + 3.0 * rng.random(d)  # not centred, different scales
    X[:, 7] = 1.5  # constant feature: std 0 -> 1
    B = rng.standard_normal((d, k)) * (rng.random((d, k)) < 0.3)
    Y = X @ B + 0.5 * rng.standard_normal((n, k)) + 2.0
    return X, Y, groups


def test_group_folds_partition_groups_and_balance():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(23), rng.integers(1, 20, 23))
    folds = group_folds(groups, n_folds=5, seed=1)
    assert len(folds) == 5
    tests = np.concatenate([te for _, te in folds])
    np.testing.assert_array_equal(np.sort(tests), np.arange(len(groups)))
    for tr, te in folds:
        assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == len(groups)
        assert not set(groups[tr]) & set(groups[te])  # no image split
    sizes = [len(te) for _, te in folds]
    assert max(sizes) - min(sizes) <= np.bincount(groups).max()
    again = group_folds(groups, n_folds=5, seed=1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    other = group_folds(groups, n_folds=5, seed=2)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, other))
    with pytest.raises(ValueError):
        group_folds(np.arange(3), n_folds=5)


def test_equal_groups_give_equal_folds():
    folds = group_folds(np.repeat(np.arange(50), 16), n_folds=5)
    assert {len(te) for _, te in folds} == {160}


def test_fit_lasso_matches_sklearn():
    X, Y, _ = make_data()
    Xs = StandardScaler().fit_transform(X)
    coef = fit_lasso(Xs, Y - Y.mean(0), alpha=0.1)
    expected = np.array(
        [Lasso(alpha=0.1, fit_intercept=False, tol=1e-12, max_iter=100000).fit(Xs, y).coef_ for y in (Y - Y.mean(0)).T]
    )
    assert coef.shape == (3, 25)
    np.testing.assert_allclose(coef, expected, atol=1e-4, rtol=0)
    assert (coef == 0).any() and (coef != 0).any()
    coef32 = fit_lasso(Xs.astype(np.float32), (Y - Y.mean(0)).astype(np.float32), alpha=0.1)
    np.testing.assert_allclose(coef32, expected, atol=1e-3, rtol=0)
    assert np.all(fit_lasso(Xs, np.zeros((len(Xs), 2)), 0.1) == 0)


def direct_cross_fit(X, Y, groups, X_test, alpha, n_folds, seed):
    """Independent per-fold computation with scikit-learn (training-fold statistics only)."""
    preds, coefs, cvs = [], [], []
    for tr, va in group_folds(groups, n_folds=n_folds, seed=seed):
        sx, sy = StandardScaler().fit(X[tr]), StandardScaler().fit(Y[tr])
        Xs, Ys = sx.transform(X[tr]), sy.transform(Y[tr])
        C = np.array(
            [Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=100000).fit(Xs, y).coef_ for y in Ys.T]
        )
        coefs.append(C)
        preds.append(sy.inverse_transform(sx.transform(X_test) @ C.T))
        pv = sy.inverse_transform(sx.transform(X[va]) @ C.T)
        cvs.append([pearsonr(pv[:, i], Y[va, i])[0] for i in range(Y.shape[1])])
    return np.mean(preds, axis=0), np.array(coefs), np.mean(cvs, axis=0)


def split(X, Y, groups, n_test_images=10):
    test = np.isin(groups, np.unique(groups)[:n_test_images])
    return X[~test], Y[~test], groups[~test], X[test], Y[test]


def test_cross_fitted_lasso_matches_direct_computation():
    X, Y, groups, Xt, Yt = split(*make_data(1, n_images=40))
    res = cross_fitted_lasso(X, Y, groups, Xt, Yt, alpha=0.1, n_folds=5, seed=3, tol=1e-10)
    pred, coef, cv = direct_cross_fit(X, Y, groups, Xt, 0.1, 5, 3)
    assert res.pred.shape == Yt.shape and res.coef.shape == (5, 3, 25)
    np.testing.assert_allclose(res.coef, coef, atol=1e-4, rtol=0)
    np.testing.assert_allclose(res.pred, pred, atol=1e-4 * np.abs(pred).max(), rtol=0)
    np.testing.assert_allclose(res.cv_pearson, cv, atol=1e-6)
    for i in range(3):
        assert res.pearson[i] == pytest.approx(pearsonr(res.pred[:, i], Yt[:, i])[0], abs=1e-10)
        assert res.spearman[i] == pytest.approx(spearmanr(res.pred[:, i], Yt[:, i])[0], abs=1e-10)
    # predictions are in the units of Y (not standardised)
    np.testing.assert_allclose(res.pred.mean(0), Yt.mean(0), atol=0.3 * Yt.std())
    np.testing.assert_allclose(res.pred.std(0), Yt.std(0), rtol=0.3)
    assert res.pearson.min() > 0.8


def test_statistics_come_from_the_training_fold_only():
    """Changing the rows of one fold's held-out images must not change that fold's model."""
    X, Y, groups = make_data(4)
    folds = group_folds(groups, n_folds=5, seed=0)
    base = cross_fitted_lasso(X, Y, groups, X[:5], Y[:5], seed=0, tol=1e-10)
    X2, Y2 = X.copy(), Y.copy()
    va = folds[0][1]
    X2[va] *= 10.0
    Y2[va] += 100.0
    moved = cross_fitted_lasso(X2, Y2, groups, X[:5], Y[:5], seed=0, tol=1e-10)
    np.testing.assert_allclose(moved.coef[0], base.coef[0], atol=1e-6)
    assert not np.allclose(moved.coef[1], base.coef[1], atol=1e-3)


def test_concept_regression_four_maps():
    X, Y, groups, Xt, Yt = split(*make_data(5, n_images=40))
    rng = np.random.default_rng(7)
    acts_train = {"rn18": X, "rn50": X[:, ::-1] + rng.random(X.shape)}
    acts_test = {"rn18": Xt, "rn50": Xt[:, ::-1] + rng.random(Xt.shape)}
    U_train = {"rn18": Y, "rn50": np.abs(Y[:, ::-1])}
    U_test = {"rn18": Yt, "rn50": np.abs(Yt[:, ::-1])}
    out = concept_regression(acts_train, acts_test, U_train, U_test, groups, alpha=0.1, tol=1e-10)
    assert list(out) == [("rn18", "rn18"), ("rn50", "rn18"), ("rn18", "rn50"), ("rn50", "rn50")]
    for (src, tgt), res in out.items():
        single = cross_fitted_lasso(
            acts_train[src], U_train[tgt], groups, acts_test[src], U_test[tgt], alpha=0.1, tol=1e-10
        )
        np.testing.assert_allclose(res.pred, single.pred, atol=1e-6 * np.abs(single.pred).max())
        np.testing.assert_allclose(res.pearson, single.pearson, atol=1e-6)
        assert res.coef.shape == (5, 3, 25)
