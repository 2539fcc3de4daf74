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
#: The test behind ``unique`` (:func:`unique_calls`): one-sided p-values of H0 CMCS >= threshold and of
#: H0 CMCS >= the concept's stability floor, their intersection-union p-value and its FDR q-value.
UNIQUE_TEST_COLUMNS = ("p_below_threshold", "p_below_floor", "p_unique", "q_unique")
#: The tidy concept table: one row per (pair, class, direction, concept).
CONCEPT_COLUMNS = [
    *("pair", "model_a", "model_b", "class_id", "class_name", "direction", "source", "target", "concept"),
    *COMPARE_METRICS,
    *("importance", "l2", "kl", "match_acc", "delta_pearson", "rel_error"),
    *UNCERTAINTY_COLUMNS,
    *UNIQUE_TEST_COLUMNS,
    "unique",
    "note",
]


def concept_rows(
    compare_file: str | Path,
    importance_files: dict[str, str | Path],
    pair: str,
    class_name: str,
) -> pd.DataFrame:
    """One row per (concept, direction) of one class; empty if the class was skipped. The unique test
    columns are left empty: they need every concept of the pair (:func:`unique_calls`). ``note``: the
    class's note and, per concept, why each undefined number is NaN (:func:`undefined_notes`)."""
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
    table["has_floor"] = [metrics["has_stability"][t] for t in table["target"]]
    table["note"] = undefined_notes(table)
    for column in UNIQUE_TEST_COLUMNS:
        table[column] = np.nan
    table["unique"] = pd.array([pd.NA] * len(table), dtype="boolean")
    return table[[*CONCEPT_COLUMNS, "has_floor"]]


#: Why a per-concept number is NaN when the class itself was scored (column -> reason).
UNDEFINED_REASONS = {
    "mcs_pearson": "MCS undefined: the concept's coefficients are constant on the shared patches "
    "(its MCS p-value and interval too)",
    "cmcs_pearson": "CMCS undefined: the predicted or the real coefficients are constant on the held-out "
    "patches (e.g. the lasso predicts all zeros)",
    "cmcs_pearson_ci_high": "CMCS interval undefined: the concept lives in too few held-out images "
    "(constant once one image is left out, or < 3 images)",
    "stability_self_mcs": "stability undefined: the concept's coefficients are constant in a restart",
}


def undefined_notes(table: pd.DataFrame) -> list[str]:
    """The ``note`` of each row: the class's note, then the reason for each undefined number of the
    concept (:data:`UNDEFINED_REASONS`; an interval is only explained when its value is defined)."""
    notes = []
    for row in table.itertuples(index=False):
        parts = [row.note] if row.note else []
        held_out_scored = "not scored" not in row.note
        if np.isnan(row.mcs_pearson):
            parts.append(UNDEFINED_REASONS["mcs_pearson"])
        if held_out_scored and np.isnan(row.cmcs_pearson):
            parts.append(UNDEFINED_REASONS["cmcs_pearson"])
        elif held_out_scored and np.isnan(row.cmcs_pearson_ci_high):
            parts.append(UNDEFINED_REASONS["cmcs_pearson_ci_high"])
        if row.has_floor and np.isnan(row.stability_self_mcs):
            parts.append(UNDEFINED_REASONS["stability_self_mcs"])
        notes.append("; ".join(parts))
    return notes


def unique_calls(table: pd.DataFrame, sim_threshold: float, fdr: float, dependence: str = "bh") -> pd.DataFrame:
    """The unique calls of one pair: every concept of ``table`` (both directions, every class) is one
    test of one family, controlled at false-discovery rate ``fdr`` (docs/uncertainty.md).

    Per concept, two one-sided t tests on Fisher's z scale with the CMCS jackknife
    (:func:`rsvc.uncertainty.p_below`): H0 CMCS >= ``sim_threshold`` (``p_below_threshold``) and
    H0 CMCS >= the concept's stability floor, its MCS with itself across restarts (``p_below_floor``;
    not tested without restarts). ``p_unique`` = the larger (intersection-union test: both must be
    rejected); ``q_unique`` its step-up adjusted value (:func:`rsvc.uncertainty.benjamini_hochberg`);
    ``unique`` = ``q_unique <= fdr``, NA where the test is undefined (CMCS, its interval or the floor NaN;
    the note says why). A copy of ``table`` with those columns filled (``has_floor`` dropped) is returned.
    """
    from rsvc.uncertainty import benjamini_hochberg, p_below

    t = table.copy()
    args = (
        t["cmcs_pearson"].to_numpy(float),
        t["cmcs_pearson_se_z"].to_numpy(float),
        t["cmcs_pearson_df"].to_numpy(float),
    )
    has_floor = t["has_floor"].to_numpy(bool) if "has_floor" in t.columns else np.zeros(len(t), bool)
    p_thr = p_below(*args, np.full(len(t), float(sim_threshold)))
    p_floor = np.where(has_floor, p_below(*args, t["stability_self_mcs"].to_numpy(float)), np.nan)
    p_unique = np.where(has_floor, np.fmax(p_thr, p_floor), p_thr)
    p_unique = np.where(has_floor & np.isnan(p_floor), np.nan, p_unique)
    q, discovered = benjamini_hochberg(p_unique, fdr, dependence=dependence)
    t["p_below_threshold"], t["p_below_floor"], t["p_unique"], t["q_unique"] = p_thr, p_floor, p_unique, q
    t["unique"] = pd.array(
        [bool(d) if np.isfinite(p) else pd.NA for d, p in zip(discovered, p_unique)], dtype="boolean"
    )
    return t[CONCEPT_COLUMNS]


def is_unique(values) -> np.ndarray:
    """``unique`` column -> bool array, undefined (NA) counted as not unique (filters and counts)."""
    return pd.array(pd.Series(values).astype("boolean"), dtype="boolean").fillna(False).to_numpy(bool)


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
