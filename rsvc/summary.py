"""The run summary: every class accounted for (analysed or skipped, with the reason), the unreadable
images, and one row of averages per pair and direction."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from rsvc.formats import (
    OK,
    read_compare_status,
    read_concept_table,
    read_image_set_counts,
    read_predictions,
    read_skipped_images,
)
from rsvc.paths import TEMPLATES
from rsvc.tables import CONCEPT_COLUMNS, is_unique

STATUS_COLUMNS = ["stage", "what", "split", "class_id", "status", "reason"]
SKIPPED_IMAGE_COLUMNS = ["stage", "path", "reason"]
SKIPPED_IMAGES_FILE = Path(TEMPLATES["skipped_images"]).name  # next to the run summary
PAIR_METRICS = ["mcs_pearson", "cmcs_pearson", "smcs_pearson", "cmcs_spearman", "importance", "kl", "match_acc"]
PAIR_COLUMNS = (
    ["pair", "direction", "n_classes", "n_concepts"]
    + [f"{s}_{m}" for m in PAIR_METRICS for s in ("mean", "nan")]
    + ["median_cmcs_pearson", "n_unique", "n_unique_undefined"]
)


def concept_table(tables: Sequence[str | Path]) -> pd.DataFrame:
    """The tidy concept tables of several pairs, concatenated."""
    frames = [t for t in (read_concept_table(p) for p in tables) if len(t)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CONCEPT_COLUMNS)


def pair_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (pair, direction): classes, concepts, mean and NaN count of each metric, median CMCS,
    the concepts called unique (discovered at ``uncertainty.fdr`` over the pair, :func:`rsvc.tables.unique_calls`)
    and those whose call is undefined (NA, reason in the table's note)."""
    rows = []
    for (pair, d), g in table.groupby(["pair", "direction"], sort=True):
        row = {"pair": pair, "direction": d, "n_classes": g["class_id"].nunique(), "n_concepts": len(g)}
        for m in PAIR_METRICS:
            row[f"mean_{m}"] = g[m].mean()
            row[f"nan_{m}"] = int(g[m].isna().sum())
        row["median_cmcs_pearson"] = g["cmcs_pearson"].median()
        row["n_unique"] = int(is_unique(g["unique"]).sum())
        row["n_unique_undefined"] = int(g["unique"].isna().sum())
        rows.append(row)
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)  # header also when empty


def run_status(
    table: pd.DataFrame,
    pairs: Sequence[str],
    counts: Sequence[str | Path],
    compare: Sequence[str | Path],
    predictions: Sequence[str | Path],
    prediction_splits: Sequence[str],
    activations: Sequence[str | Path],
    fdr: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(status rows (STATUS_COLUMNS), unreadable images (SKIPPED_IMAGE_COLUMNS))``.

    prediction_splits: the split of each prediction file, in the order of ``predictions``. fdr
    (``uncertainty.fdr``): one "unique" row per pair and direction with a concept: how many concepts are
    called unique at that false-discovery rate over the pair, and how many calls are undefined.
    """
    status = []
    for path in counts:
        df = read_image_set_counts(path)
        for r in df[df["status"] != OK].itertuples():
            status.append(("image_set", r.model, r.split, r.class_id, r.status, r.reason))

    analysed: dict[str, list[str]] = {}  # pair -> class ids it was asked to analyse, in order
    for path in compare:
        s = read_compare_status(path)
        analysed.setdefault(s.pair, []).append(s.class_id)
        if s.skipped:
            status.append(("compare", s.pair, "", s.class_id, "skipped", s.reason))
        elif s.note:
            status.append(("compare", s.pair, "", s.class_id, "partial", s.note))

    skipped = []
    labels: dict[str, set[str]] = {}  # split -> class folders that hold at least one image file
    for path, split in zip(predictions, prediction_splits, strict=True):
        df = read_predictions([path])
        skipped += [("predict", r.path, r.reason) for r in df[df["status"] != OK].itertuples()]
        labels.setdefault(split, set()).update(df["label"])
    classes = dict.fromkeys(c for cs in analysed.values() for c in cs)
    for split, present in sorted(labels.items()):
        status += [
            (
                "dataset",
                "",
                split,
                cid,
                "no_own_images",
                "no images of its own (class folder missing or empty): its image sets hold only images of other "
                "folders that a model predicts as it",
            )
            for cid in classes
            if cid not in present
        ]
    for path in activations:
        skipped += [("activations", r.path, r.reason) for r in read_skipped_images(path).itertuples()]
    skipped_df = pd.DataFrame(skipped, columns=SKIPPED_IMAGE_COLUMNS).drop_duplicates(subset=["path"])

    for pair in pairs:  # every pair, also those left with no class
        n = table.loc[table["pair"] == pair, "class_id"].nunique()
        status.append(
            ("pair", pair, "", "", "ok" if n else "empty", f"{n} of {len(analysed.get(pair, []))} classes analysed")
        )
    if fdr is not None and len(table):
        for (pair, d), g in table.groupby(["pair", "direction"], sort=True):
            n, undefined = int(is_unique(g["unique"]).sum()), int(g["unique"].isna().sum())
            status.append(
                (
                    "unique",
                    pair,
                    "",
                    "",
                    "ok",
                    f"{d}: {n} of {len(g)} concepts unique at false-discovery rate {fdr:g} over the pair "
                    f"(uncertainty.fdr; q_unique); {undefined} undefined (note)",
                )
            )
    status.append(("images", "", "", "", "skipped", f"{len(skipped_df)} unreadable images (see {SKIPPED_IMAGES_FILE})"))
    return pd.DataFrame(status, columns=STATUS_COLUMNS), skipped_df
