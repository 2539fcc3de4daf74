"""Tidy tables and cross-class aggregates from the per-class comparison files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rsvc.formats import UNCERTAINTY_COLUMNS, read_compare_metrics, read_importance, read_mmcs
from rsvc.specs import direction

#: Per-concept numbers read from a compare file (rsvc.formats.read_compare_metrics), in table order.
COMPARE_METRICS = (
    "mcs_pearson",
    "mcs_spearman",
    "cmcs_pearson",
    "cmcs_spearman",
    "smcs_pearson",
    "smcs_spearman",
    "cv_cmcs_pearson",
)
#: The tidy concept table: one row per (pair, class, direction, concept).
CONCEPT_COLUMNS = [
    *("pair", "model_a", "model_b", "class_id", "class_name", "direction", "source", "target", "concept"),
    *COMPARE_METRICS,
    *("importance", "l2", "kl", "match_acc", "delta_pearson", "rel_error"),
    *UNCERTAINTY_COLUMNS,
    "unique",
    "note",
]


def concept_rows(
    compare_file: str | Path,
    importance_files: dict[str, str | Path],
    pair: str,
    class_name: str,
    sim_threshold: float = 0.5,
) -> pd.DataFrame:
    """One row per (concept, direction) of one class; empty if the class was skipped.

    ``unique``: the concept is poorly represented in the source model (:func:`unique_concepts`)."""
    metrics = read_compare_metrics(compare_file)
    if metrics is None:
        return pd.DataFrame(columns=CONCEPT_COLUMNS)
    a, b = metrics["models"]
    frames = []
    for src, tgt in ((b, a), (a, b)):
        d = direction(src, tgt)
        m = metrics["directions"][d]
        k = len(m["cmcs_pearson"])
        imp = metrics["importance"].get(tgt)  # on the shared set (importance.images: shared)
        if imp is None:
            imp = read_importance(importance_files[tgt])
        frames.append(
            pd.DataFrame(
                {
                    "pair": pair,
                    "model_a": a,
                    "model_b": b,
                    "class_id": metrics["class_id"],
                    "class_name": class_name,
                    "direction": d,
                    "source": src,
                    "target": tgt,
                    "concept": np.arange(k),
                    **{c: m[c] for c in COMPARE_METRICS + UNCERTAINTY_COLUMNS},
                    "importance": imp if imp is not None else np.full(k, np.nan),
                    "l2": m["l2"],
                    "kl": m["kl"],
                    "match_acc": m["match_acc"],
                    "delta_pearson": m["smcs_pearson"] - m["cmcs_pearson"],
                    "rel_error": metrics["rel_error"][tgt][-1],
                    "note": metrics["note"],
                }
            )
        )
    table = pd.concat(frames, ignore_index=True)
    table["unique"] = unique_concepts(table, sim_threshold)
    return table[CONCEPT_COLUMNS]


def unique_concepts(table: pd.DataFrame, sim_threshold: float) -> pd.Series:
    """Concepts of the target that the source model does not represent: the upper end of the CMCS
    interval (CMCS itself without intervals) lies below the similarity threshold and below the concept's
    own stability floor (its MCS with itself across restarts; no floor without restarts)."""
    upper = table["cmcs_pearson_ci_high"].fillna(table["cmcs_pearson"])
    floor = table["stability_self_mcs"]
    return (upper < sim_threshold) & ((upper < floor) | floor.isna())


def nan_mean(matrices: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise mean of equally shaped matrices, NaN ignored: ``(mean, count of finite values)``;
    NaN where no matrix has a value. Summed in the order given (float64)."""
    total = np.zeros_like(matrices[0], dtype=np.float64)
    count = np.zeros(matrices[0].shape, dtype=np.int64)
    for m in matrices:
        ok = np.isfinite(m)
        total[ok] += m[ok]
        count += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan), count


def class_bootstrap_interval(
    matrices: list[np.ndarray], B: int, seed: int, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Interval of the NaN-ignoring mean of per-class matrices, classes resampled with replacement:
    ``(low, high)`` of the shape of one matrix (the layerwise MMCS figure's cells)."""
    from rsvc.uncertainty import percentile_interval

    stack = np.stack(matrices)  # (n_classes, La, Lb)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(stack), size=(B, len(stack)))
    ok = np.isfinite(stack)
    total, count = np.where(ok, stack, 0.0), ok.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = total[draws].sum(axis=1) / count[draws].sum(axis=1)
    return percentile_interval(means, level)


def layerwise_mean(compare_files: list[str | Path], metric: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Mean over classes of the per-class MMCS matrices (NaN ignored).

    Returns (mean (La, Lb), count of classes with a value (La, Lb), layers_a, layers_b).
    """
    return layerwise_summary(*layerwise_matrices(compare_files, metric))


def layerwise_summary(
    matrices: list[np.ndarray], layers_a: list[str], layers_b: list[str]
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """:func:`layerwise_mean` of matrices already read by :func:`layerwise_matrices`."""
    if not matrices:
        return np.zeros((0, 0)), np.zeros((0, 0), dtype=np.int64), [], []
    mean, count = nan_mean(matrices)
    return mean, count, layers_a, layers_b


def layerwise_matrices(compare_files: list[str | Path], metric: str) -> tuple[list[np.ndarray], list[str], list[str]]:
    """The per-class MMCS matrices ``(La, Lb)`` of the classes not skipped, and the layer names."""
    found = [r for r in (read_mmcs(path, metric) for path in compare_files) if r is not None]
    if not found:
        return [], [], []
    return [m for m, _, _ in found], found[0][1], found[0][2]
