"""Concept regression: how well one model's activations predict concept coefficients (paper section 3.2.2, B.2).

For a map ``source -> target`` a lasso (celer, alpha 0.1, no intercept on
standardised data) predicts the target model's coefficients ``U`` from the
source model's activations. Five folds keep all patches of an image together;
each fold standardises inputs and targets with its own training rows only (the
reference code uses all rows, a leak we do not copy), the five fold models'
predictions on the held-out images are averaged and un-standardised, and each
concept is scored with Pearson and Spearman correlation. ``source == target``
gives the same-model baseline (SMCS), ``source != target`` the cross-model
similarity (CMCS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from celer.homotopy import celer_path

from rsvc.similarity import paired_correlation

__all__ = ["group_folds", "fit_lasso", "RegressionResult", "cross_fitted_lasso", "concept_regression"]


def group_folds(groups: np.ndarray, n_folds: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded group k-fold: (train_idx, test_idx) per fold; all rows of a group (image) in one fold.

    Groups are shuffled with ``seed`` and dealt, largest first, to the fold
    with the fewest rows so far (ties: lowest fold), so fold sizes differ by
    at most the size of the largest group. groups: (n,) sortable labels.
    """
    groups = np.asarray(groups)
    labels, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    if n_folds < 2:
        raise ValueError("n_folds must be at least 2")
    if len(labels) < n_folds:
        raise ValueError(f"{len(labels)} groups cannot fill {n_folds} folds")
    order = np.random.default_rng(seed).permutation(len(labels))
    order = order[np.argsort(-counts[order], kind="stable")]
    fold_of = np.empty(len(labels), dtype=np.intp)
    load = np.zeros(n_folds, dtype=np.int64)
    for g in order:
        f = int(np.argmin(load))
        fold_of[g] = f
        load[f] += counts[g]
    row_fold = fold_of[inverse]
    return [(np.flatnonzero(row_fold != f), np.flatnonzero(row_fold == f)) for f in range(n_folds)]


def fit_lasso(
    X: np.ndarray,
    Y: np.ndarray,
    alpha: float,
    *,
    tol: float = 1e-6,
    max_iter: int = 1000,
    coef_init: np.ndarray | None = None,
) -> np.ndarray:
    """Lasso per column of Y with celer, no intercept: ``1/(2n) ||y - X w||^2 + alpha ||w||_1``.

    X: (n, d), Y: (n, k) -> coef (k, d) float64. Same solver and result as
    ``celer.Lasso(alpha, fit_intercept=False, tol=tol, max_iter=max_iter)``
    (celer's ``tol`` is a duality-gap tolerance relative to ``||y||^2 / n``),
    called through ``celer_path`` so that X is validated and laid out once for
    all columns. A float32 X is solved in float32 (twice as fast), anything
    else in float64. ``coef_init``: (k, d) warm start (default: zeros).
    """
    X = np.asarray(X)
    dtype = np.float32 if X.dtype == np.float32 else np.float64
    X = X.astype(dtype, copy=False)
    Y = np.asarray(Y, dtype=dtype)
    if Y.ndim == 1:
        Y = Y[:, None]
    if X.ndim != 2 or Y.shape[0] != X.shape[0]:
        raise ValueError(f"expected X (n, d) and Y (n, k), got {X.shape} and {Y.shape}")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise ValueError("lasso inputs must be finite")
    X = np.asfortranarray(X)  # celer's coordinate descent reads columns
    alphas = np.array([float(alpha)])
    coef = np.zeros((Y.shape[1], X.shape[1]))
    for i in range(Y.shape[1]):
        y = np.ascontiguousarray(Y[:, i])
        if not np.any(y):
            continue  # the minimiser is 0 (and celer would divide by ||y|| = 0)
        init = None if coef_init is None else np.array(coef_init[i], dtype=dtype)
        if init is not None and not init.any():
            init = None
        _, path, _ = celer_path(X, y, "lasso", alphas=alphas, coef_init=init, tol=tol, max_iter=max_iter, prune=True)
        coef[i] = path[:, 0]
    return coef


@dataclass(frozen=True)
class RegressionResult:
    """Cross-fitted lasso for one map ``source -> target``.

    pred: (m, k) held-out predictions (fold models averaged, un-standardised);
    pearson, spearman: (k,) per concept on the held-out rows (NaN if constant);
    cv_pearson: (k,) mean over folds of the Pearson on each fold's own held-out
    training rows; coef: (n_folds, k, d) in standardised units.
    """

    pred: np.ndarray
    pearson: np.ndarray
    spearman: np.ndarray
    cv_pearson: np.ndarray
    coef: np.ndarray


def _fold_standardise(ZT: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardise the rows ``rows`` of ``Z = ZT.T`` with their own mean and population std (std 0 -> 1).

    ZT: (p, n) C-ordered (so that the result is Fortran-ordered without a
    transposing copy). Returns (standardised (len(rows), p), mean (p,), std (p,)),
    the statistics in float64.
    """
    Zs = np.take(ZT, rows, axis=1)  # (p, m) C-order = (m, p) Fortran-order after .T
    mean = Zs.mean(axis=1, dtype=np.float64)
    Zs -= mean.astype(Zs.dtype)[:, None]
    std = np.sqrt(np.einsum("ij,ij->i", Zs, Zs, dtype=np.float64) / len(rows))
    std = np.where(std > 0, std, 1.0)
    Zs /= std.astype(Zs.dtype)[:, None]
    return Zs.T, mean, std


def cross_fitted_lasso(
    X_train: np.ndarray,
    Y_train: np.ndarray,
    groups_train: np.ndarray,
    X_test: np.ndarray,
    Y_test: np.ndarray,
    *,
    alpha: float = 0.1,
    n_folds: int = 5,
    seed: int = 0,
    tol: float = 1e-4,
    max_iter: int = 1000,
) -> RegressionResult:
    """Lasso from ``X`` (n, d) to ``Y`` (n, k) cross-fitted over image folds, scored on held-out rows.

    Per fold: X and Y are standardised with the training fold's mean and
    (population) std (std 0 -> 1), the lasso is fitted (cold start), ``X_test`` (m, d) is predicted and mapped back
    to the units of ``Y``. ``pred`` averages the folds; ``cv_pearson`` scores
    each fold on its own left-out training rows. Float32 activations are
    standardised and solved in float32; statistics, predictions and scores
    are float64.
    """
    X_train, X_test = np.asarray(X_train), np.asarray(X_test)
    dtype = np.float32 if X_train.dtype == X_test.dtype == np.float32 else np.float64
    Y_train = np.asarray(Y_train, dtype=np.float64)
    Y_test = np.asarray(Y_test, dtype=np.float64)
    if X_train.shape[0] != Y_train.shape[0] or X_test.shape[0] != Y_test.shape[0]:
        raise ValueError("X and Y must have the same rows")
    folds = group_folds(groups_train, n_folds=n_folds, seed=seed)
    k, d = Y_train.shape[1], X_train.shape[1]
    XT = np.ascontiguousarray(X_train.T, dtype=dtype)  # (d, n): fold slices come out Fortran-ordered
    YT = np.ascontiguousarray(Y_train.T)
    pred = np.zeros((X_test.shape[0], k))
    coef = np.zeros((n_folds, k, d))
    cv = np.full((n_folds, k), np.nan)
    for f, (tr, va) in enumerate(folds):
        Xs, mx, sx = _fold_standardise(XT, tr)
        Ys, my, sy = _fold_standardise(YT, tr)
        # Cold start per fold: celer warm-started from the previous fold can stall at a
        # duality gap far above tol (seen: 300 s for one class) and makes folds order-dependent.
        coef[f] = fit_lasso(Xs, Ys.astype(dtype), alpha, tol=tol, max_iter=max_iter)
        del Xs
        # prediction in Y units: ((x - mx) / sx) @ coef.T * sy + my
        B = (coef[f] / sx).T * sy  # (d, k)
        offset = my - mx @ B
        pred += X_test @ B + offset
        if len(va) >= 2:
            cv[f] = paired_correlation(X_train[va] @ B + offset, Y_train[va], "pearson")
    pred /= n_folds
    ok = ~np.isnan(cv)
    with np.errstate(invalid="ignore", divide="ignore"):
        cv_pearson = np.where(ok.any(axis=0), np.where(ok, cv, 0).sum(axis=0) / ok.sum(axis=0), np.nan)
    return RegressionResult(
        pred=pred,
        pearson=paired_correlation(pred, Y_test, "pearson"),
        spearman=paired_correlation(pred, Y_test, "spearman"),
        cv_pearson=cv_pearson,
        coef=coef,
    )


def _columns(res: RegressionResult, cols: slice) -> RegressionResult:
    return RegressionResult(
        pred=res.pred[:, cols],
        pearson=res.pearson[cols],
        spearman=res.spearman[cols],
        cv_pearson=res.cv_pearson[cols],
        coef=res.coef[:, cols],
    )


def concept_regression(
    acts_train: dict[str, np.ndarray],
    acts_test: dict[str, np.ndarray],
    U_train: dict[str, np.ndarray],
    U_test: dict[str, np.ndarray],
    groups_train: np.ndarray,
    **lasso_kwargs: Any,
) -> dict[tuple[str, str], RegressionResult]:
    """All four maps between two models: keys (source, target) = (a, a), (b, a), (a, b), (b, b).

    ``acts_*[source]`` (rows, d_source) predicts ``U_*[target]`` (rows, k);
    the rows (patches) are the same for both models. ``lasso_kwargs`` go to
    :func:`cross_fitted_lasso`. Both targets of a source are fitted in one
    call (the lasso is per column, so this only shares the standardisation).
    """
    names = list(acts_train)
    if len(names) != 2 or not (set(names) == set(U_train) == set(acts_test) == set(U_test)):
        raise ValueError("expected the same two model names in every dict")
    a, b = names
    ka = U_train[a].shape[1]
    parts = {a: slice(0, ka), b: slice(ka, None)}
    out = {}
    for src in (a, b):
        res = cross_fitted_lasso(
            acts_train[src],
            np.hstack([U_train[a], U_train[b]]),
            groups_train,
            acts_test[src],
            np.hstack([U_test[a], U_test[b]]),
            **lasso_kwargs,
        )
        for tgt in (a, b):
            out[(src, tgt)] = _columns(res, parts[tgt])
    return {key: out[key] for key in [(a, a), (b, a), (a, b), (b, b)]}
