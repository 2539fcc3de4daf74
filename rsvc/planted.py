"""Check of the planted-concept demo (paper appendix A.2): which concepts see the square."""

from __future__ import annotations

import numpy as np


def overlap_fraction(patch_boxes: np.ndarray, square_boxes: np.ndarray) -> np.ndarray:
    """Fraction of each square's area inside the matching patch.

    patch_boxes, square_boxes: (n, 4) as x0, y0, x1, y1 (NaN square = no square) -> (n,)
    """
    p = np.asarray(patch_boxes, dtype=float)
    s = np.asarray(square_boxes, dtype=float)
    w = np.clip(np.minimum(p[:, 2], s[:, 2]) - np.maximum(p[:, 0], s[:, 0]), 0, None)
    h = np.clip(np.minimum(p[:, 3], s[:, 3]) - np.maximum(p[:, 1], s[:, 1]), 0, None)
    area = (s[:, 2] - s[:, 0]) * (s[:, 3] - s[:, 1])
    with np.errstate(invalid="ignore"):
        frac = w * h / area
    return np.nan_to_num(frac, nan=0.0)


def square_counts_in_top(U: np.ndarray, contains: np.ndarray, n: int = 10) -> np.ndarray:
    """For each concept, how many of its top-``n`` patches (by coefficient) contain the square.

    U: (m, k) coefficients of held-out patches; contains: (m,) bool -> (k,) int
    """
    order = np.argsort(-U, axis=0, kind="stable")[:n]
    return contains[order].sum(axis=0)


def square_concept(U: np.ndarray, contains: np.ndarray, n: int = 10) -> int:
    """The concept whose top-``n`` patches most often contain the square.

    Ties (several concepts with, say, 10 of 10) are broken by looking deeper
    into the ranking: the count among the top ``2n``, then ``4n``, ... patches,
    so the concept that responds to the square most exclusively wins; the
    lowest index wins a tie that survives the whole ranking.

    U: (m, k) coefficients of held-out patches; contains: (m,) bool -> concept index
    """
    m, k = U.shape
    candidates = np.arange(k)
    depth = n
    while len(candidates) > 1:
        counts = square_counts_in_top(U[:, candidates], contains, n=min(depth, m))
        candidates = candidates[counts == counts.max()]
        if depth >= m:
            break
        depth *= 2
    return int(candidates[0])
