"""The concept explorer: a static site per model pair to browse every class and concept in a browser.

``<outdir>/explorer/<pair>/`` opens from ``index.html`` with no server and no network:

- ``index.html``, ``explorer.js``, ``explorer.css``: the page and its code (``rsvc/explorer_site``);
- ``data/index.js``: ``window.RSVC_INDEX = {...}``, one entry per class (:func:`class_summary`);
- ``data/c<i>.js``: ``RSVC.classLoaded({...})``, everything a class page shows (:func:`class_page`),
  loaded on demand by a ``<script>`` tag (browsers refuse ``fetch()`` of ``file://`` JSON);
- ``sprites/c<i>.webp``: the class's patch thumbnails packed into one image (:func:`pack_sprite`).

Every per-concept number is the tidy table's (``rsvc.formats.read_concept_table``), written with
Python's shortest round-trip ``repr`` (JSON), so the page shows exactly the table's values. The
patches are the ones the compare job chose for the dissimilarity views of section 3.4 (top real,
over- and under-predicted, one per image, held-out images), cut from the canonical images
(:func:`rsvc.galleries.canonical_patches`); no model is run. Files are named by the class's position
(``c0001``), never by its id, so any class id is a safe file name.
"""

from __future__ import annotations

import html
import math
import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import PIL.Image

from rsvc.formats import read_compare_status, read_concept_views, read_mmcs
from rsvc.galleries import VIEW_GROUPS, canonical_patches
from rsvc.io import atomic_dir
from rsvc.specs import direction
from rsvc.tables import is_unique
from rsvc.web import script_json

if TYPE_CHECKING:
    import pandas as pd

SITE = Path(__file__).with_name("explorer_site")  # index.html, explorer.js, explorer.css
SPRITE_COLUMNS = 16
SPRITE_QUALITY = 80  # WebP quality of the sprite sheets
#: Tidy-table columns shown per concept (exact values; NaN -> null).
CONCEPT_NUMBERS = (
    "cmcs_pearson",
    "cmcs_pearson_ci_low",
    "cmcs_pearson_ci_high",
    "smcs_pearson",
    "smcs_pearson_ci_low",
    "smcs_pearson_ci_high",
    "cmcs_spearman",
    "smcs_spearman",
    "cv_cmcs_pearson",
    "mcs_pearson",
    "mcs_pearson_ci_low",
    "mcs_pearson_ci_high",
    "mcs_p_value",
    "importance",
    "l2",
    "kl",
    "match_acc",
    "delta_pearson",
    "stability_self_mcs",
    "p_unique",
    "q_unique",
)


# ---------------------------------------------------------------- sprites
@dataclass(frozen=True)
class Sprite:
    """Thumbnails of one class packed row-major into one image.

    pixels: ``(rows * size, cols * size, 3)`` uint8; tile ``i`` lies at :func:`tile_origin`;
    n: the number of tiles (the last row may be partly empty, black).
    """

    pixels: np.ndarray
    size: int
    cols: int
    n: int


def tile_origin(i: int, size: int, cols: int) -> tuple[int, int]:
    """``(x, y)`` pixel offset of tile ``i`` in a sprite of ``cols`` columns of ``size`` px tiles."""
    return (i % cols) * size, (i // cols) * size


def thumbnail(patch: np.ndarray, size: int) -> np.ndarray:
    """``(h, w, 3)`` uint8 patch -> ``(size, size, 3)`` uint8 (PIL bilinear, antialiased)."""
    img = PIL.Image.fromarray(np.ascontiguousarray(patch))
    if img.size != (size, size):
        img = img.resize((size, size), PIL.Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def pack_sprite(patches: Sequence[np.ndarray], size: int, cols: int = SPRITE_COLUMNS) -> Sprite:
    """Patches ``[(h, w, 3) uint8, ...]`` -> their :func:`thumbnail` s in one :class:`Sprite`."""
    n = len(patches)
    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    pixels = np.zeros((rows * size, cols * size, 3), dtype=np.uint8)
    for i, patch in enumerate(patches):
        x, y = tile_origin(i, size, cols)
        pixels[y : y + size, x : x + size] = thumbnail(patch, size)
    return Sprite(pixels, size, cols, n)


def save_sprite(sprite: Sprite, path: str | Path, quality: int = SPRITE_QUALITY) -> None:
    """The sprite as WebP (lossy, ``quality``); written in place (the caller writes atomically)."""
    PIL.Image.fromarray(sprite.pixels).save(path, format="WEBP", quality=quality, method=4)


# ---------------------------------------------------------------- per-class data
@dataclass(frozen=True)
class ClassInputs:
    """What one class of the explorer is built from.

    rows: the class's tidy-table rows (both directions, all concepts); compare: its compare file;
    file: the base name of its data and sprite files (``c0001``).
    """

    class_id: str
    name: str
    file: str
    compare: str
    rows: pd.DataFrame


def _number(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _matrix(m: np.ndarray, digits: int = 4) -> list[list[float | None]]:
    return [[None if not math.isfinite(v) else round(float(v), digits) for v in row] for row in m]


def class_summary(rows: pd.DataFrame, models: tuple[str, str]) -> dict[str, Any]:
    """The index row's numbers of one class from its tidy-table rows, per direction ``d`` (the
    concepts of the target predicted from the source): ``{d: {n_unique, importance_unique (sum of the
    importance of the unique concepts; 0 when none), min_cmcs, mean_cmcs (NaN ignored), n}}``."""
    a, b = models
    out = {}
    for src, tgt in ((b, a), (a, b)):
        d = direction(src, tgt)
        g = rows[rows["direction"] == d]
        unique = is_unique(g["unique"])
        cmcs = g["cmcs_pearson"].dropna()
        out[d] = {
            "n": len(g),
            "n_unique": int(unique.sum()),
            "importance_unique": _number(g.loc[unique, "importance"].sum()),
            "min_cmcs": _number(cmcs.min()) if len(cmcs) else None,
            "mean_cmcs": _number(cmcs.mean()) if len(cmcs) else None,
        }
    return out


def concept_records(rows: pd.DataFrame, views: Mapping[str, Any], tile_of: Mapping[int, int]) -> list[dict]:
    """One record per concept of one direction: the tidy table's numbers and the views as
    ``{group: [[tile, real, pred], ...]}`` (``views``: :func:`rsvc.formats.read_concept_views`, all concepts)."""
    out = []
    for r in rows.sort_values("concept").itertuples(index=False):
        i = int(r.concept)
        groups = {}
        for g, group in enumerate(VIEW_GROUPS):
            picked = [int(x) for x in views["views"][i, g] if x >= 0] if len(views["views"]) else []
            groups[group] = [
                [tile_of[x], round(float(views["real"][x, i]), 4), round(float(views["pred"][x, i]), 4)] for x in picked
            ]
        out.append(
            {
                "concept": i,
                "unique": None
                if r.unique is None or r.unique != r.unique or str(r.unique) == "<NA>"
                else bool(r.unique),
                "note": str(r.note),
                **{c: _number(getattr(r, c)) for c in CONCEPT_NUMBERS},
                "views": groups,
            }
        )
    return out


def class_page(
    inputs: ClassInputs, models: tuple[str, str], image_root: str | Path, boxes: np.ndarray, image_size: int
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """``(page data, patches)`` of one analysed class: the patches ``[(h, w, 3) uint8]`` of every held-out
    row that some view shows (each once, tile ``i`` = ``patches[i]``) and the JSON-ready page: the tidy
    numbers and views of each model's concepts, and the class's layerwise MMCS matrices."""
    a, b = models
    views = {tgt: read_concept_views(inputs.compare, src, tgt) for src, tgt in ((b, a), (a, b))}
    used = sorted({int(x) for v in views.values() for x in np.ravel(v["views"]) if x >= 0})
    tile_of = {row: i for i, row in enumerate(used)}
    ref = views[a]
    rows_of = [(str(ref["image_ids"][ref["patch_image"][r]]), int(ref["patch_index"][r])) for r in used]
    patches = canonical_patches(image_root, rows_of, boxes, image_size)
    mmcs = {}
    for method in ("pearson", "spearman"):
        found = read_mmcs(inputs.compare, method)
        if found is not None:
            m, layers_a, layers_b = found
            mmcs[method] = {
                "matrix": _matrix(m),
                "layers_a": layers_a,
                "layers_b": layers_b,
                "pre_logits": _number(m[-1, -1]) if m.size else None,  # exact, unlike the rounded matrix
            }
    concepts = {}
    for src, tgt in ((b, a), (a, b)):
        d = direction(src, tgt)
        concepts[tgt] = {
            "source": src,
            "direction": d,
            "concepts": concept_records(inputs.rows[inputs.rows["direction"] == d], views[tgt], tile_of),
        }
    page = {
        "class_id": inputs.class_id,
        "name": inputs.name,
        "note": str(inputs.rows["note"].iloc[0]) if len(inputs.rows) else "",
        "tiles": [f"{img} @ {p}" for img, p in rows_of],
        "mmcs": mmcs,
        "concepts": concepts,
    }
    return page, patches


def _js(name: str, value: Any) -> str:
    return f"{name}({script_json(value, allow_nan=False, separators=(',', ':'))});\n"


def _build_class(
    inputs: ClassInputs, site: Path, models: tuple[str, str], image_root, boxes, image_size: int, thumb_size: int
) -> dict[str, Any]:
    """Writes the class's data file and sprite; returns its index entry."""
    status = read_compare_status(inputs.compare)
    entry: dict[str, Any] = {"id": inputs.class_id, "name": inputs.name, "file": inputs.file}
    if status.skipped or not len(inputs.rows):
        return {**entry, "status": "skipped", "reason": status.reason or "no concepts in the table"}
    page, patches = class_page(inputs, models, image_root, boxes, image_size)
    sprite = pack_sprite(patches, thumb_size) if patches else None
    if sprite is not None:
        save_sprite(sprite, site / "sprites" / f"{inputs.file}.webp")
    page["sprite"] = (
        {"src": f"sprites/{inputs.file}.webp", "size": sprite.size, "cols": sprite.cols, "n": sprite.n}
        if sprite is not None
        else None
    )
    (site / "data" / f"{inputs.file}.js").write_text(_js("RSVC.classLoaded", page))
    return {
        **entry,
        "status": "partial" if status.note else "ok",
        "reason": status.note,
        "mmcs": page["mmcs"].get("pearson", {}).get("pre_logits"),
        "dirs": class_summary(inputs.rows, models),
    }


def build_explorer(
    out: str | Path,
    table: pd.DataFrame,
    compare_files: Mapping[str, str | Path],
    class_names: Mapping[str, str],
    models: tuple[str, str],
    image_root: str | Path,
    boxes: np.ndarray,
    image_size: int,
    thumb_size: int = 48,
    similarity_threshold: float = 0.5,
    fdr: float = 0.05,
    fdr_method: str = "bh",
    threads: int = 1,
) -> dict[str, Any]:
    """Write the explorer of one pair to the folder ``out`` (atomically: built next to it, then renamed).

    table: the pair's tidy concept table; compare_files: class id -> compare file, in the order of the
    index (the analysed classes); boxes: ``(P, 4)`` patch grid (:func:`rsvc.patches.patch_boxes`).
    Returns the index data (also written to ``data/index.js``).
    """
    a, b = models
    rows_of = {cid: g for cid, g in table.groupby("class_id", sort=False)}
    empty = table.iloc[:0]
    jobs = [
        ClassInputs(cid, class_names.get(cid, cid), f"c{i:04d}", str(path), rows_of.get(cid, empty))
        for i, (cid, path) in enumerate(compare_files.items())
    ]
    with atomic_dir(out) as site:
        for sub in ("data", "sprites"):
            (site / sub).mkdir()
        for asset in ("index.html", "explorer.js", "explorer.css"):
            shutil.copyfile(SITE / asset, site / asset)
        with ThreadPoolExecutor(max(1, threads)) as pool:
            entries = list(
                pool.map(lambda j: _build_class(j, site, models, image_root, boxes, image_size, thumb_size), jobs)
            )
        index = {
            "pair": f"{a}-vs-{b}",
            "models": [a, b],
            "directions": [
                {"key": direction(b, a), "source": b, "target": a},
                {"key": direction(a, b), "source": a, "target": b},
            ],
            "similarity_threshold": similarity_threshold,
            "fdr": fdr,
            "fdr_method": fdr_method,
            "classes": entries,
        }
        (site / "data" / "index.js").write_text(
            f"window.RSVC_INDEX = {script_json(index, allow_nan=False, separators=(',', ':'))};\n"
        )
    return index


def launcher_html(site: str | Path, pair: str) -> str:
    """A small page that points to the explorer of ``pair`` in the folder ``site`` (as the workflow names it,
    e.g. ``results/explorer/<pair>``): the Snakemake report embeds files as data URIs and cannot hold a
    folder, so this page, next to the folder, links to it relatively and names its path. No absolute path:
    the results stay the same wherever the run is."""
    site = Path(site)
    pair, href, shown = (html.escape(text) for text in (pair, quote(site.name) + "/index.html", site.as_posix()))
    return (
        "<!doctype html><meta charset='utf-8'><title>RSVC explorer " + pair + "</title>"
        "<body style='font:15px system-ui,sans-serif;margin:2em'>"
        f"<h2>Concept explorer of {pair}</h2>"
        f"<p>Open <a href='{href}' target='_blank'><code>{shown}/index.html</code></a> "
        "in a browser (relative to the workflow's working directory): every class and every concept of the pair, "
        "with its patches; no server or network needed.</p>"
        "<p>From the report, open that file directly (browsers do not follow a report page's links to local "
        "files).</p></body>\n"
    )
