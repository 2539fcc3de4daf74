"""RSVC for one model pair and one class: shared coefficients, layerwise MCS,
concept regression (CMCS/SMCS), the replacement test and dissimilarity views.

:func:`compare_class` works on arrays and returns a :class:`ClassComparison`;
:func:`compare_job` reads the stored files of a class, calls it and adds what the
stored concepts know (factorisation errors, stability, importance on the shared set).
:func:`rsvc.formats.write_compare` flattens the result into a compare file and
:mod:`rsvc.tables` reads it back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rsvc.formats import ClassComparison, Skipped, is_skipped, read_class_activations, read_concepts, read_head
from rsvc.importance import class_importance
from rsvc.nnls import nnls_batched
from rsvc.regression import concept_regression
from rsvc.replacement import replacement_test
from rsvc.sampling import SHARED_STREAM, RowSet, gather_rows, lowest_ranked, take_rows, union_images
from rsvc.selection import dissimilarity_views
from rsvc.settings import CompareSettings
from rsvc.similarity import layerwise_correlation, mcs, mmcs
from rsvc.specs import PRE_LOGITS, direction
from rsvc.uncertainty import mcs_intervals, paired_pearson_interval, permutation_null_mcs, permutation_null_mmcs


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
) -> ClassComparison:
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
    return ClassComparison(
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


def _load_rows(path: str | Path, class_id: str, layers: list[str]):
    """(activations {layer: (n, d)}, RowSet) of a class in an activation file, None if absent."""
    try:
        acts, ids, pimg, pidx = read_class_activations(path, class_id, layers)
    except KeyError:  # no image of this owner is of this class
        return None
    return acts, RowSet(np.asarray(ids, dtype=object), np.asarray(pimg), np.asarray(pidx))


def _gather_union(models, files, class_id, layers_of, cap, seed):
    """Activations of both models on the union of both owners' images of a class.

    files: (model, owner) -> activation file. -> ``(acts {model: {layer: (n, d) float64}}, RowSet,
    size of the union before the cap)`` or ``(None, None, 0)`` when no owner has an image of the class.
    """
    a = models[0]
    parts = {m: [_load_rows(files[(m, o)], class_id, layers_of[m]) for o in models] for m in models}
    present = [i for i, part in enumerate(parts[a]) if part is not None]
    if not present:
        return None, None, 0
    union = union_images([parts[a][i][1].image_ids for i in present], None, seed)
    # the shared set's own ranking (independent of the concept samples); every file holds each owner's
    # cap lowest of that ranking, so these are the cap lowest of the union of the full predicted sets
    images = lowest_ranked(union, cap, class_id, seed, SHARED_STREAM)
    picks, rows = gather_rows([parts[a][i][1] for i in present], images)
    for m in models:  # both models must see exactly the same patches
        _, rows_m = gather_rows([parts[m][i][1] for i in present], images)
        if list(rows_m.image_ids) != list(rows.image_ids) or not np.array_equal(rows_m.patch_index, rows.patch_index):
            raise ValueError(
                f"class {class_id}: {m}'s activation files hold other patches than {a}'s "
                f"({[files[(m, o)] for o in models]}); delete them and rerun"
            )
    acts = {
        m: {l: take_rows([parts[m][i][0][l] for i in present], picks).astype(np.float64) for l in layers_of[m]}
        for m in models
    }
    return acts, rows, len(union)


def compare_job(
    models: tuple[str, str],
    class_id: str,
    activations: Mapping[tuple[str, str, str], str | Path],
    concepts: Mapping[str, str | Path],
    heads: Mapping[str, str | Path],
    settings: CompareSettings,
    *,
    class_index: int | None = None,
    predicted: Mapping[str, Any] | None = None,
) -> tuple[ClassComparison | Skipped, dict[str, Any]]:
    """Every RSVC comparison of one class for a model pair, from the stored files.

    activations: (model, owner, split) -> activation file of ``model`` on ``owner``'s images; concepts,
    heads: model -> file. -> ``(result, attrs)`` for :func:`rsvc.formats.write_compare` (see
    :func:`compare_class`); a class that cannot be compared gives :class:`rsvc.formats.Skipped` and ``{}``:
    a model without concepts for it, or fewer than ``settings.min_images`` images in the union of both
    models' pool sets (the paper's rule; a model whose own set is smaller is named in ``attrs["note"]``).
    A class with fewer than ``settings.min_heldout_images`` held-out images is compared, but its held-out
    scores are NaN and ``attrs["note"]`` says why. ``settings.importance`` (with ``class_index``): concept
    importance is also computed on the shared set (``importance.images: shared``, what the paper's code
    does) instead of only on each model's own concept images. ``predicted``: model -> the ids of every
    pool image the model predicts as the class (its full set, before any sample): the union rule and
    ``n_union_images`` count the union of these; without it, the union of the stored (sampled) sets.
    """
    a, b = models
    read = {}
    reasons = []
    for m in models:
        skipped, reason = is_skipped(concepts[m])
        if skipped:
            reasons.append((m, reason))
        else:
            read[m] = read_concepts(concepts[m])
    if reasons:
        return Skipped("; ".join(f"{m}: {r}" for m, r in reasons), {f"skipped_{m}": r for m, r in reasons}), {}
    layers_of = {m: read[m].layers for m in models}
    W = {m: read[m].W for m in models}
    min_images, min_held, seed = settings.min_images, settings.min_heldout_images, settings.seed

    def files(split):
        return {(m, o): activations[(m, o, split)] for m in models for o in models}

    pool, pool_rows, n_union = _gather_union(
        models, files(settings.pool_split), class_id, layers_of, settings.shared_images, seed
    )
    if pool is None:
        return Skipped(f"no images of this class in split {settings.pool_split}"), {}
    if predicted is not None:  # the union of the full predicted sets, not of the stored samples
        n_union = len(set().union(*(set(map(str, predicted[m])) for m in models)))
    if n_union < min_images:
        return Skipped(
            f"{n_union} images in the union of both models' pool sets < concepts.min_images={min_images}"
        ), {}
    notes = [
        f"{m}'s own concept set is small: {len(read[m].image_ids)} images < concepts.min_images={min_images}"
        for m in models
        if len(read[m].image_ids) < min_images
    ]
    head_of = {m: read_head(heads[m]) for m in models}
    held, held_rows, _ = _gather_union(
        models, files(settings.heldout_split), class_id, {m: [PRE_LOGITS] for m in models}, None, seed
    )
    n_held = 0 if held_rows is None else len(held_rows.image_ids)
    heldout_note = ""
    if n_held < min_held:
        heldout_note = (
            f"{n_held} held-out images (split {settings.heldout_split}) < concepts.min_heldout_images="
            f"{min_held}: CMCS, SMCS and the replacement test not scored (NaN)"
        )
    note = "; ".join(notes + [heldout_note] if heldout_note else notes)
    if held is None:
        dims = {m: pool[m][PRE_LOGITS].shape[1] for m in models}
        held = {m: {PRE_LOGITS: np.zeros((0, dims[m]))} for m in models}
        held_rows = RowSet.empty()
    out = compare_class(
        models,
        pool,
        pool_rows,
        {m: held[m][PRE_LOGITS] for m in models},
        held_rows,
        W,
        head_of,
        alpha=settings.alpha,
        folds=settings.folds,
        tol=settings.tol,
        max_iter=settings.max_iter,
        mix=settings.mix,
        n_views=settings.n_views,
        seed=seed,
        heldout_reason=heldout_note or None,
        **settings.uncertainty.params(),
    )
    importance = {}
    if settings.importance is not None:  # on the shared set's coefficients
        for m in models:
            importance[m], _ = class_importance(
                out.pool_U_pre_logits[m], W[m][PRE_LOGITS], head_of[m], class_index, settings.importance
            )
    out = dataclasses.replace(
        out,
        importance=importance,
        rel_error={m: [read[m].rel_error[l] for l in layers_of[m]] for m in models},
        stability={m: read[m].stability for m in models},
    )
    attrs = {"n_union_images": n_union, "n_shared_images": len(pool_rows.image_ids), "n_heldout_images": n_held}
    return out, {**attrs, "note": note}
