"""Patches that show how a concept is (dis)similar across models (paper section 3.4, Fig. 2, B.2).

For one target concept: the top-n patches by real coefficient (what the
concept is), then the top-n over-predicted (``pred - real`` largest) and the
top-n under-predicted (``real - pred`` largest) patches. Each view takes at
most one patch per image (its best-ranked one), and the over/under views skip
the images already shown in the top-real view. Ties keep the lower row index.
Only patches whose score is above zero qualify: a patch where the concept is
absent (real 0) is not a "top real" patch, and one whose residual is zero is
not a difference, so a view may hold fewer than n patches (or none).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DissimilarityViews", "dissimilarity_views"]


@dataclass(frozen=True)
class DissimilarityViews:
    """Row indices, best first: top_real (<= n,), over (<= n,), under (<= n,)."""

    top_real: np.ndarray
    over: np.ndarray
    under: np.ndarray


def _top_one_per_image(score: np.ndarray, image_ids: np.ndarray, n: int, allowed: np.ndarray) -> np.ndarray:
    """Rows with the largest ``score`` among ``allowed`` rows, at most one per image, at most n."""
    rows = np.flatnonzero(allowed)
    rows = rows[np.argsort(-score[rows], kind="stable")]  # descending, ties by row index
    _, first = np.unique(image_ids[rows], return_index=True)  # best row of each image
    return rows[np.sort(first)][:n]


def dissimilarity_views(real: np.ndarray, pred: np.ndarray, image_ids: np.ndarray, n: int = 10) -> DissimilarityViews:
    """Top-real, over-predicted and under-predicted patches of one concept.

    real, pred: (m,) coefficients of the concept (true and predicted);
    image_ids: (m,) image of each row (patch).
    """
    real = np.asarray(real, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    image_ids = np.asarray(image_ids)
    if not (real.shape == pred.shape == image_ids.shape) or real.ndim != 1:
        raise ValueError("real, pred and image_ids must be (m,) arrays of equal length")
    top_real = _top_one_per_image(real, image_ids, n, real > 0)
    rest = ~np.isin(image_ids, image_ids[top_real])
    over, under = pred - real, real - pred
    return DissimilarityViews(
        top_real=top_real,
        over=_top_one_per_image(over, image_ids, n, rest & (over > 0)),
        under=_top_one_per_image(under, image_ids, n, rest & (under > 0)),
    )
