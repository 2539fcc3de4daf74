"""Degenerate numbers: constant layers, concepts absent from every patch and folds without variance
give NaN, which aggregation ignores and counts."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
from conftest import grid_rows

from rsvc.compare import compare_class
from rsvc.formats import Skipped, write_compare, write_importance
from rsvc.tables import concept_rows, layerwise_mean


def test_degenerate_layers_and_concepts_give_nan_that_aggregation_ignores_and_counts(tmp_path):
    """An all-zero layer (dead on the shared patches: every coefficient column constant) and a
    model whose held-out activations are all zero (constant targets: folds and held-out rows
    without variance) give NaN similarities, with no crash and no warning; the layerwise mean
    over classes skips them and counts the classes that have a value (numpy nanmean oracle);
    the tidy table keeps them as NaN."""
    rng = np.random.default_rng(0)
    n_img, P, d = 12, 4, 10
    rows, held_rows = grid_rows(n_img, P), grid_rows(6, P)
    n = n_img * P
    W = {m: {"l0": rng.random((3, d)), "pre_logits": rng.random((3, d))} for m in "ab"}
    classes = {}
    for cid, zero in (("c_zero", True), ("c_fine", False)):
        pool = {m: {"l0": rng.random((n, d)), "pre_logits": rng.random((n, d))} for m in "ab"}
        if zero:
            pool["a"]["l0"][:] = 0.0
        held = {"a": rng.random((6 * P, d)), "b": np.zeros((6 * P, d))}  # b is dead on the held-out images
        heads = {m: (rng.normal(size=(4, d)), rng.normal(size=4)) for m in "ab"}
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # NaN must be produced on purpose, not by 0/0
            out = compare_class(("a", "b"), pool, rows, held, held_rows, W, heads, folds=3)
        classes[cid] = out = dataclasses.replace(out, rel_error={m: np.zeros(2) for m in "ab"})
        for method in ("pearson", "spearman"):
            mm = out.mmcs[method]
            assert np.isnan(mm[0]).all() == zero and np.isfinite(mm[1]).all()
            assert np.isfinite(out.mcs[("b->a", method)]).all()
            # b's concepts are constant on the held-out rows, and b's predictions of a's concepts too
            for way in ("a->b", "b->b", "b->a"):
                assert np.isnan(out.regression[way][method]).all(), way
            assert np.isfinite(out.regression["a->a"][method]).all()
        np.testing.assert_array_equal(out.heldout_U["b"], 0.0)
        assert np.isfinite(out.regression["a->b"]["cv_pearson"]).all()  # the pool rows of b do vary

    files = []
    for cid, out in classes.items():
        path = tmp_path / f"{cid}.h5"
        write_compare(path, out, attrs={"pair": "a-vs-b", "models": ["a", "b"], "class_id": cid})
        files.append(path)
    write_compare(tmp_path / "c_skipped.h5", Skipped("test"), attrs={"pair": "a-vs-b", "class_id": "c_skipped"})
    files.append(tmp_path / "c_skipped.h5")
    for method in ("pearson", "spearman"):
        mean, count, la, lb = layerwise_mean(files, method)
        stack = np.stack([classes[c].mmcs[method] for c in classes])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            np.testing.assert_allclose(mean, np.nanmean(stack, axis=0), atol=1e-12)
        np.testing.assert_array_equal(count, np.isfinite(stack).sum(axis=0))
        assert count.tolist() == [[1, 1], [2, 2]] and (la, lb) == (["l0", "pre_logits"],) * 2

    imp = {}
    for m in "ab":
        imp[m] = tmp_path / f"imp_{m}.h5"
        write_importance(imp[m], np.arange(3.0), np.zeros((1, 3)), attrs={})
    table = concept_rows(files[0], imp, "a-vs-b", "zero")
    assert table["cmcs_pearson"].isna().all() and table["smcs_pearson"].isna().sum() == 3  # b->b only
    assert all("CMCS undefined" in note for note in table["note"])  # the reason, per concept
    assert table["unique"].isna().all()  # filled by unique_calls over the whole pair, never False here
    assert concept_rows(tmp_path / "c_skipped.h5", imp, "a-vs-b", "skipped").empty


def test_folds_without_variance_are_ignored_in_the_cross_validated_score():
    """A concept constant on one fold's left-out images gets NaN for that fold only, and the
    cross-validated score is the mean over the other folds; a concept constant everywhere is NaN.
    Oracle: each fold's predictions rebuilt from its stored coefficients and the fold's own
    training statistics, scored with scipy.stats.pearsonr."""
    from scipy.stats import pearsonr

    from rsvc.regression import cross_fitted_lasso, group_folds

    rng = np.random.default_rng(0)
    n_img, P, d = 10, 4, 6
    groups = np.repeat(np.arange(n_img), P)
    X = rng.normal(size=(n_img * P, d))
    Y = np.abs(X @ rng.normal(size=(d, 3)) + 0.3 * rng.normal(size=(n_img * P, 3)))
    folds = group_folds(groups, n_folds=5, seed=0)
    Y[folds[0][1], 0] = 1.0  # concept 0: no variance on the images left out by fold 0
    Y[:, 2] = 0.5  # concept 2: constant everywhere
    X_test, Y_test = X[:12] + 0.1, Y[:12]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = cross_fitted_lasso(X, Y, groups, X_test, Y_test, alpha=0.05, n_folds=5, seed=0, tol=1e-8)
    cv = np.full((5, 3), np.nan)
    for f, (tr, va) in enumerate(folds):
        mx, sx = X[tr].mean(0), X[tr].std(0)
        my, sy = Y[tr].mean(0), Y[tr].std(0)
        sx, sy = np.where(sx > 0, sx, 1.0), np.where(sy > 0, sy, 1.0)
        pred = (X[va] - mx) / sx @ res.coef[f].T * sy + my
        for i in range(3):
            if np.ptp(pred[:, i]) > 1e-12 and np.ptp(Y[va, i]) > 0:
                cv[f, i] = pearsonr(pred[:, i], Y[va, i])[0]
    assert np.isnan(cv[0, 0]) and np.isfinite(cv[1:, 0]).all() and np.isnan(cv[:, 2]).all()
    np.testing.assert_allclose(res.cv_pearson[:2], np.nanmean(cv[:, :2], axis=0), atol=1e-9)
    assert np.isnan(res.cv_pearson[2]) and np.isnan(res.pearson[2]) and np.isfinite(res.pearson[:2]).all()


def test_concept_absent_from_every_patch_gives_nan_similarity():
    """b's concept 2 is a unit that never fires and that the other concepts do not use: the exact
    NNLS coefficient is 0 on every patch (scipy.optimize.nnls agrees up to 1e-15), so its MCS and
    CMCS must be NaN, not a correlation of round-off."""
    from scipy.optimize import nnls

    rng = np.random.default_rng(0)
    n_img, P, d = 12, 4, 10
    rows, held_rows = grid_rows(n_img, P), grid_rows(6, P)
    A_b = rng.random((n_img * P, d))
    A_b[:, 0] = 0.0
    W_dead = np.vstack([rng.random((2, d)), np.eye(d)[:1]])
    W_dead[:2, 0] = 0.0
    pool = {"a": {"pre_logits": rng.random((n_img * P, d))}, "b": {"pre_logits": A_b}}
    assert max(nnls(W_dead.T, a)[0][2] for a in pool["b"]["pre_logits"]) < 1e-12
    W = {"a": {"pre_logits": rng.random((3, d))}, "b": {"pre_logits": W_dead}}
    held = {m: pool[m]["pre_logits"][: 6 * P] for m in "ab"}
    heads = {m: (rng.normal(size=(4, d)), rng.normal(size=4)) for m in "ab"}
    out = compare_class(("a", "b"), pool, rows, held, held_rows, W, heads, folds=3)
    assert np.isnan(out.mcs[("a->b", "pearson")][2]) and np.isnan(out.regression["a->b"]["pearson"][2])
