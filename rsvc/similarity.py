"""Correlation of concept coefficients and max-concept similarity (paper section 3.2.1, eqs. 1-2).

Every correlation here is a product of standardised columns: Pearson on the
values, Spearman on their average ranks (ties share the mean rank, as in
``scipy.stats.spearmanr``). Columns that are constant get NaN correlations
(like ``scipy.stats.pearsonr``), and MCS / MMCS ignore NaNs.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "pearson_matrix",
    "spearman_matrix",
    "paired_correlation",
    "layerwise_correlation",
    "mcs",
    "mmcs",
]

_METHODS = ("pearson", "spearman")


def _standardise(X: np.ndarray, method: str) -> np.ndarray:
    """Columns of ``X: (n, ..., p)`` along axis 0 scaled to zero mean and unit norm.

    Constant columns (all values equal up to rounding: spread <= 1e-12 of the largest magnitude) become
    NaN. Spearman ranks first.
    """
    X = np.asarray(X, dtype=np.float64)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if X.shape[0] < 2:
        raise ValueError("correlations need at least two rows")
    # constant up to rounding (an all-zero lasso prediction, un-standardised): no correlation
    constant = np.ptp(X, axis=0) <= 1e-12 * np.abs(X).max(axis=0)
    if method == "spearman":
        X = rankdata(X, axis=0)  # average ranks for ties
    Xc = X - X.mean(axis=0)
    norm = np.sqrt(np.einsum("n...,n...->...", Xc, Xc))
    bad = constant | ~(norm > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        Z = Xc / np.where(bad, 1.0, norm)
    Z[..., bad] = np.nan
    return Z


def _correlation_matrix(X: np.ndarray, Y: np.ndarray, method: str) -> np.ndarray:
    X, Y = np.asarray(X), np.asarray(Y)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"expected X (n, p) and Y (n, q), got {X.shape} and {Y.shape}")
    R = _standardise(X, method).T @ _standardise(Y, method)
    return np.clip(R, -1.0, 1.0)


def pearson_matrix(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Pearson correlation of every column pair. X: (n, p), Y: (n, q) -> (p, q); NaN where a column is constant."""
    return _correlation_matrix(X, Y, "pearson")


def spearman_matrix(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Spearman correlation (average ranks for ties). X: (n, p), Y: (n, q) -> (p, q); NaN where a column is constant."""
    return _correlation_matrix(X, Y, "spearman")


def paired_correlation(X: np.ndarray, Y: np.ndarray, method: str = "pearson") -> np.ndarray:
    """Correlation of matching columns. X, Y: (n, p) -> (p,), ``r[i] = corr(X[:, i], Y[:, i])``; NaN if constant."""
    X, Y = np.asarray(X), np.asarray(Y)
    if X.shape != Y.shape or X.ndim != 2:
        raise ValueError(f"expected two (n, p) arrays of equal shape, got {X.shape} and {Y.shape}")
    r = np.einsum("np,np->p", _standardise(X, method), _standardise(Y, method))
    return np.clip(r, -1.0, 1.0)


def layerwise_correlation(Ua: np.ndarray, Ub: np.ndarray, method: str = "pearson") -> np.ndarray:
    """Correlations between the concepts of every layer pair.

    Ua: (La, n, k), Ub: (Lb, n, k) coefficients on the same n patches ->
    R: (La, Lb, k, k) with ``R[l, m, i, j] = corr(Ua[l, :, i], Ub[m, :, j])``,
    computed as one matrix product of the stacked standardised columns.
    The two models may have different k (``Ub``'s last axis).
    """
    Ua, Ub = np.asarray(Ua), np.asarray(Ub)
    if Ua.ndim != 3 or Ub.ndim != 3 or Ua.shape[1] != Ub.shape[1]:
        raise ValueError(f"expected Ua (La, n, k) and Ub (Lb, n, k), got {Ua.shape} and {Ub.shape}")
    La, n, ka = Ua.shape
    Lb, _, kb = Ub.shape
    Za = _standardise(np.moveaxis(Ua, 1, 0).reshape(n, La * ka), method)
    Zb = _standardise(np.moveaxis(Ub, 1, 0).reshape(n, Lb * kb), method)
    R = np.clip(Za.T @ Zb, -1.0, 1.0)  # (La*ka, Lb*kb)
    return R.reshape(La, ka, Lb, kb).transpose(0, 2, 1, 3)


def mcs(R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximum concept similarity (eq. 1). R: (..., k, k) ->
    (mcs_a (..., k) = nanmax over j, mcs_b (..., k) = nanmax over i); all-NaN -> NaN, no warnings.
    """
    R = np.asarray(R, dtype=np.float64)
    # fmax ignores NaN unless both operands are NaN
    return np.fmax.reduce(R, axis=-1), np.fmax.reduce(R, axis=-2)


def _nanmean_last(x: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(x)
    count = ok.sum(axis=-1)
    total = np.where(ok, x, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def mmcs(R: np.ndarray) -> np.ndarray:
    """Mean max concept similarity (eq. 2, one class). R: (..., k, k) -> (...,) = (nanmean mcs_a + nanmean mcs_b) / 2."""
    mcs_a, mcs_b = mcs(R)
    return (_nanmean_last(mcs_a) + _nanmean_last(mcs_b)) / 2
