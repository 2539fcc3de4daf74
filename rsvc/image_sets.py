"""Image sets I_m^c: the images a model predicts as class c (or the images of folder c), the seeded
concept sample and the shared set's candidates among them.
"""

from __future__ import annotations

import pandas as pd

from rsvc.formats import COUNT_COLUMNS, IMAGE_SET_COLUMNS, OK
from rsvc.sampling import SHARED_STREAM, lowest_ranked
from rsvc.settings import ImageSetSettings


def image_sets_job(
    predictions: pd.DataFrame, classes: list[str], settings: ImageSetSettings, *, model: str, split: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Image sets I_m^c: the readable images ``model`` predicts as c (``by="predicted"``, the paper) or the
    images of folder c (``by="labels"``), sampled (seeded per class) to ``max_images``.

    predictions: :func:`rsvc.formats.read_predictions` of every shard of the split.
    min_images: classes with fewer images are skipped (the pool split), None = keep all.
    shared_images (the pool split): besides the ``max_images`` lowest of the concept ranking (the model's
    concept images), the ``shared_images`` lowest of the shared set's own ranking are sampled, so that
    the compare job finds the shared set of any pair among the stored images
    (:data:`rsvc.sampling.SHARED_STREAM`). Every image of the class is listed, ``sampled`` says which
    ones are extracted (the others only count: the union of the full predicted sets).
    -> ``(sets, counts)`` for :func:`rsvc.formats.write_image_sets`.
    """
    by, max_images, min_images = settings.by, settings.max_images, settings.min_images
    shared_images, seed = settings.shared_images, settings.seed
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
        # the max_images lowest-ranked: a seeded sample (rsvc.sampling.lowest_ranked), and the shared
        # set's candidates from its own ranking
        keep = set(lowest_ranked(cand["image_id"], max_images, cid, seed))
        if shared_images is not None:
            keep |= set(lowest_ranked(cand["image_id"], shared_images, cid, seed, SHARED_STREAM))
        cand = cand.assign(class_id=cid, sampled=cand["image_id"].isin(keep))
        sets.append(cand[IMAGE_SET_COLUMNS])
        counts.append((model, split, cid, n, int(cand["sampled"].sum()), OK, ""))
    sets_df = pd.concat(sets) if sets else pd.DataFrame(columns=IMAGE_SET_COLUMNS)
    return sets_df, pd.DataFrame(counts, columns=COUNT_COLUMNS)
