"""Fig. 2 galleries: which concept a gallery shows, and its top real, over- and under-predicted patches."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from rsvc.formats import read_concept_views
from rsvc.images import canonical_uint8, load_rgb
from rsvc.specs import direction
from rsvc.tables import is_unique

VIEW_GROUPS = ("top_real", "over", "under")  # the rows of a compare file's ``views``


def gallery_direction(name: str, models: tuple[str, str]) -> tuple[str, str]:
    """``(source, target)`` of a gallery: ``b_to_a`` shows a's concepts predicted from b."""
    a, b = models
    return (b, a) if "b_to_a" in name else (a, b)


def pick_concept(
    table: pd.DataFrame, name: str, models: tuple[str, str], class0: str, sim_threshold: float
) -> pd.Series | None:
    """The concept row (of the tidy table) that gallery ``name`` shows, None when none qualifies.

    ``lowest_cmcs_class0_*``: the lowest CMCS of class ``class0``; ``important_*_i``: the
    i-th most important concept flagged ``unique`` (discovered at the run's false-discovery rate:
    CMCS significantly below ``sim_threshold`` and its stability floor, :func:`rsvc.tables.unique_calls`;
    undefined calls never qualify).
    """
    src, tgt = gallery_direction(name, models)
    rows = table[table["direction"] == direction(src, tgt)].dropna(subset=["cmcs_pearson"])
    if name.startswith("lowest_cmcs_class0"):
        rows = rows[rows["class_id"] == class0].sort_values("cmcs_pearson")
        return rows.iloc[0] if len(rows) else None
    i = int(name.rsplit("_", 1)[1])
    rows = rows[is_unique(rows["unique"])].sort_values("importance", ascending=False)
    return rows.iloc[i] if len(rows) > i else None


def nothing_to_show(table: pd.DataFrame, name: str, models: tuple[str, str], class0: str, fdr: float) -> str:
    """Why gallery ``name`` has no concept, in plain words (the figure says it instead of a blank gallery)."""
    src, tgt = gallery_direction(name, models)
    rows = table[table["direction"] == direction(src, tgt)].dropna(subset=["cmcs_pearson"])
    if name.startswith("lowest_cmcs_class0"):
        return f"Nothing to show: class {class0} has no concept of {tgt} with a CMCS from {src}\n(skipped or unscored)"
    i = int(name.rsplit("_", 1)[1])
    n_unique = int(is_unique(rows["unique"]).sum())
    found = f"{n_unique} concept{'s' if n_unique != 1 else ''}" if n_unique else "no concept"
    return (
        f"Nothing to show: {found} of {tgt} {'are' if n_unique > 1 else 'is'} flagged unique from {src} in this run,\n"
        f"so there is no #{i + 1} most important unique concept (unique: CMCS significantly below the threshold\n"
        f"and the concept's stability floor, discovered at FDR {fdr:g}; column 'unique' of the concept table)"
    )


def canonical_patches(
    image_root: str | Path, rows: Sequence[tuple[str, int]], boxes: np.ndarray, image_size: int
) -> list[np.ndarray]:
    """The patches ``[(image_id, grid index), ...]`` of the canonical images (``boxes[index] = (x0, y0, x1, y1)``)
    as ``[(h, w, 3) uint8, ...]``, each image decoded once however many of its patches are asked for."""
    images: dict[str, np.ndarray] = {}
    out = []
    for image_id, index in rows:
        if image_id not in images:
            images[image_id] = canonical_uint8(load_rgb(Path(image_root) / image_id), image_size)
        x0, y0, x1, y1 = (int(v) for v in boxes[index])
        out.append(images[image_id][y0:y1, x0:x1].copy())
    return out


def concept_gallery(
    compare_file: str | Path,
    source: str,
    target: str,
    concept: int,
    image_root: str | Path,
    boxes: np.ndarray,
    image_size: int,
) -> dict[str, list[tuple[np.ndarray, float, float]]]:
    """``{group: [(patch (h, w, 3) uint8, real coefficient, predicted coefficient), ...]}`` for
    :func:`rsvc.plots.plot_gallery`: the held-out rows the compare job chose for each view."""
    v = read_concept_views(compare_file, source, target, concept)
    chosen = {group: [int(r) for r in rows if r >= 0] for group, rows in zip(VIEW_GROUPS, v["views"], strict=True)}
    flat = [r for rows in chosen.values() for r in rows]
    pixels = iter(
        canonical_patches(
            image_root, [(v["image_ids"][v["patch_image"][r]], v["patch_index"][r]) for r in flat], boxes, image_size
        )
    )
    return {
        group: [(next(pixels), float(v["real"][r]), float(v["pred"][r])) for r in rows]
        for group, rows in chosen.items()
    }
