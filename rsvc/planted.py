"""Check of the planted-concept demo (paper appendix A.2): which concepts see the square."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rsvc.formats import is_skipped, read_compare_metrics, read_heldout
from rsvc.patches import patch_boxes
from rsvc.specs import direction


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


PLANTED_COLUMNS = ["concept", "square_in_top", "top_n", "cmcs_pearson", "smcs_pearson", "is_square_concept"]


def planted_table(
    compare_file,
    metadata,
    ps: str,
    nc: str,
    *,
    image_size: int,
    patch_size: int,
    synthetic_image_size: int,
    top_n: int,
):
    """Per concept of PS (class 0): how many of its ``top_n`` held-out patches hold the square, its CMCS
    from NC and its SMCS, and which concept is the square's (columns :data:`PLANTED_COLUMNS`).

    metadata: the demo dataset's ``metadata.csv`` (image ``path``, ``has_square``, square box in
    ``synthetic_image_size`` pixels). None when the compare job skipped the class.
    """
    if is_skipped(compare_file)[0]:
        return None
    U, ids, pimg, pidx = read_heldout(compare_file, ps)
    metrics = read_compare_metrics(compare_file)["directions"][direction(nc, ps)]
    meta = metadata.assign(image_id=metadata["path"].astype(str)).set_index("image_id")
    row_meta = meta.reindex(ids[pimg])
    has_square = row_meta["has_square"].fillna(False).astype(bool).to_numpy(bool)
    scale = image_size / synthetic_image_size
    square = np.where(has_square[:, None], row_meta[["x0", "y0", "x1", "y1"]].to_numpy(float) * scale, np.nan)
    contains = overlap_fraction(patch_boxes(image_size, patch_size)[pidx], square) >= 0.5
    best = square_concept(U, contains, n=top_n)
    k = U.shape[1]
    return pd.DataFrame(
        {
            "concept": np.arange(k),
            "square_in_top": square_counts_in_top(U, contains, n=top_n),
            "top_n": top_n,
            "cmcs_pearson": metrics["cmcs_pearson"],
            "smcs_pearson": metrics["smcs_pearson"],
            "is_square_concept": np.arange(k) == best,
        }
    )
