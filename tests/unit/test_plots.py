"""Figures: labels, plotted values and region counts against independent numpy/pandas oracles."""

from __future__ import annotations

from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from PIL import Image

from rsvc import plots
from rsvc.io import save_figure
from rsvc.tables import CONCEPT_COLUMNS

REPORT = REPO / "report"
COLUMNS = CONCEPT_COLUMNS


def tidy_table(n_classes: int = 6, k: int = 10, seed: int = 0, models=("resnet18", "resnet50")) -> pd.DataFrame:
    """Synthetic tidy per-concept table with the workflow's columns (both directions of one pair)."""
    rng = np.random.default_rng(seed)
    a, b = models
    rows = []
    for source, target in ((a, b), (b, a)):
        for c in range(n_classes):
            for i in range(k):
                cmcs = float(np.clip(rng.normal(0.65, 0.2), -1, 1))
                smcs = float(min(1.0, cmcs + abs(rng.normal(0.1, 0.05))))
                imp = float(rng.gamma(2.0, 0.05))
                rows.append(
                    dict(
                        pair=f"{a}__{b}",
                        model_a=a,
                        model_b=b,
                        class_id=c,
                        class_name=f"class{c}",
                        direction=f"{source}->{target}",
                        source=source,
                        target=target,
                        concept=i,
                        mcs_pearson=cmcs - abs(rng.normal(0.1, 0.1)),
                        mcs_spearman=cmcs - 0.1,
                        cmcs_pearson=cmcs,
                        cmcs_spearman=cmcs,
                        smcs_pearson=smcs,
                        smcs_spearman=smcs,
                        cv_cmcs_pearson=cmcs,
                        importance=imp,
                        l2=(smcs - cmcs) * 2,
                        kl=(smcs - cmcs) * imp,
                        match_acc=1 - (smcs - cmcs) * imp,
                        delta_pearson=smcs - cmcs,
                        rel_error=0.2,
                    )
                )
    df = pd.DataFrame(rows)
    assert list(df.columns) == COLUMNS[: len(df.columns)]  # the uncertainty columns follow, NaN here
    return df.reindex(columns=COLUMNS)


def assert_png(fig: Figure, path: Path) -> None:
    save_figure(fig, path)
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 200
        assert np.asarray(im.convert("L")).std() > 1  # not blank


def texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text") and o.get_text())]


# ----------------------------------------------------------------------------- Fig. 5


def test_layerwise_49x17_labels_values_no_overlap(tmp_path):
    rng = np.random.default_rng(1)
    layers_a = [f"layer{i // 4 + 1}.{i % 4}.conv{i % 3 + 1}" for i in range(49)]
    layers_b = [f"blocks.{j}.mlp.fc2" for j in range(17)]
    m = rng.uniform(0.1, 0.9, (49, 17))
    m[:, 5] = np.nan  # an all-NaN column
    fig = plots.plot_layerwise_mmcs(m, layers_a, layers_b, "resnet50", "vit_small_patch16_224", n_classes=7)
    ax, cax = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == layers_a
    assert [t.get_text() for t in ax.get_xticklabels()] == layers_b
    shown = ax.images[0].get_array()
    np.testing.assert_array_equal(np.ma.getmaskarray(shown), np.isnan(m))
    np.testing.assert_allclose(shown.filled(np.nan), m)
    assert "MMCS" in cax.get_ylabel()
    assert ax.get_ylabel() == "resnet50 layer" and ax.get_xlabel() == "vit_small_patch16_224 layer"
    title = fig._suptitle.get_text()
    assert "resnet50" in title and "vit_small_patch16_224" in title and "7 classes" in title
    assert "49 of 833 cells NaN" in title

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    fig_box = fig.bbox
    for labels in (ax.get_yticklabels(), ax.get_xticklabels()):
        boxes = [t.get_window_extent(renderer) for t in labels]
        assert min(t.get_fontsize() for t in labels) >= 5
        for b1, b2 in zip(boxes, boxes[1:]):
            assert not b1.overlaps(b2)
        for b in boxes:  # readable on screen, not only after a tight save
            assert b.x0 >= fig_box.x0 and b.y0 >= fig_box.y0 and b.x1 <= fig_box.x1 and b.y1 <= fig_box.y1
    assert_png(fig, tmp_path / "layerwise.png")


def test_layerwise_many_layers_thins_labels_without_overlap():
    layers_a = [f"blocks.{i}.attn.proj" for i in range(150)]
    fig = plots.plot_layerwise_mmcs(np.zeros((150, 4)), layers_a, list("wxyz"), "vit_large", "resnet50")
    ax = fig.axes[0]
    shown = [t.get_text() for t in ax.get_yticklabels()]
    step = layers_a.index(shown[1])
    assert step > 1 and shown == layers_a[::step]
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in ax.get_yticklabels()]
    assert not any(b1.overlaps(b2) for b1, b2 in zip(boxes, boxes[1:]))


def test_layerwise_small_annotated_and_degenerate(tmp_path):
    m = np.array([[0.5, np.nan], [0.25, np.nan], [0.75, np.nan]])
    fig = plots.plot_layerwise_mmcs(m, ["l1", "l2", "l3"], ["m1", "m2"], "a", "b", metric="spearman")
    ax = fig.axes[0]
    annotated = sorted(float(t.get_text()) for t in ax.texts)
    assert annotated == sorted(m[np.isfinite(m)].round(2).tolist())
    assert "Spearman" in fig.axes[1].get_ylabel()
    # all NaN and a constant matrix do not crash
    assert_png(
        plots.plot_layerwise_mmcs(np.full((2, 2), np.nan), ["x", "y"], ["u", "v"], "a", "b"), tmp_path / "nan.png"
    )
    plots.plot_layerwise_mmcs(np.full((1, 1), 0.3), ["x"], ["u"], "a", "b")
    with pytest.raises(ValueError):
        plots.plot_layerwise_mmcs(np.zeros((2, 3)), ["x", "y"], ["u", "v"], "a", "b")


# ----------------------------------------------------------------------------- Fig. 3


def _region_texts(ax) -> dict[str, int]:
    out = {}
    for t in ax.texts:
        head, _, count = t.get_text().partition("\n(n = ")
        out[head] = int(count.rstrip(")"))
    return out


def test_similarity_vs_importance_regions_match_oracle(tmp_path):
    df = tidy_table()
    df.loc[[0, 3, 7], "cmcs_pearson"] = np.nan
    df.loc[11, "importance"] = np.nan
    fig = plots.plot_similarity_vs_importance(
        df, "cmcs_pearson", title="resnet18 vs resnet50", sim_threshold=0.55, imp_quantile=0.8
    )
    ax = fig.axes[0]
    assert ax.get_ylabel() == "concept importance (CI)" and ax.get_xlabel() == "CMCS (Pearson)"  # as Fig. 3
    assert "4 rows with NaN dropped" in ax.get_title() and "resnet18 vs resnet50" in ax.get_title()
    assert len(fig.axes) == 2 and "density" in fig.axes[1].get_ylabel()  # KDE colour bar

    ok = df.dropna(subset=["cmcs_pearson", "importance"])
    x, y = ok["cmcs_pearson"].to_numpy(), ok["importance"].to_numpy()
    thr = np.quantile(y, 0.8)
    expected = {
        "high similarity": int((x >= 0.55).sum()),
        "low similarity, low importance": int(((x < 0.55) & (y < thr)).sum()),
        "low similarity, high importance": int(((x < 0.55) & (y >= thr)).sum()),
    }
    assert _region_texts(ax) == expected
    # threshold lines where the oracle puts them: the similarity threshold vertical, the importance
    # quantile horizontal up to it
    assert any(np.allclose(line.get_xdata(), 0.55) for line in ax.get_lines())
    segments = [s for coll in ax.collections if hasattr(coll, "get_segments") for s in coll.get_segments()]
    assert any(np.isclose(s[0, 1], thr) and np.isclose(s[1, 0], 0.55) for s in segments)
    # every finite point is drawn
    points = [c for c in ax.collections if isinstance(c, PathCollection)][0].get_offsets()
    assert sorted(map(tuple, np.asarray(points))) == sorted(zip(x, y))
    assert_png(fig, tmp_path / "sim_imp.png")


@pytest.mark.parametrize("n", [20, 3, 0])
def test_similarity_vs_importance_few_points(n, tmp_path):
    df = tidy_table(n_classes=1).iloc[:n]
    fig = plots.plot_similarity_vs_importance(df, "smcs_pearson")
    assert fig.axes[0].get_xlabel() == "SMCS (Pearson)"
    if n >= 5:
        assert len(fig.axes) == 2  # density drawn
    else:
        assert len(fig.axes) == 1  # scatter only
    assert_png(fig, tmp_path / f"few{n}.png")


def test_similarity_vs_importance_singular_kde_falls_back():
    df = tidy_table(n_classes=1)
    df["importance"] = 0.1  # zero variance: covariance singular
    fig = plots.plot_similarity_vs_importance(df)
    assert len(fig.axes) == 1 and "points only" in fig.axes[0].get_title()
    df = tidy_table(n_classes=1)
    df["cmcs_pearson"] = 2 * df["importance"] + 0.1  # collinear
    fig = plots.plot_similarity_vs_importance(df)
    assert len(fig.axes) == 1


# ----------------------------------------------------------------------------- Fig. 4


def test_replacement_test_panels(tmp_path):
    df = tidy_table()
    df.loc[[1, 2], "kl"] = np.nan
    fig = plots.plot_replacement_test(df, title="resnet18 vs resnet50")
    panels, cbar = fig.axes[:3], fig.axes[3]
    assert [ax.get_ylabel() for ax in panels] == [plots.metric_label(c) for c in ("l2", "kl", "match_acc")]
    assert all("Δ Pearson" in ax.get_xlabel() for ax in panels)
    assert "importance" in cbar.get_ylabel()
    assert "2 NaN dropped" in panels[1].get_title() and "NaN" not in panels[0].get_title()
    for ax, col in zip(panels, ("l2", "kl", "match_acc")):
        ok = df.dropna(subset=[col])
        coll = [c for c in ax.collections if isinstance(c, PathCollection)][0]
        drawn = np.column_stack([np.asarray(coll.get_offsets()), coll.get_array()])
        expected = ok[["delta_pearson", col, "importance"]].to_numpy()
        np.testing.assert_allclose(drawn[np.lexsort(drawn.T)], expected[np.lexsort(expected.T)])
        assert np.all(np.diff(coll.get_array()) >= 0)  # most important drawn last
    assert_png(fig, tmp_path / "replacement.png")
    plots.plot_replacement_test(df.iloc[:3])
    plots.plot_replacement_test(df.assign(importance=np.nan))


# ----------------------------------------------------------------------------- Fig. A9


def test_mcs_vs_cmcs_identity_line_and_share(tmp_path):
    df = tidy_table()
    df["cv_cmcs_pearson"] = 0.8 * df["cmcs_pearson"] + 0.15  # differs from the held-out split's CMCS
    fig = plots.plot_mcs_vs_cmcs(df)
    ax = fig.axes[0]
    # the paper's A.7 compares MCS with the CMCS of the lasso's held-out folds (same images as MCS)
    assert ax.get_xlabel() == "MCS (Pearson)" and ax.get_ylabel() == "CMCS on held-out folds (Pearson)"
    assert any(np.allclose(l.get_xdata(), l.get_ydata()) and l.get_color() == "red" for l in ax.get_lines())
    share = np.mean(df["cv_cmcs_pearson"].to_numpy() > df["mcs_pearson"].to_numpy())
    assert f"CMCS > MCS for {share:.0%} of concepts" in texts(fig)
    points = [c for c in ax.collections if isinstance(c, PathCollection)][0].get_offsets()
    assert sorted(map(tuple, np.asarray(points))) == sorted(zip(df["mcs_pearson"], df["cv_cmcs_pearson"]))
    split = plots.plot_mcs_vs_cmcs(df, cmcs="cmcs_pearson").axes[0]
    assert split.get_ylabel() == "CMCS (Pearson)"
    assert "resnet18 → resnet50" in ax.get_title()
    assert_png(fig, tmp_path / "mcs.png")
    plots.plot_mcs_vs_cmcs(df.assign(mcs_pearson=np.nan))
    plots.plot_mcs_vs_cmcs(df.iloc[:3])


# ----------------------------------------------------------------------------- model matrix


def test_model_matrix_cells_equal_group_means(tmp_path):
    df = pd.concat([tidy_table(seed=0), tidy_table(seed=1, models=("vit_small", "resnet50"))])
    df.iloc[5, df.columns.get_loc("cmcs_pearson")] = np.nan
    fig = plots.plot_model_matrix(df, "cmcs_pearson")
    ax = fig.axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    cols = [t.get_text() for t in ax.get_xticklabels()]
    assert rows == cols == ["resnet18", "resnet50", "vit_small"]
    assert "source" in ax.get_ylabel() and "target" in ax.get_xlabel()
    # oracle: brute-force mean per (source, target)
    expected = {}
    for s in rows:
        for t in cols:
            v = df.loc[(df.source == s) & (df.target == t), "cmcs_pearson"].to_numpy()
            v = v[np.isfinite(v)]
            if v.size:
                expected[(s, t)] = f"{v.mean():.2f}"
    got = {}
    for t in ax.texts:
        x, y = t.get_position()
        got[(rows[int(y)], cols[int(x)])] = t.get_text()
    assert got == expected
    assert "1 NaN rows dropped" in ax.get_title()
    assert_png(fig, tmp_path / "matrix.png")
    plots.plot_model_matrix(df.assign(cmcs_pearson=np.nan))


# ----------------------------------------------------------------------------- Fig. 2


def test_gallery_rows_colours_and_text(tmp_path):
    rng = np.random.default_rng(2)
    patch = lambda: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)  # noqa: E731
    groups = {
        "top_real": [(patch(), 0.91, 0.12), (patch(), 0.8, 0.3)],
        "over": [(patch(), 0.05, 0.77)],
        "under": [],
    }
    fig = plots.plot_gallery(groups, "barbell, concept 3, vit_small → resnet50, CMCS 0.21")
    axes = np.array(fig.axes).reshape(3, 2)
    assert fig._suptitle.get_text() == "barbell, concept 3, vit_small → resnet50, CMCS 0.21"
    for r, (key, label) in enumerate(plots.GROUP_LABELS.items()):
        ylabel = axes[r, 0].yaxis.label
        assert ylabel.get_text() == label
        assert mcolors.same_color(ylabel.get_color(), plots.GROUP_COLORS[key])
        for c, item in enumerate(groups[key]):
            ax = axes[r, c]
            np.testing.assert_array_equal(ax.images[0].get_array(), item[0])
            assert ax.get_xlabel() == f"real {item[1]:.2f} / pred {item[2]:.2f}"
            assert all(mcolors.same_color(s.get_edgecolor(), plots.GROUP_COLORS[key]) for s in ax.spines.values())
    assert plots.GROUP_COLORS == {"top_real": "#2ca02c", "over": "#ff7f0e", "under": "#1f77b4"}
    assert [t.get_text() for t in axes[2, 0].texts] == [plots.EMPTY_ROW["under"]]
    assert plots.EMPTY_ROW["under"].startswith("none: no patch is predicted below")
    assert not axes[1, 1].images and not axes[2, 1].images
    assert_png(fig, tmp_path / "gallery.png")
    with pytest.raises(ValueError):
        plots.plot_gallery({"best": []}, "x")


# ----------------------------------------------------------------------------- captions


@pytest.mark.parametrize(
    "name",
    [
        "layerwise_mmcs",
        "similarity_importance",
        "smcs_importance",
        "replacement",
        "mcs_cmcs",
        "concept_table",
        "gallery",
        "model_matrix",
        "workflow",
        "run_summary",
        "pairs_summary",
    ],
)
def test_report_captions_are_valid_rst(name):
    from docutils.core import publish_parts

    text = (REPORT / f"{name}.rst").read_text()
    assert len(text.split()) > 30
    # halt on any docutils warning (halt_level 2), the way a broken caption would show in the report
    html = publish_parts(text, writer="html", settings_overrides={"halt_level": 2, "report_level": 5})["body"]
    assert "<p>" in html


def test_a_class_name_with_dollar_signs_is_drawn_as_text(tmp_path):
    """matplotlib reads $...$ as mathtext: a class name like this one would fail to draw (an unknown
    command) or be shown as math; the gallery title shows it as written."""
    name = r"price $\notacommand$ & <b>"
    fig = plots.plot_gallery({}, f"{name} | concept 0 of a | b (predictor) -> a (target)")
    fig.savefig(tmp_path / "gallery.png")  # draws the title: raises ValueError when parsed as math
    title = fig._suptitle
    assert title.get_text().replace(r"\$", "$").startswith(name)
    assert not title._preprocess_math(title.get_text())[1]  # drawn as plain text, no mathtext
