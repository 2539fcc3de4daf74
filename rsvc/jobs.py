"""Glue between the workflow's config dictionaries and the library.

Plain functions on dicts, paths and arrays (no Snakemake objects): the thin
entry points in ``workflow_scripts/`` call these so each piece of file-format
knowledge lives in exactly one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np
import pandas as pd

from rsvc.io import read_strings

SKIPPED_ATTR = "skipped"


def model_spec(spec: Mapping[str, Any]):
    """:class:`rsvc.models.ModelSpec` from the workflow's model dictionary."""
    from rsvc.models import ModelSpec

    return ModelSpec(
        name=spec["name"],
        timm_name=spec["timm_name"],
        checkpoint=spec.get("checkpoint"),
        pretrained=bool(spec.get("pretrained", False)),
        num_classes=spec.get("num_classes"),
        model_kwargs=dict(spec.get("model_kwargs") or {}),
        pretrained_cfg_overlay=dict(spec.get("pretrained_cfg_overlay") or {}),
    )


def extraction_settings(pixels: Mapping[str, Any], extraction: Mapping[str, Any], token: str = "cls"):
    """:class:`rsvc.activations.ExtractionSettings` from the config sections."""
    from rsvc.activations import ExtractionSettings

    return ExtractionSettings(
        image_size=int(pixels["image_size"]),
        patch_size=int(pixels["patch_size"]),
        batch_size=int(extraction.get("batch_size", 256)),
        num_workers=int(extraction.get("num_workers", 2)),
        device=extraction.get("device", "auto"),
        autocast=extraction.get("autocast"),
        storage_dtype=extraction.get("storage_dtype", "float32"),
        token=token,
    )


def read_image_sets(path: str | Path, classes: list[str] | None = None) -> dict[str, list[tuple[str, str]]]:
    """``{class_id: [(image_id, path), ...]}`` from an image-set table."""
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    items: dict[str, list[tuple[str, str]]] = {}
    for cid, sub in df.groupby("class_id", sort=False):
        if classes is None or cid in classes:
            items[cid] = list(zip(sub["image_id"], sub["path"]))
    return items


def is_skipped(path: str | Path) -> tuple[bool, str]:
    """Whether a per-class result file marks its class as skipped, and why."""
    with h5py.File(path, "r") as f:
        return bool(f.attrs.get(SKIPPED_ATTR, False)), str(f.attrs.get("reason", ""))


def read_head(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Linear classifier (weight (C, d), bias (C,)) exported by ``export_head``."""
    with h5py.File(path, "r") as f:
        return f["weight"][()].astype(np.float64), f["bias"][()].astype(np.float64)


def read_concepts(path: str | Path) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float]]:
    """Layers, W per layer (k, d), own-patch U per layer (n, k) and relative errors."""
    with h5py.File(path, "r") as f:
        layers = list(read_strings(f["layers"]))
        W = {l: f[f"W/{l}"][()].astype(np.float64) for l in layers}
        U = {l: f[f"U/{l}"][()].astype(np.float64) for l in layers}
        err = {l: float(f[f"W/{l}"].attrs["rel_error"]) for l in layers}
    return layers, W, U, err


def _skip(reason: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    return {}, {SKIPPED_ATTR: True, "reason": reason}


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
) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, dict[str, Any]]]:
    """Concepts of one model for one class at every layer of an activation file.

    -> ``(datasets, attrs, group_attrs)`` for :func:`rsvc.io.write_h5`:
    ``W/<layer>: (k, d)``, ``U/<layer>: (n_patches, k)``, the layer order and
    the patches' image ids; a class with fewer than ``min_images`` images gives
    no datasets and ``attrs[SKIPPED_ATTR] = True`` with the reason.
    """
    from rsvc.factorization import choose_method, factorize
    from rsvc.store import read_class_activations

    try:
        acts, image_ids, patch_image, patch_index = read_class_activations(activations, class_id)
    except KeyError:
        acts, image_ids = {}, np.zeros(0, dtype=object)
    n_images = len(image_ids)
    if n_images < min_images:
        data, attrs = _skip(f"{n_images} images < min_images={min_images}")
        return data, attrs, {}
    data: dict[str, np.ndarray] = {}
    layer_attrs: dict[str, dict[str, Any]] = {}
    for layer, A in acts.items():
        A = np.asarray(A, dtype=np.float64)
        if k > A.shape[0]:
            raise ValueError(
                f"concepts.k={k} is larger than the {A.shape[0]} patches of class "
                f"{class_id} in {activations}: lower concepts.k"
            )
        method = choose_method(A, decomposition)
        fac = factorize(A, k, method=method, seed=seed, max_iter=max_iter, tol=tol)
        data[f"W/{layer}"], data[f"U/{layer}"] = fac.W, fac.U
        layer_attrs[f"W/{layer}"] = {"method": fac.method, "rel_error": fac.rel_error,
                                     "n_iter": fac.n_iter, "converged": fac.converged}
    data["layers"] = np.array(list(acts), dtype=object)
    data["image_ids"], data["patch_image"], data["patch_index"] = image_ids, patch_image, patch_index
    return data, {SKIPPED_ATTR: False}, layer_attrs


def _load_rows(path: str | Path, class_id: str, layers: list[str]):
    """(activations {layer: (n, d)}, RowSet) of a class in an activation file, None if absent."""
    from rsvc.compare import RowSet
    from rsvc.store import read_class_activations

    try:
        acts, ids, pimg, pidx = read_class_activations(path, class_id, layers)
    except KeyError:  # no image of this owner is of this class
        return None
    return acts, RowSet(np.asarray(ids, dtype=object), np.asarray(pimg), np.asarray(pidx))


def _gather_union(models, files, class_id, layers_of, cap, seed):
    """Activations of both models on the union of both owners' images of a class.

    files: (model, owner) -> activation file. -> ``(acts {model: {layer: (n, d) float64}}, RowSet)``
    or ``(None, None)`` when no owner has an image of the class.
    """
    from rsvc.compare import gather_rows, take_rows, union_images

    a = models[0]
    parts = {m: [_load_rows(files[(m, o)], class_id, layers_of[m]) for o in models] for m in models}
    present = [i for i, part in enumerate(parts[a]) if part is not None]
    if not present:
        return None, None
    images = union_images([parts[a][i][1].image_ids for i in present], cap, seed)
    picks, rows = gather_rows([parts[a][i][1] for i in present], images)
    for m in models:  # both models must see exactly the same patches
        _, rows_m = gather_rows([parts[m][i][1] for i in present], images)
        if list(rows_m.image_ids) != list(rows.image_ids) or not np.array_equal(rows_m.patch_index, rows.patch_index):
            raise ValueError(f"class {class_id}: {m}'s activation files hold other patches than {a}'s "
                             f"({[files[(m, o)] for o in models]}); delete them and rerun")
    acts = {
        m: {l: take_rows([parts[m][i][0][l] for i in present], picks).astype(np.float64) for l in layers_of[m]}
        for m in models
    }
    return acts, rows


def compare_job(
    models: tuple[str, str],
    class_id: str,
    activations: Mapping[tuple[str, str, str], str | Path],
    concepts: Mapping[str, str | Path],
    heads: Mapping[str, str | Path],
    *,
    splits: Mapping[str, str],
    shared_images: int | None,
    regression: Mapping[str, Any],
    replacement: Mapping[str, Any],
    gallery_n: int,
    seed: int,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every RSVC comparison of one class for a model pair, from the stored files.

    activations: (model, owner, split) -> activation file of ``model`` on
    ``owner``'s images; concepts, heads: model -> file. splits: ``{"pool": ...,
    "heldout": ...}``. -> ``(datasets, attrs)`` for :func:`rsvc.io.write_h5`
    (see :func:`rsvc.compare.compare_class`); a class that cannot be compared
    gives no datasets and ``attrs[SKIPPED_ATTR] = True`` with the reason.
    """
    from rsvc.compare import PRE_LOGITS, compare_class

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
        data, attrs = _skip("; ".join(f"{m}: {r}" for m, r in reasons))
        attrs.update({f"skipped_{m}": r for m, r in reasons})
        return data, attrs
    layers_of = {m: read[m][0] for m in models}
    W = {m: read[m][1] for m in models}

    def files(split):
        return {(m, o): activations[(m, o, split)] for m in models for o in models}

    pool, pool_rows = _gather_union(models, files(splits["pool"]), class_id, layers_of, shared_images, seed)
    if pool is None:
        return _skip(f"no images of this class in split {splits['pool']}")
    held, held_rows = _gather_union(models, files(splits["heldout"]), class_id,
                                    {m: [PRE_LOGITS] for m in models}, None, seed)
    n_held = 0 if held_rows is None else len(held_rows.image_ids)
    if held is None or n_held < 2:
        return _skip(f"{n_held} held-out images (split {splits['heldout']}) predicted as this class; need >= 2")
    out = compare_class(
        models, pool, pool_rows, {m: held[m][PRE_LOGITS] for m in models}, held_rows, W,
        {m: read_head(heads[m]) for m in models},
        alpha=regression["alpha"], folds=regression["folds"], tol=regression["tol"],
        max_iter=regression["max_iter"], mix=replacement["mix"], n_views=gallery_n, seed=seed,
    )
    for m in models:
        out[f"rel_error/{m}"] = np.array([read[m][3][l] for l in layers_of[m]])
    return out, {SKIPPED_ATTR: False, "n_shared_images": len(pool_rows.image_ids), "n_heldout_images": n_held}
