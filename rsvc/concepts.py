"""Concepts of one model for one class: NMF / Semi-NMF of its patch activations at every layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rsvc.factorization import choose_method, factorize
from rsvc.formats import Concepts, Skipped, read_class_activations
from rsvc.sampling import RowSet, gather_rows, lowest_ranked, take_rows
from rsvc.settings import ConceptSettings
from rsvc.specs import PRE_LOGITS
from rsvc.uncertainty import restart_stability


def concepts_job(
    activations: str | Path,
    class_id: str,
    settings: ConceptSettings,
    *,
    sample_seed: int | None = None,
) -> Concepts | Skipped:
    """Concepts of one model for one class at every layer of an activation file.

    -> :class:`rsvc.formats.Concepts` (``W: (k, d)``, ``U: (n_patches, k)`` per
    layer), or :class:`rsvc.formats.Skipped` for a class with fewer than
    ``settings.min_images`` images (:class:`rsvc.settings.ConceptSettings`). ``restarts``: the pre_logits factorisation is refitted with
    seeds ``seed + 1 ... seed + restarts`` to measure each concept's stability
    (:func:`rsvc.uncertainty.concept_stability`) and the MCS of the model with itself
    across restarts, the noise floor of MCS (``Concepts.stability``). ``init``: the start of
    the main factorisation (:func:`rsvc.factorization.factorize`). ``concept_images``: the concepts are
    fitted on the ``concept_images`` lowest-ranked images of the file's class
    (:func:`rsvc.sampling.lowest_ranked`, the model's own seeded sample; the file may hold more, for
    the shared set), all of them when None; ranked with ``sample_seed`` (default ``seed``: the
    workflow uses the config's seed for both, as the image sets do).
    """
    k, min_images, seed, concept_images = settings.k, settings.min_images, settings.seed, settings.concept_images
    max_iter, tol, restarts = settings.max_iter, settings.tol, settings.restarts
    try:
        acts, image_ids, patch_image, patch_index = read_class_activations(activations, class_id)
    except KeyError:
        acts, image_ids = {}, np.zeros(0, dtype=object)
    n_images = len(image_ids)
    if n_images < min_images:
        return Skipped(f"{n_images} images < concepts.min_images_per_model={min_images}")
    if concept_images is not None and n_images > concept_images:
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
        method = choose_method(A, settings.decomposition)
        fac = factorize(A, k, method=method, seed=seed, max_iter=max_iter, tol=tol, init=settings.init)
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
