"""How far a similarity number can be trusted: bootstrap intervals over images, a permutation null
for MCS, and the stability of a concept over factorisation restarts (issue 15, library part).

Every resampling keeps an image's patches together: the unit of sampling is the image, never the
patch (patches of one image are strongly correlated). Pearson correlations only.

Shapes: ``n`` patches (rows), ``k`` concepts, ``B`` bootstrap draws, ``P`` permutations.
"""

from __future__ import annotations

import warnings

import numpy as np

from rsvc.similarity import mcs

__all__ = [
    "image_bootstrap_weights",
    "weighted_paired_pearson",
    "weighted_pearson_matrix",
    "percentile_interval",
    "jackknife_pearson",
    "t_interval",
    "p_below",
    "paired_pearson_interval",
    "mcs_intervals",
    "benjamini_hochberg",
    "permutation_null_mmcs",
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
    r[:, _constant(x) | _constant(y)] = np.nan
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
    r[:, _constant(a), :] = np.nan
    r[:, :, _constant(b)] = np.nan
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


def _constant(x: np.ndarray) -> np.ndarray:
    """Columns of ``x: (n, k)`` that are constant up to rounding (their spread is below 1e-12 of their
    magnitude): their correlation is undefined. An all-zero lasso prediction, un-standardised by
    floating point arithmetic, is such a column."""
    x = np.asarray(x, float)
    if len(x) == 0:
        return np.ones(x.shape[1:], bool)
    return np.ptp(x, axis=0) <= 1e-12 * np.abs(x).max(axis=0)


def _image_sums(x: np.ndarray, y: np.ndarray, groups: np.ndarray, paired: bool):
    """Per-image sums of the columns of x and y centred at their means (accurate leave-one-out
    moments): ``(n (G,), sx (G, kx), sy (G, ky), sxx, syy, sxy (G, k) or (G, kx, ky))``."""
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    G = int(inverse.max()) + 1 if len(inverse) else 0
    x = np.asarray(x, float) - np.asarray(x, float).mean(axis=0)
    y = np.asarray(y, float) - np.asarray(y, float).mean(axis=0)

    def per_image(v):
        out = np.zeros((G,) + v.shape[1:])
        np.add.at(out, inverse, v)
        return out

    n = np.bincount(inverse, minlength=G).astype(float)
    sxy = per_image(x * y) if paired else per_image(x[:, :, None] * y[:, None, :])
    return n, per_image(x), per_image(y), per_image(x * x), per_image(y * y), sxy


def _pearson_from_sums(n, sx, sy, sxx, syy, sxy, paired: bool, var_floor=None):
    """Pearson correlations from (leading-axis batched) sums; NaN where a variance is at most
    ``var_floor`` (``(vx, vy)``, default 0). -> ``(r, vx, vy)``."""
    nn = np.asarray(n, float)[..., None]
    mx, my = sx / nn, sy / nn
    vx, vy = sxx / nn - mx * mx, syy / nn - my * my
    if paired:
        cov, vv = sxy / nn - mx * my, vx * vy
    else:
        cov = sxy / nn[..., None] - mx[..., :, None] * my[..., None, :]
        vv = vx[..., :, None] * vy[..., None, :]
    fx, fy = (0.0, 0.0) if var_floor is None else var_floor
    okx, oky = vx > fx, vy > fy
    ok = okx & oky if paired else okx[..., :, None] & oky[..., None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(ok, cov / np.sqrt(np.where(ok, vv, 1.0)), np.nan)
    return np.clip(r, -1.0, 1.0), vx, vy


#: Smallest number of images for a jackknife interval (two leave-one-out values and one degree of freedom).
MIN_IMAGES = 3


def jackknife_pearson(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, paired: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pearson correlation with its image jackknife on Fisher's z scale.

    x: (n, kx), y: (n, ky), groups: (n,) image of each row. paired: correlate matching columns
    (kx == ky -> (k,)), else every column pair (-> (kx, ky)). Returns ``(r, se_z, df)``: the correlation,
    the jackknife standard error of ``atanh(r)`` with whole images left out, and the degrees of freedom
    of that error, ``2 (G - 1) / (kurtosis - 1)`` of the jackknife values (Satterthwaite's moment match:
    ``G - 1`` for normal jackknife values, fewer when a few images dominate), clipped to ``[1, G - 1]``.
    All three are NaN where the correlation is undefined: a constant column (up to rounding), fewer than
    :data:`MIN_IMAGES` images, or a column that is constant once one image is left out (the concept lives
    in one image: nothing can be said about its spread).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    n, sx, sy, sxx, syy, sxy = _image_sums(x, y, groups, paired)
    G = len(n)
    tot = [s.sum(axis=0) for s in (sx, sy, sxx, syy, sxy)]
    r, vx, vy = _pearson_from_sums(n.sum(), *tot, paired=paired)
    cx, cy = _constant(x), _constant(y)
    bad = (cx | cy) if paired else (cx[:, None] | cy[None, :])
    r = np.where(bad, np.nan, r)
    shape = r.shape
    if G < MIN_IMAGES:
        nan = np.full(shape, np.nan)
        return nan, nan.copy(), nan.copy()
    floor = (1e-10 * vx, 1e-10 * vy)
    loo, _, _ = _pearson_from_sums(
        n.sum() - n, *(t - s for t, s in zip(tot, (sx, sy, sxx, syy, sxy), strict=True)), paired=paired, var_floor=floor
    )  # (G, ...)
    z_loo = np.arctanh(np.clip(loo, -1 + 1e-15, 1 - 1e-15))
    dev = z_loo - z_loo.mean(axis=0)
    m2 = (dev**2).mean(axis=0)
    se = np.sqrt((G - 1) * m2)
    with np.errstate(invalid="ignore", divide="ignore"):
        kurt = np.where(m2 > 0, (dev**4).mean(axis=0) / np.where(m2 > 0, m2, 1.0) ** 2, 3.0)
        df = np.clip(2.0 * (G - 1) / np.maximum(kurt - 1.0, 1e-12), 1.0, G - 1.0)
    undefined = ~np.isfinite(r) | ~np.isfinite(loo).all(axis=0)
    se = np.where(undefined, np.nan, se)
    df = np.where(undefined, np.nan, df)
    return np.where(undefined, np.nan, r), se, df


def t_interval(
    r: np.ndarray, se_z: np.ndarray, df: np.ndarray, level: float = 0.95, lower_level: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)``: ``tanh(atanh(r) -+ t_df * se_z)``, the t quantile at ``(1 + level) / 2`` for the
    upper end and at ``(1 + lower_level) / 2`` (default ``level``) for the lower end. NaN in, NaN out."""
    from scipy import stats

    lower_level = level if lower_level is None else lower_level
    r, se_z, df = (np.asarray(v, float) for v in (r, se_z, df))
    ok = np.isfinite(r) & np.isfinite(se_z) & np.isfinite(df)
    dfs = np.where(ok, df, 1.0)
    z = np.arctanh(np.clip(np.where(ok, r, 0.0), -1 + 1e-15, 1 - 1e-15))
    s = np.where(ok, se_z, 0.0)
    low = np.tanh(z - stats.t.ppf(0.5 + lower_level / 2, dfs) * s)
    high = np.tanh(z + stats.t.ppf(0.5 + level / 2, dfs) * s)
    return np.where(ok, low, np.nan), np.where(ok, high, np.nan)


def p_below(r: np.ndarray, se_z: np.ndarray, df: np.ndarray, bound) -> np.ndarray:
    """One-sided p-value of H0: rho >= bound against rho < bound (the t test on Fisher's z scale that
    :func:`t_interval` inverts: ``p < (1 - level) / 2`` exactly when the interval's upper end is below
    ``bound``). Continuous, so p-values rank however small. NaN where r, se_z, df or bound are NaN; a
    bound at +-1 is clipped into (-1, 1); ``se_z == 0`` gives 0 or 1."""
    from scipy import stats

    r, se_z, df, bound = np.broadcast_arrays(*(np.asarray(v, float) for v in (r, se_z, df, bound)))
    ok = np.isfinite(r) & np.isfinite(se_z) & np.isfinite(df) & np.isfinite(bound)
    eps = 1 - 1e-15
    diff = np.arctanh(np.clip(np.where(ok, r, 0), -eps, eps)) - np.arctanh(np.clip(np.where(ok, bound, 0), -eps, eps))
    s = np.where(ok, se_z, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(s > 0, diff / np.where(s > 0, s, 1.0), np.where(diff < 0, -np.inf, np.inf))
    return np.where(ok, stats.t.cdf(t, np.where(ok, df, 1.0)), np.nan)


def paired_pearson_interval(
    pred: np.ndarray, real: np.ndarray, groups: np.ndarray, level: float = 0.95
) -> dict[str, np.ndarray]:
    """Interval of CMCS / SMCS: Pearson of predicted and real coefficients per concept with its image
    jackknife (:func:`jackknife_pearson`, :func:`t_interval`). pred, real: (n, k); groups: (n,) image
    of each row -> ``{"ci_low", "ci_high", "se_z", "df"}`` (k,) each, NaN where undefined."""
    r, se, df = jackknife_pearson(pred, real, groups, paired=True)
    low, high = t_interval(r, se, df, level)
    return {"ci_low": low, "ci_high": high, "se_z": se, "df": df}


def mcs_intervals(
    Ua: np.ndarray, Ub: np.ndarray, groups: np.ndarray, level: float = 0.95
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Intervals of MCS (the maximum over the other model's concepts) on the shared patches.

    Each correlation R[i, j] gets its jackknife t interval; the interval of ``max_j rho[i, j]`` is
    ``[max_j low_ij, max_j high_ij]`` with the lower ends at level ``1 - (1 - level) / k_other``
    (Bonferroni over the candidates). Its coverage is at least ``level`` whatever the ties: the upper end
    fails only if the interval of the true best pair misses high (``(1 - level) / 2``), the lower end
    only if some pair's lower end lies above its own correlation (at most ``k_other`` times
    ``(1 - level) / (2 k_other)``). Taking the bootstrap distribution of the maximum instead under-covers
    when correlations nearly tie (the maximum of noisy equals is biased up, and so is its bootstrap).
    Ua: (n, ka), Ub: (n, kb) -> ``((low_a, high_a) (ka,), (low_b, high_b) (kb,))``; NaN pairs ignored,
    NaN where every pair of a concept is undefined.
    """
    r, se, df = jackknife_pearson(Ua, Ub, groups, paired=False)  # (ka, kb)
    ka, kb = r.shape
    out = []
    for R, S, D, k_other in ((r, se, df, kb), (r.T, se.T, df.T, ka)):
        low, _ = t_interval(R, S, D, level, lower_level=1 - (1 - level) / k_other)
        _, high = t_interval(R, S, D, level)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(low).any(axis=1)
            lo = np.where(ok, np.nanmax(np.where(np.isfinite(low), low, -np.inf), axis=1), np.nan)
            hi = np.where(ok, np.nanmax(np.where(np.isfinite(high), high, -np.inf), axis=1), np.nan)
        out.append((lo, hi))
    return out[0], out[1]


def _image_rows(groups: np.ndarray) -> list[np.ndarray]:
    images = np.unique(groups)
    return [np.flatnonzero(groups == g) for g in images]


def _image_major_order(groups: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Rows in image-major order for the permutation nulls: ``(order (n,), patches per image, images)``;
    every image must have the same number of patches (one patch grid)."""
    rows = _image_rows(np.asarray(groups))
    sizes = {len(r) for r in rows}
    if len(sizes) != 1:
        raise ValueError("the permutation null needs the same number of patches in every image")
    return np.concatenate(rows), sizes.pop(), len(rows)


def permutation_null_mcs(
    Ua: np.ndarray, Ub: np.ndarray, groups: np.ndarray, *, P: int = 200, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The MCS a concept gets by chance: the pairing of images between the two models is broken by
    permuting b's images (each image's patches stay together, in grid order).

    Needs the same number of patches per image (one patch grid). -> ``(null_mean_a (ka,), p_a (ka,),
    null_mean_b (kb,), p_b (kb,))``, p = (1 + #{null >= observed}) / (1 + P).
    """
    order, size, n_img = _image_major_order(groups)
    a, b = np.asarray(Ua, float)[order], np.asarray(Ub, float)[order]
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
    return (*_null_summary(null_a, obs_a, P), *_null_summary(null_b, obs_b, P))


def permutation_null_mmcs(
    Ua: np.ndarray, Ub: np.ndarray, groups: np.ndarray, *, P: int, seed: int = 0, method: str = "pearson"
) -> np.ndarray:
    """The chance level of the layerwise MMCS matrix of one class: the mean over ``P`` permutations of
    the MMCS of every layer pair with b's images permuted (each image's patches together, in grid order;
    the same scheme as :func:`permutation_null_mcs`), computed as one matrix product per permutation of
    the stacked standardised columns (standardising commutes with permuting rows).

    Ua: (La, n, ka), Ub: (Lb, n, kb) coefficients on the same n patches -> (La, Lb); NaN where a layer
    pair has no defined correlation. Unrelated models get this MMCS by chance (a maximum over k noisy
    correlations); the aggregate step averages it over classes and subtracts it (the calibrated matrix).
    """
    from rsvc.similarity import _standardise
    from rsvc.similarity import mmcs as mmcs_of

    Ua, Ub = np.asarray(Ua, float), np.asarray(Ub, float)
    La, n, ka = Ua.shape
    Lb, _, kb = Ub.shape
    order, size, n_img = _image_major_order(groups)
    Za = _standardise(np.moveaxis(Ua, 1, 0).reshape(n, La * ka)[order], method)
    Zb = _standardise(np.moveaxis(Ub, 1, 0).reshape(n, Lb * kb)[order], method)
    bad_a, bad_b = ~np.isfinite(Za).all(axis=0), ~np.isfinite(Zb).all(axis=0)  # constant columns
    Za, Zb = np.nan_to_num(Za), np.nan_to_num(Zb).reshape(n_img, size, Lb * kb)  # zero here, NaN in R below
    rng = np.random.default_rng(seed)
    total = np.zeros((La, Lb))
    count = np.zeros((La, Lb))
    for _ in range(P):
        R = Za.T @ Zb[rng.permutation(n_img)].reshape(n, Lb * kb)
        R[bad_a, :] = np.nan
        R[:, bad_b] = np.nan
        m = mmcs_of(np.clip(R, -1, 1).reshape(La, ka, Lb, kb).transpose(0, 2, 1, 3))
        ok = np.isfinite(m)
        total[ok] += m[ok]
        count += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _null_summary(null: np.ndarray, obs: np.ndarray, P: int) -> tuple[np.ndarray, np.ndarray]:
    """(null mean, p-value) per concept; both NaN where the observed MCS is undefined (a concept with
    constant coefficients has no MCS, so no evidence either way), the mean NaN where no permutation
    gave a value."""
    with np.errstate(invalid="ignore"):
        p = (1 + (null >= obs).sum(axis=0)) / (1 + P)
    finite = np.isfinite(null)
    count = finite.sum(axis=0)
    mean = np.where(count > 0, np.where(finite, null, 0).sum(axis=0) / np.maximum(count, 1), np.nan)
    undefined = ~np.isfinite(obs)
    return np.where(undefined, np.nan, mean), np.where(undefined, np.nan, p)


def concept_stability(W: np.ndarray, restarts: list[np.ndarray]) -> np.ndarray:
    """How well each concept is found again by other factorisations of the same activations.

    W: (k, d) the concepts; restarts: [(k', d), ...] refits with other seeds -> (k,): per concept, the
    best cosine with a concept of each restart, averaged over the restarts (1 = found again exactly).
    """
    W = np.asarray(W, float)
    norm = np.linalg.norm(W, axis=1, keepdims=True)
    Wn = W / np.where(norm > 0, norm, 1.0)
    best = []
    for Wr in restarts:
        Wr = np.asarray(Wr, float)
        nr = np.linalg.norm(Wr, axis=1, keepdims=True)
        cos = Wn @ (Wr / np.where(nr > 0, nr, 1.0)).T
        cos[:, (nr[:, 0] == 0)] = np.nan  # a zero concept of a restart matches nothing
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            best.append(np.nanmax(cos, axis=1))
    if not best:
        return np.full(len(W), np.nan)
    best = np.array(best)
    count = np.isfinite(best).sum(axis=0)
    mean = np.where(count > 0, np.where(np.isfinite(best), best, 0).sum(axis=0) / np.maximum(count, 1), np.nan)
    return np.where(norm[:, 0] > 0, mean, np.nan)  # a zero row has no direction: undefined, not 0


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
    per_restart = np.array([mcs(pearson_matrix(fac.U, r.U))[0] for r in refits])
    count = np.isfinite(per_restart).sum(axis=0)  # NaN (constant coefficients) ignored; none: NaN
    self_mcs = np.where(
        count > 0, np.where(np.isfinite(per_restart), per_restart, 0).sum(axis=0) / np.maximum(count, 1), np.nan
    )
    return {"cosine": concept_stability(fac.W, [r.W for r in refits]), "self_mcs": self_mcs}


def benjamini_hochberg(p: np.ndarray, fdr: float, *, dependence: str = "bh") -> tuple[np.ndarray, np.ndarray]:
    """Step-up false-discovery control over every finite p-value of ``p`` (one family).

    dependence: ``"bh"`` Benjamini-Hochberg (valid under independence and positive dependence),
    ``"by"`` Benjamini-Yekutieli (any dependence; the threshold divided by ``sum_{i<=m} 1/i``).
    -> ``(q, discovered)``: adjusted p-values (the smallest FDR at which each test is discovered,
    monotone in p) and ``q <= fdr``; NaN p-values are not tests: their q is NaN and they count neither
    in m nor as discoveries (``discovered`` is False there; callers keep the NaN).
    """
    if dependence not in ("bh", "by"):
        raise ValueError(f"uncertainty.fdr_method must be 'bh' or 'by', got {dependence!r}")
    p = np.asarray(p, float)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m:
        pv = p[ok]
        order = np.argsort(pv, kind="stable")
        scale = m / np.arange(1, m + 1)
        if dependence == "by":
            scale = scale * np.sum(1.0 / np.arange(1, m + 1))
        adj = np.minimum.accumulate((pv[order] * scale)[::-1])[::-1]
        qq = np.empty(m)
        qq[order] = np.minimum(adj, 1.0)
        q[ok] = qq
    with np.errstate(invalid="ignore"):
        return q, np.where(ok, q <= fdr, False)
