"""Figures of the RSVC paper, drawn from the tidy per-concept table and arrays.

Every function returns a :class:`matplotlib.figure.Figure` built without
``pyplot`` (no global figure registry, nothing to close, Agg canvas attached),
so callers save it with :func:`rsvc.io.save_figure` and simply drop it.

Figures and their paper counterparts:

- :func:`plot_layerwise_mmcs`          Fig. 5, MMCS for every pair of layers.
- :func:`plot_similarity_vs_importance` Fig. 3 (CMCS) and Fig. A8 (SMCS).
- :func:`plot_replacement_test`        Fig. 4 / A10 / A11.
- :func:`plot_mcs_vs_cmcs`             Fig. A9.
- :func:`plot_model_matrix`            mean similarity for every ordered model pair.
- :func:`plot_gallery`                 Fig. 2, dissimilarity view of one concept.

The tidy table (one row per pair, class, concept and direction) has the columns
``pair, model_a, model_b, class_id, class_name, direction, source, target,
concept, mcs_pearson, mcs_spearman, cmcs_pearson, cmcs_spearman, smcs_pearson,
smcs_spearman, cv_cmcs_pearson, importance, l2, kl, match_acc, delta_pearson,
rel_error``. Rows whose plotted values are NaN are dropped and the number of
dropped rows is written in the title.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from rsvc.paths import PAIR_FIGURES, TEMPLATES
from rsvc.tables import is_unique

__all__ = [
    "GROUP_COLORS",
    "GROUP_LABELS",
    "metric_label",
    "plot_layerwise_mmcs",
    "plot_similarity_vs_importance",
    "plot_replacement_test",
    "plot_mcs_vs_cmcs",
    "plot_model_matrix",
    "plot_gallery",
    "plot_message",
    "pair_figures",
]

#: Colours of the three gallery groups, shared by every figure (paper Fig. 2).
GROUP_COLORS: dict[str, str] = {"top_real": "#2ca02c", "over": "#ff7f0e", "under": "#1f77b4"}
#: Row labels of the three gallery groups, in display order.
GROUP_LABELS: dict[str, str] = {
    "top_real": "Top real",
    "over": "Over-predicted",
    "under": "Under-predicted",
}

NAN_COLOR = "#bdbdbd"  # cells without a value (NaN) in every heatmap
HEATMAP_CMAP = "viridis"  # brighter = more similar (paper Fig. 5)
DENSITY_CMAP = "YlOrRd"  # warmer = denser (paper Fig. 3)
IMPORTANCE_CMAP = "coolwarm"  # warmer = more important (paper Fig. 4)

_METRIC_LABELS: dict[str, str] = {
    "mcs_pearson": "MCS (Pearson)",
    "mcs_spearman": "MCS (Spearman)",
    "cmcs_pearson": "CMCS (Pearson)",
    "cmcs_spearman": "CMCS (Spearman)",
    "smcs_pearson": "SMCS (Pearson)",
    "smcs_spearman": "SMCS (Spearman)",
    "cv_cmcs_pearson": "CMCS on held-out folds (Pearson)",
    "importance": "concept importance (CI)",
    "l2": r"$\ell_2$ distance of reconstructions",
    "kl": "KL divergence of logits",
    "match_acc": "match accuracy",
    "delta_pearson": "Δ Pearson (SMCS − CMCS)",
    "rel_error": "relative reconstruction error",
}


def metric_label(column: str) -> str:
    """Human-readable axis label of a tidy-table column (the name itself if unknown)."""
    return _METRIC_LABELS.get(column, column)


# --------------------------------------------------------------------------- helpers


def _new_figure(figsize: tuple[float, float], layout: str | None = "constrained") -> Figure:
    """A pyplot-free figure with an Agg canvas (drawable and savable)."""
    fig = Figure(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _finite_rows(df: pd.DataFrame, columns: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """Rows of ``df`` where every column in ``columns`` is a finite number, and how many were dropped."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"columns {missing} are missing from the table (has {list(df.columns)})")
    values = df[list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    keep = np.isfinite(values).all(axis=1) if len(df) else np.zeros(0, dtype=bool)
    return df.loc[keep], int((~keep).sum())


def literal(text: str) -> str:
    """A name (class, model) to show as is in a matplotlib text: ``$`` escaped, since matplotlib reads
    ``$...$`` as mathtext (a class name such as ``$\\x$`` would fail to draw or be shown as math)."""
    return str(text).replace("$", r"\$")


def _arrow(text: str) -> str:
    """``'a->b'`` and ``'a -> b'`` written as ``'a → b'``."""
    return re.sub(r"\s*->\s*", " → ", str(text))


def _describe(df: pd.DataFrame, same_model: bool = False) -> str:
    """One line naming the directions, the layer and the classes behind ``df``.

    ``same_model``: the plotted values are same-model predictions (SMCS), so each target
    model predicts itself and the line names ``target → target`` instead of the rows' direction.
    """
    parts: list[str] = []
    if same_model and "target" in df.columns and len(df):
        dirs = [f"{t} → {t}" for t in pd.unique(df["target"])]
        parts.append(", ".join(dirs[:4]) + (f" (+{len(dirs) - 4} more)" if len(dirs) > 4 else ""))
    elif "direction" in df.columns and len(df):
        dirs = [_arrow(d) for d in pd.unique(df["direction"])]
        shown = ", ".join(dirs[:4]) + (f" (+{len(dirs) - 4} more)" if len(dirs) > 4 else "")
        parts.append(shown)
    layers = pd.unique(df["layer"]) if "layer" in df.columns and len(df) else ["pre_logits"]
    parts.append("layer " + ", ".join(map(str, layers[:3])) + (" …" if len(layers) > 3 else ""))
    if "class_id" in df.columns and len(df):
        classes = pd.unique(df["class_id"])
        if len(classes) == 1:
            name = df["class_name"].iloc[0] if "class_name" in df.columns else classes[0]
            parts.append(f"class {literal(name)}")
        else:
            parts.append(f"{len(classes)} classes")
    return "; ".join(parts)


def _title(title: str, default: str, df: pd.DataFrame, n_dropped: int, same_model: bool = False) -> str:
    """Caller's title (or ``default``, arrows as →), then a line describing the data actually plotted."""
    line = _describe(df, same_model) + f"; n = {len(df)}"
    if n_dropped:
        line += f" ({n_dropped} rows with NaN dropped)"
    return f"{_arrow(title or default)}\n{line}"


def _no_data(ax: mpl.axes.Axes) -> None:
    ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes, color="0.4")


def _padded(lo: float, hi: float, frac: float = 0.05) -> tuple[float, float]:
    span = hi - lo
    pad = frac * span if span > 0 else max(0.05 * abs(hi), 0.05)
    return lo - pad, hi + pad


def _tick_font(cell_inches: float, max_size: float = 10.0, min_size: float = 5.0) -> tuple[float, int]:
    """Font size that fits one tick label per cell, and the label stride when even ``min_size`` does not fit.

    A label's box is about 1.2 font sizes high; 0.62 of the cell leaves a gap between neighbours.
    """
    fit = 0.62 * cell_inches * 72.0
    if fit >= min_size:
        return min(max_size, fit), 1
    return min_size, int(math.ceil(min_size / fit))


# --------------------------------------------------------------------------- Fig. 5


def plot_layerwise_mmcs(
    matrix: np.ndarray,
    layers_a: list[str],
    layers_b: list[str],
    model_a: str,
    model_b: str,
    metric: str = "pearson",
    n_classes: int | None = None,
    calibrated: bool = False,
) -> Figure:
    """Heatmap of the layerwise mean max concept similarity (paper Fig. 5); ``calibrated``: the matrix is
    MMCS minus its permutation chance level (:func:`rsvc.uncertainty.permutation_null_mmcs`), 0 = chance.

    ``matrix: (len(layers_a), len(layers_b))``, entry ``[l, l']`` is the MMCS between
    layer ``layers_a[l]`` of ``model_a`` (rows, top to bottom) and ``layers_b[l']`` of
    ``model_b`` (columns, left to right), averaged over ``n_classes`` classes. NaN cells are
    grey. Cell and font sizes adapt to the number of layers so that every layer name is
    shown without overlap up to about 70 layers per axis; beyond that every k-th name is
    shown. Matrices up to 150 cells are annotated with their values.
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape != (len(layers_a), len(layers_b)):
        raise ValueError(f"matrix shape {m.shape} does not match ({len(layers_a)}, {len(layers_b)}) layers")
    n_a, n_b = m.shape

    # Cell sizes (inches): the heatmap fits ~8.5 x 11 in, cells at most 0.7 in, aspect at most 2.5.
    cell_h = min(8.5 / n_a, 0.7)
    cell_w = min(11.0 / n_b, 0.7)
    cell_w, cell_h = min(cell_w, max(2.5 * cell_h, 0.35)), min(cell_h, max(2.5 * cell_w, 0.35))
    fs_y, step_y = _tick_font(cell_h)
    fs_x, step_x = _tick_font(cell_w)

    # Margins from the longest layer names (DejaVu Sans: ~0.6 em per character).
    len_a = max((len(str(s)) for s in layers_a), default=1)
    len_b = max((len(str(s)) for s in layers_b), default=1)
    left = 0.55 + len_a * fs_y * 0.6 / 72 + 0.1
    bottom = 0.55 + len_b * fs_x * 0.6 / 72 + 0.1
    top, right = 0.85, 1.45
    width, height = n_b * cell_w, n_a * cell_h
    fig_w, fig_h = left + width + right, bottom + height + top
    if fig_w < 7.0:  # room for the title: centre the heatmap
        left += (7.0 - fig_w) / 2
        fig_w = 7.0
    fig_h = max(fig_h, 3.0)

    fig = _new_figure((fig_w, fig_h), layout=None)
    ax = fig.add_axes((left / fig_w, bottom / fig_h, width / fig_w, height / fig_h))
    cax = fig.add_axes(((left + width + 0.2) / fig_w, bottom / fig_h, 0.22 / fig_w, height / fig_h))

    finite = m[np.isfinite(m)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.05, vmax + 0.05
    cmap = mpl.colormaps[HEATMAP_CMAP].with_extremes(bad=NAN_COLOR)
    image = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    metric_name = metric.capitalize()
    what = "MMCS − chance" if calibrated else "MMCS"
    fig.colorbar(image, cax=cax, label=f"{what} ({metric_name})")

    ax.set_xticks(np.arange(0, n_b, step_x), labels=[str(layers_b[i]) for i in range(0, n_b, step_x)])
    ax.set_yticks(np.arange(0, n_a, step_y), labels=[str(layers_a[i]) for i in range(0, n_a, step_y)])
    ax.tick_params(axis="x", labelrotation=90, labelsize=fs_x)
    ax.tick_params(axis="y", labelsize=fs_y)
    ax.set_xlabel(f"{model_b} layer")
    ax.set_ylabel(f"{model_a} layer")

    if n_a * n_b <= 150:
        size = min(9.0, 0.3 * min(cell_w, cell_h) * 72)
        for i in range(n_a):
            for j in range(n_b):
                if np.isfinite(m[i, j]):
                    light = (m[i, j] - vmin) / (vmax - vmin) > 0.6  # viridis is light at the top
                    ax.text(
                        j,
                        i,
                        f"{m[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=size,
                        color="black" if light else "white",
                    )

    sub = f"mean over {n_classes} classes" if n_classes is not None else "mean over classes"
    n_nan = int(np.isnan(m).sum())
    if n_nan:
        sub += f"; {n_nan} of {m.size} cells NaN (grey)"
    if calibrated:
        sub += "; minus the chance level (b's images permuted per class)"
    fig.suptitle(
        f"{'Calibrated l' if calibrated else 'L'}ayerwise MMCS ({metric_name}): {model_a} (rows) vs {model_b} (columns)"
        f"\n{sub}",
        y=1 - 0.12 / fig_h,
        va="top",
        fontsize=11,
    )
    return fig


# --------------------------------------------------------------------------- Fig. 3 / A8


def _kde_grid(
    x: np.ndarray, y: np.ndarray, xlim: tuple[float, float], ylim: tuple[float, float], n_grid: int = 120
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """2-D Gaussian KDE of ``(x, y)`` on a grid, or None when it is undefined (few or collinear points)."""
    from scipy.stats import gaussian_kde

    if len(x) < 5 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    if abs(np.corrcoef(x, y)[0, 1]) > 1 - 1e-6:  # collinear: covariance singular up to rounding
        return None
    points = np.vstack([x, y])
    if points.shape[1] > 5000:  # the density estimate does not need every point
        idx = np.random.default_rng(0).choice(points.shape[1], 5000, replace=False)
        points = points[:, idx]
    try:
        kde = gaussian_kde(points)
    except (np.linalg.LinAlgError, ValueError):
        return None
    gx, gy = np.meshgrid(np.linspace(*xlim, n_grid), np.linspace(*ylim, n_grid))
    z = kde(np.vstack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
    if not np.all(np.isfinite(z)) or z.max() <= 0:
        return None
    return gx, gy, z


def plot_similarity_vs_importance(
    df: pd.DataFrame,
    similarity: str = "cmcs_pearson",
    title: str = "",
    sim_threshold: float = 0.5,
    imp_quantile: float = 0.75,
    fdr: float = 0.05,
) -> Figure:
    """Density of concept importance (y) against concept similarity (x), as in the paper's Fig. 3 (A8 for SMCS).

    ``df`` is the tidy table (columns ``importance`` and ``similarity`` are used). The
    background is a 2-D Gaussian KDE (warmer = denser; omitted, with a note, when fewer than
    5 points or a singular covariance), with every concept drawn on top. A dashed line at
    ``sim_threshold`` (vertical) and one at the ``imp_quantile`` quantile of importance split the
    plane into the regions "high similarity" (right), "low similarity, low importance" (bottom left)
    and "low similarity, high importance" (top left, the paper's region 3); each label gives its
    number of concepts. The x axis spans at least [0, 1] (similarities are correlations), so that every region is visible and
    figures of different pairs read alike. For ``smcs_*`` columns the subtitle names the
    same-model direction (``target → target``).
    """
    if not 0.0 <= imp_quantile <= 1.0:
        raise ValueError(f"imp_quantile must be in [0, 1], got {imp_quantile}")
    data, n_dropped = _finite_rows(df, ["importance", similarity])
    x = data[similarity].to_numpy(dtype=float)
    y = data["importance"].to_numpy(dtype=float)
    sim_name = metric_label(similarity)
    same_model = similarity.startswith("smcs")

    fig = _new_figure((8.0, 6.4))
    ax = fig.add_subplot()
    ax.set_xlabel(sim_name)
    ax.set_ylabel(metric_label("importance"))
    default = f"{sim_name} vs concept importance"
    if len(x) == 0:
        _no_data(ax)
        ax.set_title(_title(title, default, data, n_dropped, same_model), fontsize=11)
        return fig

    imp_thr = float(np.quantile(y, imp_quantile))
    xlim = _padded(min(float(x.min()), sim_threshold, 0.0), max(float(x.max()), sim_threshold, 1.0), 0.03)
    ylim = _padded(float(y.min()), float(y.max()))

    density = _kde_grid(x, y, xlim, ylim)
    if density is not None:
        gx, gy, z = density
        z = z / z.max()
        levels = np.linspace(0.05, 1.0, 11)  # below the first level stays white
        filled = ax.contourf(gx, gy, z, levels=levels, cmap=DENSITY_CMAP, alpha=0.9, zorder=1)
        fig.colorbar(filled, ax=ax, label="density of concepts (2-D KDE, max = 1)", format="%.2g")
    size = 18 if len(x) < 500 else 6
    ax.scatter(x, y, s=size, c="black", alpha=0.55 if len(x) < 2000 else 0.25, linewidths=0, zorder=3)
    if similarity.startswith("cmcs") and "unique" in data.columns:
        u = is_unique(data["unique"])
        if u.any():  # the unique concepts ringed: discovered at the run's FDR (rsvc.tables.unique_calls)
            ax.scatter(
                x[u],
                y[u],
                s=max(40, 4 * size),
                facecolors="none",
                edgecolors="crimson",
                linewidths=1.1,
                zorder=4,
                label=f"unique at FDR {fdr:g} ({int(u.sum())})",
            )

    ax.set_xlim(xlim)
    ax.set_ylim(ylim)
    ax.axvline(
        sim_threshold, color="black", ls="--", lw=1.2, zorder=4, label=f"similarity threshold = {sim_threshold:g}"
    )
    ax.hlines(
        imp_thr,
        xlim[0],
        sim_threshold,
        colors="black",
        linestyles=":",
        lw=1.5,
        zorder=4,
        label=f"importance {imp_quantile:.0%} quantile = {imp_thr:.3g}",
    )

    high = x >= sim_threshold
    low_high = ~high & (y >= imp_thr)
    low_low = ~high & (y < imp_thr)
    box = dict(boxstyle="round,pad=0.3", fc="white", ec="0.6", alpha=0.75)
    for x, y, ha, va, text in (
        (0.98, 0.02, "right", "bottom", f"high similarity\n(n = {int(high.sum())})"),
        (0.02, 0.02, "left", "bottom", f"low similarity, low importance\n(n = {int(low_low.sum())})"),
        (0.02, 0.98, "left", "top", f"low similarity, high importance\n(n = {int(low_high.sum())})"),
    ):
        ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, fontsize=9, bbox=box, zorder=5)
    fig.legend(loc="outside lower center", ncols=2, fontsize=9, frameon=False)

    full = _title(title, default, data, n_dropped, same_model)
    if density is None:
        full += "; too few or collinear points for a density, points only"
    ax.set_title(full, fontsize=11)
    return fig


# --------------------------------------------------------------------------- Fig. 4


def plot_replacement_test(df: pd.DataFrame, title: str = "") -> Figure:
    """Replacement test (paper Fig. 4): Δ Pearson (x) against ``l2``, ``kl`` and ``match_acc``.

    Three panels sharing the x axis ``delta_pearson`` (= SMCS − CMCS); points are coloured by
    ``importance`` (warmer = more important; the colour range is the 1st-99th percentile,
    so a few extreme concepts do not wash out the rest) and the most important are drawn last.
    Each panel drops its own NaN rows and says how many.
    """
    panels = ["l2", "kl", "match_acc"]
    fig = _new_figure((12.0, 4.3))  # fits a report page without shrinking the labels much
    axes = fig.subplots(1, 3, sharex=True)

    base, n_base_dropped = _finite_rows(df, ["delta_pearson", "importance"])
    imp_all = base["importance"].to_numpy(dtype=float)
    if imp_all.size:
        vmin, vmax = (float(v) for v in np.percentile(imp_all, [1, 99]))
        if vmin == vmax:
            vmin, vmax = vmin - 0.5, vmax + 0.5
    else:
        vmin, vmax = 0.0, 1.0
    norm = Normalize(vmin, vmax)
    cmap = mpl.colormaps[IMPORTANCE_CMAP]

    for ax, col in zip(axes, panels):
        data, dropped = _finite_rows(df, ["delta_pearson", col, "importance"])
        ax.set_xlabel(metric_label("delta_pearson"))
        ax.set_ylabel(metric_label(col))
        note = f"n = {len(data)}" + (f", {dropped} NaN dropped" if dropped else "")
        ax.set_title(f"{metric_label(col)} ({note})", fontsize=10)
        ax.axvline(0.0, color="0.6", lw=0.8, zorder=0)
        if data.empty:
            _no_data(ax)
            continue
        order = np.argsort(data["importance"].to_numpy(dtype=float), kind="stable")
        ax.scatter(
            data["delta_pearson"].to_numpy(dtype=float)[order],
            data[col].to_numpy(dtype=float)[order],
            c=data["importance"].to_numpy(dtype=float)[order],
            cmap=cmap,
            norm=norm,
            s=16 if len(data) < 2000 else 5,
            alpha=0.8,
            linewidths=0,
        )
    fig.colorbar(
        mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), extend="both", label=metric_label("importance")
    )
    fig.suptitle(_title(title, "Replacement test", base, n_base_dropped), fontsize=11)
    return fig


# --------------------------------------------------------------------------- Fig. A9


MAX_ERROR_BARS = 400  # beyond this many points, error bars hide the points


def _error_bars(ax: mpl.axes.Axes, data: pd.DataFrame, cmcs: str) -> None:
    """Bootstrap intervals of MCS (x) and of CMCS (y, only the held-out split's has one) as grey error
    bars; ``unique`` concepts ringed."""
    cols = ["mcs_pearson_ci_low", "mcs_pearson_ci_high", f"{cmcs}_ci_low", f"{cmcs}_ci_high"]
    if len(data) > MAX_ERROR_BARS or not set(cols[:2]) <= set(data.columns):
        return
    x, y = data["mcs_pearson"].to_numpy(float), data[cmcs].to_numpy(float)
    xerr = np.abs(np.vstack([x - data[cols[0]].to_numpy(float), data[cols[1]].to_numpy(float) - x]))
    if set(cols[2:]) <= set(data.columns):
        yerr = np.abs(np.vstack([y - data[cols[2]].to_numpy(float), data[cols[3]].to_numpy(float) - y]))
    else:
        yerr = np.full_like(xerr, np.nan)
    if np.isfinite(xerr).any() or np.isfinite(yerr).any():
        ax.errorbar(
            x,
            y,
            xerr=np.nan_to_num(xerr),
            yerr=np.nan_to_num(yerr),
            fmt="none",
            ecolor="0.65",
            elinewidth=0.7,
            zorder=1,
            label="95 % image-jackknife interval",
        )
    if "unique" in data.columns:
        u = is_unique(data["unique"])
        if u.any():
            ax.scatter(
                x[u],
                y[u],
                s=90,
                facecolors="none",
                edgecolors="black",
                linewidths=1.2,
                zorder=4,
                label="unique (CMCS below threshold and stability floor, FDR-controlled)",
            )


def plot_mcs_vs_cmcs(df: pd.DataFrame, title: str = "", cmcs: str = "cv_cmcs_pearson") -> Figure:
    """MCS (x) against CMCS (y), both Pearson, one point per concept, with the line y = x (Fig. A9).

    As in the paper's appendix A.7, the CMCS is by default the one of the lasso's held-out folds
    (``cv_cmcs_pearson``): it is measured on the same shared images as MCS, which the held-out
    split's CMCS (``cmcs="cmcs_pearson"``) is not. Points above the red line are concepts whose
    regression-based similarity exceeds the max-correlation similarity (MCS is a noisy lower
    bound); the share above is printed. Points are coloured by direction when there are at most
    10 directions. With at most :data:`MAX_ERROR_BARS` points, the bootstrap intervals
    (``*_ci_low``/``*_ci_high``: of MCS, and of CMCS when it is the held-out split's) are drawn as
    error bars, and concepts flagged ``unique`` are ringed.
    """
    data, n_dropped = _finite_rows(df, ["mcs_pearson", cmcs])
    fig = _new_figure((7.0, 6.6))
    ax = fig.add_subplot()
    x = data["mcs_pearson"].to_numpy(dtype=float)
    y = data[cmcs].to_numpy(dtype=float)
    if len(x):
        hue = "direction" if "direction" in data.columns and data["direction"].nunique() <= 10 else None
        plot_df = data.assign(direction=data["direction"].map(_arrow)) if hue else data
        sns.scatterplot(
            data=plot_df,
            x="mcs_pearson",
            y=cmcs,
            hue=hue,
            ax=ax,
            s=20 if len(x) < 2000 else 6,
            alpha=0.7,
            linewidth=0,
            zorder=3,
        )
        _error_bars(ax, data, cmcs)
        lo, hi = _padded(float(min(x.min(), y.min())), float(max(x.max(), y.max())))
        ax.plot([lo, hi], [lo, hi], color="red", lw=1.3, label="y = x", zorder=2)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        above = float(np.mean(y > x))
        ax.text(
            0.98,
            0.02,
            f"CMCS > MCS for {above:.0%} of concepts",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=9,
            bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="0.6", alpha=0.85),
        )
        ax.legend(loc="upper left", fontsize=8, title="direction" if hue else None)
    else:
        _no_data(ax)
    ax.set_xlabel(metric_label("mcs_pearson"))
    ax.set_ylabel(metric_label(cmcs))
    ax.set_title(_title(title, "MCS vs CMCS", data, n_dropped), fontsize=11)
    return fig


# --------------------------------------------------------------------------- model x model


def plot_model_matrix(df: pd.DataFrame, value: str = "cmcs_pearson") -> Figure:
    """Model-by-model matrix of the mean of ``value`` over classes and concepts.

    Rows are the ``source`` model (the predictor), columns the ``target`` model (whose
    concepts are predicted); every model in either column appears on both axes; cells
    without data (e.g. the diagonal) are grey. Cells are annotated with their mean.
    Similarity columns (``*mcs_*``) use the colour range [0, 1] (wider if the data are).
    """
    for col in ("source", "target"):
        if col not in df.columns:
            raise KeyError(f"column {col!r} is missing from the table")
    data, n_dropped = _finite_rows(df, [value])
    models = sorted(set(map(str, df["source"])) | set(map(str, df["target"])))
    means = (
        data.assign(source=data["source"].astype(str), target=data["target"].astype(str))
        .groupby(["source", "target"])[value]
        .mean()
        .unstack()
        .reindex(index=models, columns=models)
        .astype(float)
    )
    n = max(len(models), 1)
    side = max(5.0, 1.1 * n + 3.0)
    fig = _new_figure((side + 1.2, side))
    ax = fig.add_subplot()
    finite = means.to_numpy()[np.isfinite(means.to_numpy())]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if "mcs_" in value:  # similarities share one scale across runs: [0, 1] unless the data leave it
        vmin, vmax = min(vmin, 0.0), max(vmax, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.05, vmax + 0.05
    label = metric_label(value)
    if len(models):
        sns.heatmap(
            means,
            annot=True,
            fmt=".2f",
            cmap=HEATMAP_CMAP,
            vmin=vmin,
            vmax=vmax,
            ax=ax,
            square=True,
            linewidths=0.5,
            linecolor="white",
            annot_kws={"fontsize": 10 if n <= 8 else 7},
            cbar_kws={"label": f"mean {label}"},
        )
        ax.tick_params(axis="x", labelrotation=45)
        ax.tick_params(axis="y", labelrotation=0)
    else:
        _no_data(ax)
    ax.set_facecolor(NAN_COLOR)
    ax.set_xlabel("target model (concepts predicted)")
    ax.set_ylabel("source model (predictor)")
    n_classes = data["class_id"].nunique() if "class_id" in data.columns else None
    sub = f"mean over {n_classes} classes and their concepts" if n_classes is not None else "mean over concepts"
    if n_dropped:
        sub += f"; {n_dropped} NaN rows dropped"
    ax.set_title(f"Mean {label} per model pair\n{sub}", fontsize=11)
    return fig


# --------------------------------------------------------------------------- Fig. 2


def _as_image(patch: np.ndarray) -> np.ndarray:
    """``patch: (h, w, 3|4)`` or ``(h, w)``, uint8 or float in [0, 1], as something imshow draws."""
    arr = np.asarray(patch)
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4)):
        return arr if arr.dtype == np.uint8 else np.clip(arr.astype(float), 0.0, 1.0)
    raise ValueError(f"patch must have shape (h, w), (h, w, 3) or (h, w, 4), got {arr.shape}")


#: What an empty gallery row means (never padded with patches that show no difference).
EMPTY_ROW = {
    "top_real": "none: the concept is absent (coefficient 0) from every held-out patch",
    "over": "none: no patch is predicted above its real coefficient",
    "under": "none: no patch is predicted below its real coefficient",
}


def plot_gallery(groups: dict[str, list[tuple[np.ndarray, float, float]]], title: str) -> Figure:
    """Dissimilarity view of one concept (paper Fig. 2).

    ``groups`` maps ``'top_real'``, ``'over'`` and ``'under'`` (missing keys = empty) to lists
    of ``(patch (h, w, 3) uint8, real coefficient, predicted coefficient)``. One row per group
    (top real, over-predicted, under-predicted), one column per patch; each row's label and
    patch frames carry the group colour (:data:`GROUP_COLORS`) and each patch has
    ``"real x.xx / pred y.yy"`` under it. ``title`` is set by the caller (class, concept,
    direction, CMCS).
    """
    unknown = set(groups) - set(GROUP_LABELS)
    if unknown:
        raise ValueError(f"unknown gallery groups {sorted(unknown)}; expected {list(GROUP_LABELS)}")
    rows = {key: list(groups.get(key, [])) for key in GROUP_LABELS}
    n_cols = max(1, max(len(items) for items in rows.values()))
    fig = _new_figure((1.45 * n_cols + 1.0, 3 * 1.85 + 0.8))
    axes = fig.subplots(3, n_cols, squeeze=False)
    for r, (key, items) in enumerate(rows.items()):
        color = GROUP_COLORS[key]
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(items):
                patch, real, pred = items[c]
                ax.imshow(_as_image(patch), interpolation="nearest")
                for spine in ax.spines.values():
                    spine.set_edgecolor(color)
                    spine.set_linewidth(3)
                ax.set_xlabel(f"real {float(real):.2f} / pred {float(pred):.2f}", fontsize=8)
            else:
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if c == 0:
                    note = ax.text(
                        0.05,
                        0.5,
                        EMPTY_ROW[key],
                        ha="left",
                        va="center",
                        color="0.3",
                        fontsize=9,
                        transform=ax.transAxes,
                    )
                    note.set_in_layout(False)  # it runs over the empty columns; the layout keeps the patch grid
        axes[r, 0].set_ylabel(GROUP_LABELS[key], color=color, fontsize=11, fontweight="bold")
    fig.suptitle(literal(_arrow(title)), fontsize=12)  # the title holds the class name
    return fig


def plot_message(text: str) -> Figure:
    """A figure that says why there is nothing to draw (every class skipped, no concept qualifies)."""
    fig = _new_figure((6, 1.5), layout=None)
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    return fig


def pair_figures(
    table: pd.DataFrame,
    layerwise: Mapping[str, np.ndarray],
    layers_a: list[str],
    layers_b: list[str],
    model_a: str,
    model_b: str,
    n_classes: int,
    n_requested: int,
    sim_threshold: float,
    fdr: float = 0.05,
    calibrated: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Callable[[], Figure]]:
    """The per-pair figures of the report, by name (drawn when called).

    table: the pair's tidy concept table (:data:`rsvc.tables.CONCEPT_COLUMNS`);
    layerwise: metric -> mean MMCS ``(La, Lb)``; calibrated: metric -> mean MMCS minus its chance level
    (absent: the calibrated figures say that no chance level was computed); n_classes: classes analysed
    out of ``n_requested``.
    """
    a, b = model_a, model_b
    by_dir = {d: table[table["direction"] == d] for d in (f"{a}->{b}", f"{b}->{a}")}
    ab, ba = by_dir[f"{a}->{b}"], by_dir[f"{b}->{a}"]

    def layerwise_figure(metric: str, chance: bool = False) -> Figure:
        if layers_a and chance and metric not in (calibrated or {}):
            return plot_message(
                f"Calibrated layerwise MMCS ({metric}): no chance level\n(uncertainty.mmcs_permutations = 0)"
            )
        if layers_a:
            m = calibrated[metric] if chance else layerwise[metric]
            return plot_layerwise_mmcs(
                m, layers_a, layers_b, a, b, metric=metric, n_classes=n_classes, calibrated=chance
            )
        return plot_message(
            f"Layerwise MMCS ({metric}), {a} vs {b}: no class analysed\n"
            f"(all {n_requested} skipped, see {TEMPLATES['run_summary']})"
        )

    figures = {
        "layerwise_mmcs_pearson": lambda: layerwise_figure("pearson"),
        "layerwise_mmcs_spearman": lambda: layerwise_figure("spearman"),
        "layerwise_mmcs_pearson_calibrated": lambda: layerwise_figure("pearson", chance=True),
        "layerwise_mmcs_spearman_calibrated": lambda: layerwise_figure("spearman", chance=True),
        "cmcs_importance_b_to_a": lambda: plot_similarity_vs_importance(
            ba,
            "cmcs_pearson",
            f"CMCS {b} -> {a} vs importance for {a} (pre_logits)",
            sim_threshold=sim_threshold,
            fdr=fdr,
        ),
        "cmcs_importance_a_to_b": lambda: plot_similarity_vs_importance(
            ab,
            "cmcs_pearson",
            f"CMCS {a} -> {b} vs importance for {b} (pre_logits)",
            sim_threshold=sim_threshold,
            fdr=fdr,
        ),
        "smcs_importance_a": lambda: plot_similarity_vs_importance(
            ba,
            "smcs_pearson",
            f"SMCS {a} -> {a} vs importance for {a} (pre_logits)",
            sim_threshold=sim_threshold,
            fdr=fdr,
        ),
        "smcs_importance_b": lambda: plot_similarity_vs_importance(
            ab,
            "smcs_pearson",
            f"SMCS {b} -> {b} vs importance for {b} (pre_logits)",
            sim_threshold=sim_threshold,
            fdr=fdr,
        ),
        "replacement_b_to_a": lambda: plot_replacement_test(
            ba, f"Replacement test: {a}'s concepts predicted from {b} (pre_logits)"
        ),
        "replacement_a_to_b": lambda: plot_replacement_test(
            ab, f"Replacement test: {b}'s concepts predicted from {a} (pre_logits)"
        ),
        "mcs_cmcs": lambda: plot_mcs_vs_cmcs(table, f"MCS vs CMCS, {a} vs {b} (pre_logits)"),
    }
    if list(figures) != list(PAIR_FIGURES):  # one list of the pair figures: rsvc.paths
        raise RuntimeError(f"pair_figures draws {list(figures)}, rsvc.paths.PAIR_FIGURES names {list(PAIR_FIGURES)}")
    return figures
