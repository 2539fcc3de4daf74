"""RSVC for one model pair and one class: shared coefficients, layerwise MCS,
concept regression (CMCS/SMCS), the replacement test and dissimilarity views.

All inputs are arrays; the result is a flat ``{"group/name": array}`` mapping
that :func:`rsvc.io.write_h5` stores as is and :mod:`rsvc.tables` reads back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rsvc.formats import compare_datasets
from rsvc.nnls import nnls_batched
from rsvc.regression import concept_regression
from rsvc.replacement import replacement_test
from rsvc.selection import dissimilarity_views
from rsvc.similarity import layerwise_correlation, mcs, mmcs
from rsvc.specs import PRE_LOGITS, direction
from rsvc.uncertainty import mcs_intervals, paired_pearson_interval, permutation_null_mcs, permutation_null_mmcs


@dataclass(frozen=True)
class RowSet:
    """Patches (rows) of an image set, in a fixed order.

    image_ids: (n_images,) image identifiers; patch_image: (n_rows,) index into
    image_ids; patch_index: (n_rows,) position of the patch in the grid.
    """

    image_ids: np.ndarray
    patch_image: np.ndarray
    patch_index: np.ndarray

    @property
    def row_image_ids(self) -> np.ndarray:
        return self.image_ids[self.patch_image]

    @classmethod
    def empty(cls) -> RowSet:
        """No image, no row."""
        return cls(np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))


#: The ranking stream of the shared set: a second seeded ranking, independent of the concept sample's
#: (the default stream ""), as in the paper's code, where the two samples are independent draws.
SHARED_STREAM = "shared"


def image_ranks(image_ids, class_id: str, seed: int, stream: str = "") -> np.ndarray:
    """A seeded pseudo-random rank per image of a class: ``(n,)`` uint64 from BLAKE2b of (seed, stream,
    class, image id). The ``m`` lowest-ranked images of a set are a seeded uniform sample of it; the ``m``
    lowest of a union are among the ``m`` lowest of each of its parts (a bottom-m sketch), so jobs that
    only see the parts pick the same sample of the union without sharing anything but the ids. Streams
    are independent rankings: ``""`` draws each model's concept images, :data:`SHARED_STREAM` the shared
    set."""
    import hashlib

    prefix = (f"{seed}\x1f{class_id}\x1f" if not stream else f"{seed}\x1f{stream}\x1f{class_id}\x1f").encode()
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(prefix + str(i).encode(), digest_size=8).digest(), "little")
            for i in image_ids
        ],
        dtype=np.uint64,
    )


def lowest_ranked(image_ids, m: int | None, class_id: str, seed: int, stream: str = "") -> np.ndarray:
    """The ``m`` images of ``image_ids`` with the lowest :func:`image_ranks` of ``stream`` (all if ``m``
    is None or not smaller), sorted by id: a seeded uniform sample."""
    ids = np.array(sorted(set(map(str, image_ids))), dtype=object)
    if m is None or len(ids) <= m:
        return ids
    order = np.argsort(image_ranks(ids, class_id, seed, stream), kind="stable")
    return np.sort(ids[order[:m]])


def union_images(
    image_sets: list[np.ndarray], cap: int | None, seed: int, class_id: str = "", stream: str = SHARED_STREAM
) -> np.ndarray:
    """Sorted union of image ids, subsampled to at most ``cap`` images: the ``cap`` lowest-ranked of
    ``stream`` (:func:`lowest_ranked`; the shared set's ranking by default), a seeded uniform sample of
    the union."""
    union = set().union(*[set(map(str, s)) for s in image_sets])
    return lowest_ranked(union, cap, class_id, seed, stream)


def gather_rows(parts: list[RowSet], images: np.ndarray) -> tuple[list[tuple[int, np.ndarray]], RowSet]:
    """Select the rows of ``images`` from several row sets (first part that has an image wins).

    Returns ``[(part, row_indices), ...]`` in output order (image-major, patch
    order within an image) and the :class:`RowSet` of the gathered rows.
    """
    wanted = {str(i) for i in images}
    owner: dict[str, int] = {}
    for p, part in enumerate(parts):
        for img in part.image_ids:
            img = str(img)
            if img in wanted and img not in owner:
                owner[img] = p
    order = sorted(owner)
    picks: list[tuple[int, np.ndarray]] = []
    patch_image, patch_index = [], []
    row_ids = [part.row_image_ids.astype(str) for part in parts]
    for new_idx, img in enumerate(order):
        p = owner[img]
        rows = np.flatnonzero(row_ids[p] == img)
        rows = rows[np.argsort(parts[p].patch_index[rows], kind="stable")]
        picks.append((p, rows))
        patch_image.append(np.full(len(rows), new_idx))
        patch_index.append(parts[p].patch_index[rows])
    rowset = RowSet(
        image_ids=np.array(order, dtype=object),
        patch_image=np.concatenate(patch_image) if patch_image else np.zeros(0, int),
        patch_index=np.concatenate(patch_index) if patch_index else np.zeros(0, int),
    )
    return picks, rowset


def take_rows(arrays: list[np.ndarray], picks: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """Concatenate ``arrays[part][rows]`` for every pick."""
    if not picks:
        return np.zeros((0,) + arrays[0].shape[1:], arrays[0].dtype)
    return np.concatenate([arrays[p][rows] for p, rows in picks], axis=0)


def compare_class(
    models: tuple[str, str],
    pool: dict[str, dict[str, np.ndarray]],
    pool_rows: RowSet,
    heldout: dict[str, np.ndarray],
    heldout_rows: RowSet,
    concepts: dict[str, dict[str, np.ndarray]],
    heads: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    alpha: float = 0.1,
    folds: int = 5,
    tol: float = 1e-4,
    max_iter: int = 1000,
    mix: float = 1.0,
    n_views: int = 10,
    seed: int = 0,
    permutations: int = 0,
    mmcs_permutations: int = 0,
    level: float = 0.95,
    heldout_reason: str | None = None,
) -> dict[str, np.ndarray]:
    """Run every RSVC comparison for one class.

    models: the pair (a, b).
    pool: model -> layer -> activations on the shared patches, (n, d_layer);
        layer order is the model's layer order and ends with ``pre_logits``.
    heldout: model -> pre_logits activations on the held-out patches, (m, d).
    concepts: model -> layer -> concept basis W, (k, d_layer).
    heads: model -> (weight (C, d), bias (C,)) of the linear classifier.
    level: coverage of the image-jackknife intervals of CMCS, SMCS (with their standard errors on
    Fisher's z scale and degrees of freedom, from which the aggregate step tests unique calls) and of MCS
    at pre_logits; permutations: draws of the permutation null of MCS, 0 = none; mmcs_permutations: draws
    of the chance level of the layerwise MMCS matrix (``mmcs_null/<method>``), 0 = none (rsvc.uncertainty).
    heldout_reason: the held-out set is too small to score (``concepts.min_heldout_images``): CMCS,
    SMCS, the replacement test and their intervals are NaN, no views are picked; everything measured
    on the shared patches (MMCS, MCS, cross-validated CMCS) is kept. The held-out set may then be empty.
    """
    a, b = models
    layers = {m: list(pool[m]) for m in models}
    empty_heldout = len(heldout_rows.image_ids) == 0
    if empty_heldout:  # computed on the pool as a stand-in, then masked (heldout_reason)
        if heldout_reason is None:
            raise ValueError("compare_class: an empty held-out set needs a heldout_reason")
        heldout, heldout_rows = {m: pool[m][PRE_LOGITS] for m in models}, pool_rows

    # Shared coefficients on the union of both models' images (NNLS per row).
    U_pool = {m: np.stack([nnls_batched(pool[m][l], concepts[m][l]) for l in layers[m]]) for m in models}
    U_held = {m: nnls_batched(heldout[m], concepts[m][PRE_LOGITS]) for m in models}

    # Layerwise MCS / MMCS for every layer pair, both correlation types.
    mmcs_of, mcs_of, mmcs_null = {}, {}, {}
    for method in ("pearson", "spearman"):
        R = layerwise_correlation(U_pool[a], U_pool[b], method=method)
        mmcs_of[method] = mmcs(R)
        if mmcs_permutations:
            mmcs_null[method] = permutation_null_mmcs(
                U_pool[a], U_pool[b], pool_rows.patch_image, P=mmcs_permutations, seed=seed, method=method
            )
        mcs_a, mcs_b = mcs(R[-1, -1])
        mcs_of[(direction(b, a), method)] = mcs_a  # a's concepts vs b's
        mcs_of[(direction(a, b), method)] = mcs_b

    # Concept regression at pre_logits: the four maps.
    groups = pool_rows.patch_image
    reg = concept_regression(
        {m: pool[m][PRE_LOGITS] for m in models},
        heldout,
        {m: U_pool[m][-1] for m in models},
        U_held,
        groups,
        alpha=alpha,
        n_folds=folds,
        seed=seed,
        tol=tol,
        max_iter=max_iter,
    )
    regression = {
        direction(src, tgt): {
            "pearson": res.pearson,
            "spearman": res.spearman,
            "cv_pearson": res.cv_pearson,
            "pred": res.pred,
        }
        for (src, tgt), res in reg.items()
    }

    # Replacement test and dissimilarity views for each cross direction.
    held_image_of_row = heldout_rows.patch_image
    replacement, views_of = {}, {}
    for src, tgt in ((b, a), (a, b)):
        W = concepts[tgt][PRE_LOGITS]
        weight, bias = heads[tgt]
        rep = replacement_test(U_held[tgt], reg[(src, tgt)].pred, reg[(tgt, tgt)].pred, W, weight, bias, mix=mix)
        replacement[direction(src, tgt)] = {"l2": rep.l2, "kl": rep.kl, "match_acc": rep.match_acc}
        k = W.shape[0]
        views = np.full((k, 3, n_views), -1, dtype=np.int64)
        for i in range(k):
            v = dissimilarity_views(U_held[tgt][:, i], reg[(src, tgt)].pred[:, i], held_image_of_row, n=n_views)
            for j, idx in enumerate((v.top_real, v.over, v.under)):
                views[i, j, : len(idx)] = idx
        views_of[direction(src, tgt)] = views

    intervals, null = {}, {}
    for (src, tgt), res in reg.items():
        intervals[("regression", direction(src, tgt))] = paired_pearson_interval(
            res.pred, U_held[tgt], heldout_rows.patch_image, level
        )
    ci_a, ci_b = mcs_intervals(U_pool[a][-1], U_pool[b][-1], groups, level)
    intervals[("mcs", direction(b, a))] = {"ci_low": ci_a[0], "ci_high": ci_a[1]}
    intervals[("mcs", direction(a, b))] = {"ci_low": ci_b[0], "ci_high": ci_b[1]}
    if permutations:
        mean_a, p_a, mean_b, p_b = permutation_null_mcs(U_pool[a][-1], U_pool[b][-1], groups, P=permutations, seed=seed)
        null[direction(b, a)], null[direction(a, b)] = (mean_a, p_a), (mean_b, p_b)

    if heldout_reason is not None:
        _mask_heldout(regression, replacement, views_of, intervals)
    if empty_heldout:
        U_held = {m: U_held[m][:0] for m in models}
        heldout_rows = RowSet.empty()
        for res in regression.values():
            res["pred"] = res["pred"][:0]
    return compare_datasets(
        layers=layers,
        mmcs=mmcs_of,
        mcs=mcs_of,
        regression=regression,
        replacement=replacement,
        views=views_of,
        heldout_U=U_held,
        pool_U_pre_logits={m: U_pool[m][-1] for m in models},
        heldout_rows=heldout_rows,
        pool_rows=pool_rows,
        intervals=intervals,
        null=null,
        mmcs_null=mmcs_null,
    )


def _mask_heldout(regression, replacement, views, intervals) -> None:
    """NaN for every number scored on the held-out patches (in place); no dissimilarity views."""
    for res in regression.values():
        for name in ("pearson", "spearman"):
            res[name] = np.full_like(res[name], np.nan, dtype=np.float64)
    for res in replacement.values():
        for name in list(res):
            res[name] = np.full_like(res[name], np.nan, dtype=np.float64)
    for d in views:
        views[d] = np.full_like(views[d], -1)
    for key in [key for key in intervals if key[0] == "regression"]:
        intervals[key] = {name: np.full_like(v, np.nan, dtype=np.float64) for name, v in intervals[key].items()}
