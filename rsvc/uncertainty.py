"""How far a similarity number can be trusted: bootstrap intervals over images, a permutation null
for MCS, and the stability of a concept over factorisation restarts (issue 15, library part).

Every resampling keeps an image's patches together: the unit of sampling is the image, never the
patch (patches of one image are strongly correlated). Pearson correlations only.

Shapes: ``n`` patches (rows), ``k`` concepts, ``B`` bootstrap draws, ``P`` permutations.
"""

from __future__ import annotations

import numpy as np

from rsvc.similarity import mcs

__all__ = [
    "image_bootstrap_weights",
    "weighted_paired_pearson",
    "weighted_pearson_matrix",
    "percentile_interval",
    "bootstrap_paired_pearson",
    "bootstrap_mcs",
    "permutation_null_mcs",
    "concept_stability",
    "restart_stability",
]


def image_bootstrap_weights(groups: np.ndarray, B: int, seed: int) -> np.ndarray:
    """Row weights of ``B`` bootstrap draws of images. groups: (n,) image index of each row -> (B, n):
    the number of times the row's image was drawn (n_images draws with replacement per bootstrap)."""
    groups = np.asarray(groups)
    images, inverse = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(images), size=(B, len(images)))
    counts = np.zeros((B, len(images)))
    np.add.at(counts, (np.arange(B)[:, None], draws), 1.0)
    return counts[:, inverse]


def weighted_paired_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted Pearson correlation of matching columns. x, y: (n, k), w: (B, n) -> (B, k); NaN where a
    column has no weighted variance. With integer weights this is the correlation of the repeated rows."""
    x, y, w = np.asarray(x, float), np.asarray(y, float), np.asarray(w, float)
    sw = w.sum(axis=1, keepdims=True)  # (B, 1)
    mx, my = (w @ x) / sw, (w @ y) / sw  # (B, k)
    sxy = w @ (x * y) / sw - mx * my
    sxx = w @ (x * x) / sw - mx * mx
    syy = w @ (y * y) / sw - my * my
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sxy / np.sqrt(sxx * syy)
    r[~((sxx > 1e-300) & (syy > 1e-300))] = np.nan
    return np.clip(r, -1.0, 1.0)


def weighted_pearson_matrix(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted Pearson correlation of every column pair. a: (n, ka), b: (n, kb), w: (B, n) -> (B, ka, kb)."""
    a, b, w = np.asarray(a, float), np.asarray(b, float), np.asarray(w, float)
    sw = w.sum(axis=1)[:, None]
    ma, mb = (w @ a) / sw, (w @ b) / sw  # (B, ka), (B, kb)
    va = w @ (a * a) / sw - ma * ma
    vb = w @ (b * b) / sw - mb * mb
    cab = np.einsum("bn,ni,nj->bij", w, a, b) / sw[:, :, None] - ma[:, :, None] * mb[:, None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cab / np.sqrt(va[:, :, None] * vb[:, None, :])
    ok = (va > 1e-300)[:, :, None] & (vb > 1e-300)[:, None, :]
    r[~ok] = np.nan
    return np.clip(r, -1.0, 1.0)


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` percentile interval over axis 0, NaN draws ignored (all NaN -> NaN)."""
    alpha = (1.0 - level) / 2.0
    s = np.asarray(samples, float)
    ok = np.isfinite(s).any(axis=0)
    low = np.full(s.shape[1:], np.nan)
    high = np.full(s.shape[1:], np.nan)
    if ok.any():
        with np.errstate(invalid="ignore"):
            low[ok] = np.nanquantile(s[:, ok], alpha, axis=0)
            high[ok] = np.nanquantile(s[:, ok], 1.0 - alpha, axis=0)
    return low, high


def bootstrap_paired_pearson(
    pred: np.ndarray, real: np.ndarray, groups: np.ndarray, *, B: int = 200, seed: int = 0, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Interval of CMCS / SMCS: Pearson of predicted and real coefficients per concept, images resampled.
    pred, real: (n, k); groups: (n,) image of each row -> (low (k,), high (k,))."""
    w = image_bootstrap_weights(groups, B, seed)
    return percentile_interval(weighted_paired_pearson(pred, real, w), level)


def bootstrap_mcs(
    Ua: np.ndarray, Ub: np.ndarray, groups: np.ndarray, *, B: int = 200, seed: int = 0, level: float = 0.95
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Intervals of MCS on the shared patches, images resampled. Ua: (n, ka), Ub: (n, kb) ->
    ``((low_a, high_a) (ka,), (low_b, high_b) (kb,))``: a's concepts against b's, and b's against a's."""
    w = image_bootstrap_weights(groups, B, seed)
    mcs_a, mcs_b = mcs(weighted_pearson_matrix(Ua, Ub, w))
    return percentile_interval(mcs_a, level), percentile_interval(mcs_b, level)


def _image_rows(groups: np.ndarray) -> list[np.ndarray]:
    images = np.unique(groups)
    return [np.flatnonzero(groups == g) for g in images]


def permutation_null_mcs(
    Ua: np.ndarray, Ub: np.ndarray, groups: np.ndarray, *, P: int = 200, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The MCS a concept gets by chance: the pairing of images between the two models is broken by
    permuting b's images (each image's patches stay together, in grid order).

    Needs the same number of patches per image (one patch grid). -> ``(null_mean_a (ka,), p_a (ka,),
    null_mean_b (kb,), p_b (kb,))``, p = (1 + #{null >= observed}) / (1 + P).
    """
    groups = np.asarray(groups)
    rows = _image_rows(groups)
    sizes = {len(r) for r in rows}
    if len(sizes) != 1:
        raise ValueError("the permutation null needs the same number of patches in every image")
    order = np.concatenate(rows)  # image-major
    a, b = np.asarray(Ua, float)[order], np.asarray(Ub, float)[order]
    size, n_img = sizes.pop(), len(rows)
    obs_a, obs_b = mcs(weighted_pearson_matrix(a, b, np.ones((1, len(order))))[0])
    rng = np.random.default_rng(seed)
    blocks = b.reshape(n_img, size, -1)
    null_a = np.empty((P, a.shape[1]))
    null_b = np.empty((P, b.shape[1]))
    ones = np.ones((1, len(order)))
    for p in range(P):
        bp = blocks[rng.permutation(n_img)].reshape(len(order), -1)
        na, nb = mcs(weighted_pearson_matrix(a, bp, ones)[0])
        null_a[p], null_b[p] = na, nb
    with np.errstate(invalid="ignore"):
        p_a = (1 + (null_a >= obs_a).sum(axis=0)) / (1 + P)
        p_b = (1 + (null_b >= obs_b).sum(axis=0)) / (1 + P)
    return np.nanmean(null_a, axis=0), p_a, np.nanmean(null_b, axis=0), p_b


def concept_stability(W: np.ndarray, restarts: list[np.ndarray]) -> np.ndarray:
    """How well each concept is found again by other factorisations of the same activations.

    W: (k, d) the concepts; restarts: [(k', d), ...] refits with other seeds -> (k,): per concept, the
    best cosine with a concept of each restart, averaged over the restarts (1 = found again exactly).
    """
    W = np.asarray(W, float)
    Wn = W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-300)
    best = []
    for Wr in restarts:
        Wr = np.asarray(Wr, float)
        Wrn = Wr / np.maximum(np.linalg.norm(Wr, axis=1, keepdims=True), 1e-300)
        best.append((Wn @ Wrn.T).max(axis=1))
    return np.mean(best, axis=0)


def restart_stability(
    A: np.ndarray, fac, k: int, *, method: str, seed: int, restarts: int, max_iter: int, tol: float
) -> dict[str, np.ndarray]:
    """Stability of the concepts ``fac`` (a :class:`rsvc.factorization.Factorization` of ``A: (n, d)``)
    over ``restarts`` refits from random starts (seeds ``seed + 1 ...``): ``cosine`` (k,), the best cosine
    of each W row (:func:`concept_stability`), and ``self_mcs`` (k,), the MCS of the model with itself on
    the same patches across restarts (the noise floor of MCS), both averaged over the restarts."""
    from rsvc.factorization import factorize
    from rsvc.similarity import pearson_matrix

    refits = [
        factorize(A, k, method=method, seed=seed + r, max_iter=max_iter, tol=tol, init="random")
        for r in range(1, restarts + 1)
    ]
    with np.errstate(invalid="ignore"):
        self_mcs = np.nanmean([mcs(pearson_matrix(fac.U, r.U))[0] for r in refits], axis=0)
    return {"cosine": concept_stability(fac.W, [r.W for r in refits]), "self_mcs": self_mcs}
