"""The per-class analysis jobs: stored files in, results out (written by :mod:`rsvc.formats`).

Plain functions on dicts, paths and arrays (no Snakemake objects): the thin
entry points in ``workflow_scripts/`` read ``snakemake.*``, call one of these
and write its result.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rsvc.formats import (
    Concepts,
    Skipped,
    add_rel_error,
    add_stability,
    is_skipped,
    read_class_activations,
    read_concepts,
    read_head,
)
from rsvc.specs import PRE_LOGITS

if TYPE_CHECKING:
    import pandas as pd


def concepts_job(
    activations: str | Path,
    class_id: str,
    *,
    k: int,
    min_images: int,
    max_iter: int,
    tol: float,
    decomposition: str,
    seed: int,
    restarts: int = 0,
    init: str = "nndsvd",
    concept_images: int | None = None,
    sample_seed: int | None = None,
) -> Concepts | Skipped:
    """Concepts of one model for one class at every layer of an activation file.

    -> :class:`rsvc.formats.Concepts` (``W: (k, d)``, ``U: (n_patches, k)`` per
    layer), or :class:`rsvc.formats.Skipped` for a class with fewer than
    ``min_images`` images. ``restarts``: the pre_logits factorisation is refitted with
    seeds ``seed + 1 ... seed + restarts`` to measure each concept's stability
    (:func:`rsvc.uncertainty.concept_stability`) and the MCS of the model with itself
    across restarts, the noise floor of MCS (``Concepts.stability``). ``init``: the start of
    the main factorisation (:func:`rsvc.factorization.factorize`). ``concept_images``: the concepts are
    fitted on the ``concept_images`` lowest-ranked images of the file's class
    (:func:`rsvc.compare.lowest_ranked`, the model's own seeded sample; the file may hold more, for
    the shared set), all of them when None; ranked with ``sample_seed`` (default ``seed``: the
    workflow uses the config's seed for both, as the image sets do).
    """
    from rsvc.factorization import choose_method, factorize
    from rsvc.uncertainty import restart_stability

    try:
        acts, image_ids, patch_image, patch_index = read_class_activations(activations, class_id)
    except KeyError:
        acts, image_ids = {}, np.zeros(0, dtype=object)
    n_images = len(image_ids)
    if n_images < min_images:
        return Skipped(f"{n_images} images < concepts.min_images_per_model={min_images}")
    if concept_images is not None and n_images > concept_images:
        from rsvc.compare import RowSet, gather_rows, lowest_ranked, take_rows

        keep = lowest_ranked(image_ids, concept_images, class_id, seed if sample_seed is None else sample_seed)
        picks, kept = gather_rows([RowSet(image_ids, patch_image, patch_index)], keep)
        acts = {layer: take_rows([A], picks) for layer, A in acts.items()}
        image_ids, patch_image, patch_index = kept.image_ids, kept.patch_image, kept.patch_index
    n_patches = len(patch_image)
    if k > n_patches:
        return Skipped(
            f"{n_patches} patches ({len(image_ids)} images) < concepts.k={k}: too few for k concepts; "
            "lower concepts.k or raise concepts.min_images_per_model to skip such classes earlier"
        )
    W, U, fit = {}, {}, {}
    for layer, A in acts.items():
        A = np.asarray(A, dtype=np.float64)
        if k > A.shape[0]:
            raise ValueError(
                f"concepts.k={k} is larger than the {A.shape[0]} patches of class "
                f"{class_id} in {activations}: lower concepts.k"
            )
        method = choose_method(A, decomposition)
        fac = factorize(A, k, method=method, seed=seed, max_iter=max_iter, tol=tol, init=init)
        W[layer], U[layer] = fac.W, fac.U
        fit[layer] = {
            "method": fac.method,
            "rel_error": fac.rel_error,
            "n_iter": fac.n_iter,
            "converged": fac.converged,
        }
        if layer == PRE_LOGITS and restarts:
            stability = restart_stability(
                A, fac, k, method=method, seed=seed, restarts=restarts, max_iter=max_iter, tol=tol
            )
    return Concepts(
        W=W,
        U=U,
        fit=fit,
        image_ids=image_ids,
        patch_image=patch_image,
        patch_index=patch_index,
        stability=stability if restarts and PRE_LOGITS in acts else None,
    )


def _load_rows(path: str | Path, class_id: str, layers: list[str]):
    """(activations {layer: (n, d)}, RowSet) of a class in an activation file, None if absent."""
    from rsvc.compare import RowSet

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
    from rsvc.compare import SHARED_STREAM, gather_rows, lowest_ranked, take_rows, union_images

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
    *,
    splits: Mapping[str, str],
    shared_images: int | None,
    min_images: int,
    regression: Mapping[str, Any],
    replacement: Mapping[str, Any],
    gallery_n: int,
    seed: int,
    min_heldout_images: int,
    uncertainty: Mapping[str, Any] | None = None,
    importance: Mapping[str, Any] | None = None,
    class_index: int | None = None,
    predicted: Mapping[str, Any] | None = None,
) -> tuple[dict[str, np.ndarray] | Skipped, dict[str, Any]]:
    """Every RSVC comparison of one class for a model pair, from the stored files.

    activations: (model, owner, split) -> activation file of ``model`` on
    ``owner``'s images; concepts, heads: model -> file. splits: ``{"pool": ...,
    "heldout": ...}``. -> ``(datasets, attrs)`` for :func:`rsvc.formats.write_compare`
    (see :func:`rsvc.compare.compare_class`); a class that cannot be compared
    gives :class:`rsvc.formats.Skipped` and ``{}``: a model without concepts for it, or fewer than
    ``min_images`` images in the union of both models' pool sets (the paper's rule; a model whose own
    set is smaller is named in ``attrs["note"]``). A class with fewer than ``min_heldout_images``
    held-out images is compared, but its held-out scores are NaN and ``attrs["note"]`` says why.
    ``importance`` (``{"target", "steps"}``, with ``class_index``): concept importance is also computed
    on the shared set (``importance/<model>``, config ``importance.images: shared``, what the paper's
    code does) instead of only on each model's own concept images. ``predicted``: model -> the ids of
    every pool image the model predicts as the class (its full set, before any sample): the union rule
    and ``n_union_images`` count the union of these; without it, the union of the stored (sampled) sets.
    """
    from rsvc.compare import RowSet, compare_class

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

    def files(split):
        return {(m, o): activations[(m, o, split)] for m in models for o in models}

    pool, pool_rows, n_union = _gather_union(models, files(splits["pool"]), class_id, layers_of, shared_images, seed)
    if pool is None:
        return Skipped(f"no images of this class in split {splits['pool']}"), {}
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
        models, files(splits["heldout"]), class_id, {m: [PRE_LOGITS] for m in models}, None, seed
    )
    n_held = 0 if held_rows is None else len(held_rows.image_ids)
    heldout_note = ""
    if n_held < min_heldout_images:
        heldout_note = (
            f"{n_held} held-out images (split {splits['heldout']}) < concepts.min_heldout_images="
            f"{min_heldout_images}: CMCS, SMCS and the replacement test not scored (NaN)"
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
        alpha=regression["alpha"],
        folds=regression["folds"],
        tol=regression["tol"],
        max_iter=regression["max_iter"],
        mix=replacement["mix"],
        n_views=gallery_n,
        seed=seed,
        heldout_reason=heldout_note or None,
        **(uncertainty or {}),
    )
    if importance is not None:
        from rsvc.importance import concept_importance, concept_integrated_gradients

        for m in models:
            attr = concept_integrated_gradients(
                out[f"pool/U_pre_logits/{m}"],
                W[m][PRE_LOGITS],
                *head_of[m],
                class_index,
                target=importance["target"],
                steps=importance["steps"],
            )
            out[f"importance/{m}"] = concept_importance(attr)
    for m in models:
        add_rel_error(out, m, [read[m].rel_error[l] for l in layers_of[m]])
        add_stability(out, m, read[m].stability)
    attrs = {"n_union_images": n_union, "n_shared_images": len(pool_rows.image_ids), "n_heldout_images": n_held}
    return out, {**attrs, "note": note}


def importance_job(
    concepts: str | Path, head: str | Path, class_index: int, *, target: str, steps: int
) -> tuple[np.ndarray, np.ndarray] | Skipped:
    """Concept importance at pre_logits for the class output: ``(importance (k,), attributions (n, k))``,
    or :class:`rsvc.formats.Skipped` when the class has no concepts."""
    from rsvc.importance import concept_importance, concept_integrated_gradients

    skipped, reason = is_skipped(concepts)
    if skipped:
        return Skipped(reason)
    c = read_concepts(concepts)
    weight, bias = read_head(head)
    attr = concept_integrated_gradients(
        c.U[PRE_LOGITS], c.W[PRE_LOGITS], weight, bias, class_index, target=target, steps=steps
    )
    return concept_importance(attr), attr


def image_sets_job(
    predictions: pd.DataFrame,
    classes: list[str],
    *,
    by: str = "predicted",
    max_images: int,
    min_images: int | None,
    seed: int,
    model: str,
    split: str,
    shared_images: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Image sets I_m^c: the readable images ``model`` predicts as c (``by="predicted"``, the paper) or the
    images of folder c (``by="labels"``), sampled (seeded per class) to ``max_images``.

    predictions: :func:`rsvc.formats.read_predictions` of every shard of the split.
    min_images: classes with fewer images are skipped (the pool split), None = keep all.
    shared_images (the pool split): besides the ``max_images`` lowest of the concept ranking (the model's
    concept images), the ``shared_images`` lowest of the shared set's own ranking are sampled, so that
    the compare job finds the shared set of any pair among the stored images
    (:data:`rsvc.compare.SHARED_STREAM`). Every image of the class is listed, ``sampled`` says which
    ones are extracted (the others only count: the union of the full predicted sets).
    -> ``(sets, counts)`` for :func:`rsvc.formats.write_image_sets`.
    """
    import pandas as pd

    from rsvc.formats import COUNT_COLUMNS, IMAGE_SET_COLUMNS, OK

    if by not in ("predicted", "labels"):
        raise ValueError(f"dataset.image_sets must be 'predicted' or 'labels', got {by!r}")
    preds = predictions[predictions["status"] == OK]
    column = "pred_class" if by == "predicted" else "label"
    sets, counts = [], []
    for cid in classes:
        cand = preds[preds[column] == cid].sort_values("image_id")
        n = len(cand)
        if min_images is not None and n < min_images:
            what = "predicted for" if by == "predicted" else "labelled as this class:"
            reason = f"{what} {n} < concepts.min_images_per_model={min_images} images"
            if n == 0 and by == "predicted":
                reason = f"nothing predicted: no image is predicted as this class ({reason})"
            counts.append((model, split, cid, n, 0, "skipped", reason))
            continue
        from rsvc.compare import SHARED_STREAM, lowest_ranked

        # the max_images lowest-ranked: a seeded sample (rsvc.compare.lowest_ranked), and the shared
        # set's candidates from its own ranking
        keep = set(lowest_ranked(cand["image_id"], max_images, cid, seed))
        if shared_images is not None:
            keep |= set(lowest_ranked(cand["image_id"], shared_images, cid, seed, SHARED_STREAM))
        cand = cand.assign(class_id=cid, sampled=cand["image_id"].isin(keep))
        sets.append(cand[IMAGE_SET_COLUMNS])
        counts.append((model, split, cid, n, int(cand["sampled"].sum()), OK, ""))
    sets_df = pd.concat(sets) if sets else pd.DataFrame(columns=IMAGE_SET_COLUMNS)
    return sets_df, pd.DataFrame(counts, columns=COUNT_COLUMNS)


def shard_images(root: str | Path, split: str, shard_classes: list[str], cap: int | None) -> pd.DataFrame:
    """The image files of a shard's class folders (``image_id`` relative to ``root``, ``path``, ``label``),
    at most ``cap`` per folder in file-name order. A missing class folder has no rows, as an empty one
    (the preflight says where that is harmful)."""
    import pandas as pd

    from rsvc.images import list_image_files

    root = Path(root)
    rows = []
    for cid in shard_classes:
        folder = root / split / cid
        files = list_image_files(folder) if folder.is_dir() else []
        if cap is not None and len(files) > cap:
            files = files[:cap]
        rows += [(str(f.relative_to(root)), str(f), cid) for f in files]
    return pd.DataFrame(rows, columns=["image_id", "path", "label"])


def predictions_job(model, images: pd.DataFrame, classes: list[str], settings) -> pd.DataFrame:
    """Whole-image predictions of ``model`` (torch module) for the rows of :func:`shard_images`:
    the table of :func:`rsvc.formats.write_predictions` (unreadable images: status skipped, reason)."""
    from rsvc.activations import predict_images, readable_mask
    from rsvc.formats import OK, SKIPPED_IMAGE

    images = images.copy()
    pred, prob, skipped = predict_images(model, list(images["path"]), settings)
    readable = readable_mask(list(images["path"]), skipped)
    images["status"] = SKIPPED_IMAGE
    images["pred_index"] = -1
    images["prob"] = np.nan
    images.loc[readable, "status"] = OK
    images.loc[readable, "pred_index"] = pred
    images.loc[readable, "prob"] = prob
    names = np.asarray(classes, dtype=object)
    images["pred_class"] = [names[i] if i >= 0 else "" for i in images["pred_index"]]
    reasons = dict(skipped)
    images["reason"] = [reasons.get(path, "") for path in images["path"]]
    return images
