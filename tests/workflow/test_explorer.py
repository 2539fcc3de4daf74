"""The concept explorer of a tiny run, opened in headless Chromium like a reader would.

Oracles are independent of the site's code: the tidy table (read with pandas), the compare files
(which held-out rows each view shows, the per-class MMCS) and Python's own sorting and filtering.
Set ``RSVC_TINY_RUN=<dir>`` to reuse a completed tiny run (a copy is used; the explorer rule runs when
it is missing) and ``RSVC_EXPLORER_SHOTS=<dir>`` to keep the screenshots (docs/explorer.md's come from here).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from chromium import not_blank, screenshot_dir
from conftest import class_file, run_snakemake

from rsvc.formats import Skipped, read_compare_status, read_concept_views, read_mmcs, write_compare

pytestmark = pytest.mark.workflow

PAIR = "ps-vs-nc"
MODELS = ("ps", "nc")
DIRECTIONS = ("nc->ps", "ps->nc")  # d0, d1 of the index: the concepts of a, then of b
# the tidy-table columns a concept card shows
CONCEPT_NUMBERS = {
    *("cmcs_pearson", "cmcs_pearson_ci_low", "cmcs_pearson_ci_high", "smcs_pearson", "smcs_pearson_ci_low"),
    *("smcs_pearson_ci_high", "cmcs_spearman", "smcs_spearman", "cv_cmcs_pearson", "mcs_pearson"),
    *("mcs_pearson_ci_low", "mcs_pearson_ci_high", "mcs_p_value", "importance", "l2", "kl", "match_acc"),
    *("delta_pearson", "stability_self_mcs", "p_unique", "q_unique"),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory, request):
    """(run directory, config) of a tiny run whose explorer the workflow has built."""
    workdir = tmp_path_factory.mktemp("explorer_run")
    reuse = os.environ.get("RSVC_TINY_RUN")
    source = Path(reuse) if reuse else request.getfixturevalue("tiny_run")[0]
    shutil.copytree(source, workdir, symlinks=True, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".venv", ".git"))
    config = workdir / "tiny.yaml"
    if not config.exists():  # a `make demo` checkout
        config = workdir / "config.yaml"
    target = f"results/explorer/{PAIR}.html"
    # built again with this checkout's code (a reused run may hold an older site)
    run_snakemake(
        target, "--forcerun", "explorer", "--cores", "2", "--configfile", str(config), cwd=workdir, timeout=600
    )
    return workdir, yaml.safe_load(config.read_text())


@pytest.fixture(scope="module")
def table(run) -> pd.DataFrame:
    workdir, _ = run
    return pd.read_csv(workdir / f"results/pairs/{PAIR}/concepts.csv", dtype={"class_id": str})


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return screenshot_dir(tmp_path_factory, "RSVC_EXPLORER_SHOTS", "explorer_shots")


def class_oracle(run, table) -> list[dict]:
    """The index rows, computed here from the tidy table and the compare files, in the run's class order."""
    workdir, cfg = run
    names = {**{c: c for c in cfg["dataset"]["classes"]}, **cfg["dataset"].get("class_names", {})}
    out = []
    for cid in cfg["dataset"]["classes"]:
        compare = class_file(workdir / "results", "compare", PAIR, cid)
        status = read_compare_status(compare)
        row = {"id": cid, "name": names[cid], "skipped": status.skipped, "reason": status.reason}
        if not status.skipped:
            row["mmcs"] = float(read_mmcs(compare, "pearson")[0][-1, -1])
            for i, d in enumerate(DIRECTIONS):
                g = table[(table["class_id"] == cid) & (table["direction"] == d)]
                unique = g["unique"].fillna(False).astype(bool)  # undefined (NA) is not unique
                row[f"d{i}.n_unique"] = int(unique.sum())
                row[f"d{i}.importance_unique"] = float(g.loc[unique, "importance"].sum())
                row[f"d{i}.min_cmcs"] = float(g["cmcs_pearson"].min())
                row[f"d{i}.mean_cmcs"] = float(g["cmcs_pearson"].mean())
        out.append(row)
    return out


def same(shown: str, want: float, rel: float = 0.0) -> bool:
    """A data-v attribute ('' = missing) against the oracle's number (NaN = missing)."""
    if shown == "" or want is None or (isinstance(want, float) and math.isnan(want)):
        return shown == "" and (want is None or math.isnan(want))
    return math.isclose(float(shown), want, rel_tol=rel, abs_tol=0.0)


def open_index(browser, workdir: Path, hash_: str = "") -> float:
    """Navigate to the explorer (optionally at ``#hash_``); seconds until the index table is rendered."""
    browser.call("Page.navigate", session=True, url="about:blank")
    t0 = time.monotonic()
    url = (workdir / f"results/explorer/{PAIR}/index.html").as_uri() + (f"#{hash_}" if hash_ else "")
    browser.call("Page.navigate", session=True, url=url)
    browser.wait_for("window.RSVC_READY !== undefined && document.readyState === 'complete'")
    return time.monotonic() - t0


def type_into(browser, selector: str, text: str) -> None:
    """Set an input box's text as typing does (an input event)."""
    browser.js(
        f"(() => {{ const f = document.querySelector({json.dumps(selector)}); f.value = {json.dumps(text)};"
        " f.dispatchEvent(new Event('input')); })()"
    )


ROWS_JS = """[...document.querySelectorAll('#rows tr')].map(tr => ({id: tr.dataset.id,
  nums: Object.fromEntries([...tr.querySelectorAll('.num')].map(s => [s.dataset.key, s.dataset.v]))}))"""


def test_index_lists_every_class_with_the_tidy_numbers(run, table, browser, shots):
    workdir, cfg = run
    seconds = open_index(browser, workdir)
    oracle = class_oracle(run, table)
    analysed = [c for c in oracle if not c["skipped"]]
    assert set(table["class_id"]) == {c["id"] for c in analysed}
    rows = browser.js(ROWS_JS)
    assert [r["id"] for r in rows] == [c["id"] for c in analysed], "every analysed class, in the run's order"
    for r, want in zip(rows, analysed, strict=True):
        for key in ["mmcs"] + [f"d{i}.{f}" for i in (0, 1) for f in ("n_unique", "min_cmcs")]:
            assert same(r["nums"][key], want[key]), (r["id"], key)
        for key in [f"d{i}.{f}" for i in (0, 1) for f in ("importance_unique", "mean_cmcs")]:
            assert same(r["nums"][key], want[key], rel=1e-12), (r["id"], key)  # sums: the order of addition
    skipped = browser.js("[...document.querySelectorAll('#skipped tr[data-id]')].map(tr => tr.dataset.id)")
    assert skipped == [c["id"] for c in oracle if c["skipped"]]
    assert not_blank(browser.screenshot(shots / "explorer_index.png"))
    assert browser.errors() == []
    assert seconds < 10


def test_filter_by_name_and_sort_by_cmcs_change_the_list(run, table, browser):
    workdir, _ = run
    open_index(browser, workdir)
    analysed = [c for c in class_oracle(run, table) if not c["skipped"]]
    ids = lambda: [r["id"] for r in browser.js(ROWS_JS)]  # noqa: E731

    # filter by name: a substring of the second class's name
    query = analysed[1]["name"][:3].upper()
    type_into(browser, "#filter", query)
    want = [c["id"] for c in analysed if query.lower() in c["name"].lower() or query.lower() in c["id"].lower()]
    assert ids() == want and 0 < len(want) < len(analysed) + 1
    type_into(browser, "#filter", "")
    assert ids() == [c["id"] for c in analysed]

    # sort by the lowest CMCS of ps's concepts: ascending, then descending on a second click
    order = sorted(analysed, key=lambda c: c["d0.min_cmcs"])
    browser.js("document.querySelector('#classes th[data-key=\"d0.min_cmcs\"]').click()")
    assert ids() == [c["id"] for c in order]
    browser.js("document.querySelector('#classes th[data-key=\"d0.min_cmcs\"]').click()")
    assert ids() == [c["id"] for c in sorted(analysed, key=lambda c: -c["d0.min_cmcs"])]

    # a numeric filter: classes whose mean CMCS (nc -> ps) is above the median of the run
    cut = float(np.median([c["d0.mean_cmcs"] for c in analysed]))
    type_into(browser, '.numfilter[data-key="d0.mean_cmcs"]', f">{cut!r}")
    assert set(ids()) == {c["id"] for c in analysed if c["d0.mean_cmcs"] > cut}
    assert browser.errors() == []


CARDS_JS = """[...document.querySelectorAll('article.concept')].map(a => ({
  id: a.dataset.concept,
  nums: Object.fromEntries([...a.querySelectorAll('.num')].map(s => [s.dataset.key, s.dataset.v])),
  views: Object.fromEntries(['top_real', 'over', 'under'].map(g =>
    [g, [...a.querySelectorAll('img.tile.' + g)].map(img => img.title.split('\\n')[0])]))}))"""
BROKEN_JS = "[...document.images].filter(x => !(x.complete && x.naturalWidth > 0)).map(x => x.src)"


def test_class_pages_show_every_concept_with_its_patches_and_numbers(run, table, browser, shots):
    workdir, cfg = run
    open_index(browser, workdir)
    k = cfg["concepts"]["k"]
    number_columns = sorted(CONCEPT_NUMBERS)
    for n, (cid, rows) in enumerate(table.groupby("class_id", sort=False)):
        browser.js(f"location.hash = {json.dumps('#' + cid)}")
        browser.wait_for(f"document.querySelectorAll('article.concept').length === {2 * k}")
        browser.wait_for(f"[...document.images].every(x => x.complete) && ({BROKEN_JS}).length === 0")
        assert browser.js(f"document.getElementById('class-title').textContent.includes({json.dumps(cid)})")
        cards = {c["id"]: c for c in browser.js(CARDS_JS)}
        compare = class_file(workdir / "results", "compare", PAIR, cid)
        for src, tgt in (("nc", "ps"), ("ps", "nc")):
            v = read_concept_views(compare, src, tgt)
            for r in rows[rows["target"] == tgt].itertuples():
                card = cards[f"{tgt}-{r.concept}"]
                # every number is the tidy table's, exactly
                for col in number_columns:
                    assert same(card["nums"][col], getattr(r, col)), (cid, tgt, r.concept, col)
                # every view shows the held-out rows the compare job chose, in order (image @ grid index)
                for g, group in enumerate(("top_real", "over", "under")):
                    want = [
                        f"{v['image_ids'][v['patch_image'][x]]} @ {v['patch_index'][x]}"
                        for x in v["views"][r.concept, g]
                        if x >= 0
                    ]
                    assert card["views"][group] == want, (cid, tgt, r.concept, group)
                assert card["views"]["top_real"], "a concept with no patches"
        if n == 0:
            assert not_blank(browser.screenshot(shots / "explorer_class.png"))
    assert browser.errors() == []


def test_a_concept_url_opens_that_concept_and_keys_move(run, table, browser):
    workdir, cfg = run
    cid = table["class_id"].iloc[-1]
    open_index(browser, workdir, f"{cid}/nc-2")
    browser.wait_for("document.querySelector('article.concept.focus') !== null")
    assert browser.js("document.querySelector('article.concept.focus').dataset.concept") == "nc-2"
    top = browser.js("document.querySelector('article.concept.focus').getBoundingClientRect().top")
    assert 0 <= top < browser.js("window.innerHeight / 2"), "scrolled to the concept"
    # j: the next concept (the address follows), Esc: back to the index
    browser.call("Input.dispatchKeyEvent", session=True, type="keyDown", key="j", text="j")
    browser.wait_for("document.querySelector('article.concept.focus').dataset.concept === 'nc-3'")
    assert browser.js("location.hash") == f"#{cid}/nc-3"
    browser.call("Input.dispatchKeyEvent", session=True, type="keyDown", key="Escape", windowsVirtualKeyCode=27)
    browser.wait_for("!document.getElementById('view-index').hidden")
    assert browser.errors() == []


def test_skipped_and_partial_classes(run, table, browser, tmp_path):
    """A copy of the run with one class marked skipped and one without held-out views (too few held-out
    images), rebuilt with the library: the first listed with its reason, the second opens without patches."""
    import h5py

    from rsvc.explorer import build_explorer
    from rsvc.formats import read_concept_table
    from rsvc.patches import patch_boxes

    workdir, cfg = run
    classes = cfg["dataset"]["classes"]
    compare = {c: class_file(workdir / "results", "compare", PAIR, c) for c in classes}
    gone, partial = classes[0], classes[1]
    compare[gone] = tmp_path / "skipped.h5"
    attrs = {"pair": PAIR, "class_id": gone, "models": list(MODELS)}
    write_compare(compare[gone], Skipped("1 image predicted (min_images = 5)"), attrs)
    compare[partial] = tmp_path / "partial.h5"
    shutil.copyfile(class_file(workdir / "results", "compare", PAIR, partial), compare[partial])
    with h5py.File(compare[partial], "r+") as f:  # what compare writes for a held-out set below the minimum
        for d in DIRECTIONS:
            f[f"views/{d}"][...] = -1
        f.attrs["note"] = "3 held-out images < concepts.min_heldout_images=4"
    tidy = read_concept_table(workdir / f"results/pairs/{PAIR}/concepts.csv")
    tidy = tidy[tidy["class_id"] != gone]
    ds = cfg["dataset"]
    site = tmp_path / "results/explorer" / PAIR
    boxes = patch_boxes(ds["image_size"], ds["patch_size"])
    build_explorer(site, tidy, compare, {}, MODELS, workdir / ds["root"], boxes, ds["image_size"])
    assert not (site / "sprites/c0001.webp").exists()

    open_index(browser, tmp_path)
    assert [r["id"] for r in browser.js(ROWS_JS)] == classes[1:]
    assert browser.js("[...document.querySelectorAll('#skipped tr[data-id]')].map(tr => tr.innerText)") == [
        f"{gone} {gone}\t1 image predicted (min_images = 5)"
    ]
    assert browser.js(f"document.querySelector('#rows tr[data-id={json.dumps(partial)}] .badge').title").startswith(
        "3 held-out images"
    )
    browser.js(f"location.hash = {json.dumps('#' + gone)}")
    browser.wait_for("document.body.innerText.includes('Skipped: 1 image predicted')")
    browser.js(f"location.hash = {json.dumps('#' + partial)}")
    browser.wait_for(f"document.querySelectorAll('article.concept').length === {2 * cfg['concepts']['k']}")
    assert browser.js("document.images.length") == 0
    assert browser.js("document.body.innerText.includes('No patches')")
    assert browser.errors() == []
