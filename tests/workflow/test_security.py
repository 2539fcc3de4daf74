"""Names are data, never code: a run whose class names carry HTML and script payloads, its Snakemake
report and its concept explorer opened in headless Chromium. No payload may run (each would set
``window.__rsvc_xss``; none may create an element) and every name must be shown as the text it is.

The default suite reuses the shared tiny run (``tiny_run``): readable class names with payloads, from
a class-list file (``<id>\\t<name>``), rerun only the jobs that show names (aggregate, gallery,
explorer). The slow variant draws a dataset whose class ids (folder names) carry payloads too and
runs the workflow from scratch. The report half checks the workaround in ``rules/report.smk`` (docs/security.md).

Set ``RSVC_TINY_RUN=<dir>`` to start from a completed tiny run (a copy) instead of ``tiny_run``, or
``RSVC_SECURITY_RUN=<dir>`` to use a completed run that already has such names (a copy of it).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_snakemake, tiny_config, write_config
from test_report import embedded_json

from rsvc.preflight import read_class_list

pytestmark = pytest.mark.workflow

PAIR = "ps-vs-nc"
FLAG = "window.__rsvc_xss"  # every payload sets it when it runs
# readable names (any characters): the report's `<script>` end, a comment opener, markup in
# attributes, Jinja and JS template syntax, matplotlib mathtext, quotes, ampersands, accents
NAMES = [
    f"</script><img src=x onerror={FLAG}=1> $\\notacommand$",
    f"<!--<script>{FLAG}=2</script> «é» & &amp;",
    f"\"'><svg onload={FLAG}=3> {{{{ 7*7 }}}} ${{{FLAG}=4}}",
]
# class ids are folder names: no '/', no {...}, no <name> (refused by the config checks)
IDS = [f'<img src=x onerror="{FLAG}=5">', "\"q' &amp; é <b >x", f"<svg onload={FLAG}=6>"]


def names_of(workdir: Path, cfg: dict) -> dict[str, str]:
    """Class id -> the name the run shows (class-list file, then dataset.class_names), as the workflow reads them."""
    classes = cfg["dataset"]["classes"]
    ids, names = (list(classes), {}) if isinstance(classes, list) else read_class_list(workdir / classes)
    names.update(cfg["dataset"].get("class_names", {}))
    return {cid: names.get(cid, cid) for cid in ids}


def hostile_ids_config() -> dict:
    """The tiny demo drawn with class ids (folder names) and readable names that carry payloads."""
    cfg = tiny_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    cfg["synthetic"]["classes"] = cfg["dataset"]["classes"] = list(IDS)
    cfg["dataset"]["class_names"] = dict(zip(IDS, NAMES, strict=True))
    return cfg


@pytest.fixture(
    scope="module",
    params=["names", pytest.param("ids", marks=pytest.mark.slow)],
)
def hostile(tmp_path_factory, request):
    """(run directory, class id -> shown name) of a finished run with payload names and its report."""
    workdir = tmp_path_factory.mktemp(f"hostile_{request.param}")
    reuse = os.environ.get("RSVC_SECURITY_RUN")
    if reuse:
        shutil.copytree(reuse, workdir, symlinks=True, dirs_exist_ok=True)
        cfg = yaml.safe_load((workdir / "tiny.yaml").read_text())
    elif request.param == "names":
        tiny = os.environ.get("RSVC_TINY_RUN")  # as in test_report.py: a completed tiny run to copy
        source = Path(tiny) if tiny else request.getfixturevalue("tiny_run")[0]
        shutil.copytree(
            source, workdir, symlinks=True, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".venv", ".git")
        )
        cfg = yaml.safe_load((workdir / "tiny.yaml").read_text())
        cfg["dataset"].pop("class_names", None)
        ids = list(cfg["dataset"]["classes"])
        (workdir / "classes.txt").write_text("".join(f"{c}\t{n}\n" for c, n in zip(ids, NAMES, strict=True)))
        cfg["dataset"]["classes"] = "classes.txt"  # the same ids: only the jobs that show names rerun
        write_config(workdir / "tiny.yaml", cfg)
    else:
        cfg = hostile_ids_config()
        write_config(workdir / "tiny.yaml", cfg)
    config = str(workdir / "tiny.yaml")
    run_snakemake("--cores", "2", "--configfile", config, cwd=workdir, timeout=1800)
    run_snakemake("--configfile", config, "--report", "results/report.html", cwd=workdir, timeout=300)
    names = names_of(workdir, cfg)
    assert any("<" in n for n in names.values()), "the run must carry payload names"
    return workdir, names


def params_text(text: str) -> str:
    """How the report shows a string inside a job's params (Python repr, '"' escaped by Snakemake)."""
    return repr(text)[1:-1].replace('"', '\\"')


INJECTED = "document.querySelectorAll('img[src=\"x\"], svg[onload], img[onerror]').length"


def assert_nothing_ran(browser) -> None:
    assert browser.js(f"typeof {FLAG}") == "undefined", f"a payload ran: {FLAG} = {browser.js(FLAG)}"
    assert browser.js(INJECTED) == 0, "a name became markup"


def test_the_report_shows_every_name_as_text_and_runs_no_payload(hostile, browser):
    workdir, names = hostile
    page = (workdir / "results" / "report.html").read_text()
    for name in {*names, *names.values()}:
        if "<" in name:
            assert name not in page, f"{name!r} is in the report's HTML unescaped"
    results = embedded_json(page, "results")  # the escaped JSON decodes to the names themselves
    gallery_params = results[f"results/pairs/{PAIR}/galleries/lowest_cmcs_class0_a_to_b.png"]["job_properties"]
    for cid, name in names.items():
        assert params_text(cid) in gallery_params["params"] and params_text(name) in gallery_params["params"]

    browser.call("Page.navigate", session=True, url=(workdir / "results" / "report.html").as_uri())
    browser.wait_for("typeof app !== 'undefined' && document.body.innerText.includes('Galleries')")
    assert_nothing_ran(browser)
    text = "document.body.innerText"
    class0 = names[next(iter(names))]
    browser.js("app.showCategory('Galleries')")
    browser.wait_for(f"{text}.includes({json.dumps('lowest CMCS, class ' + class0)})")  # the label, as text
    for path in results:  # every result's panel: labels, caption and the job's params (with the names)
        browser.js(f"app.showResultInfo({json.dumps(path)})")
        browser.wait_for(f"{text}.toLowerCase().includes('job parameters')")  # headings are upper case
        if "/galleries/" in path:
            shown = browser.js(text)
            for cid, name in names.items():
                assert params_text(cid) in shown and params_text(name) in shown, (path, name)
        assert_nothing_ran(browser)
    assert browser.errors() == []


def test_the_explorer_shows_every_name_as_text_and_runs_no_payload(hostile, browser):
    workdir, names = hostile
    site = workdir / "results" / "explorer" / PAIR
    browser.call("Page.navigate", session=True, url=(site / "index.html").as_uri())
    browser.wait_for("window.RSVC_READY !== undefined && document.readyState === 'complete'")
    rows = browser.js(
        "[...document.querySelectorAll('tr[data-id]')].map(tr => [tr.dataset.id,"
        " (tr.querySelector('td.name a') || tr.querySelector('td')).textContent])"
    )
    assert {cid for cid, _ in rows} == set(names)  # ids survive as attribute values
    for cid, shown in rows:
        assert shown == names[cid] or shown.startswith(names[cid]), (cid, shown)
    assert_nothing_ran(browser)
    for cid, name in names.items():  # each class page, addressed by its id
        browser.js(f"location.hash = '#' + encodeURIComponent({json.dumps(cid)})")
        browser.wait_for(  # the title: the name, then the id in <small>
            "(() => { const h = document.getElementById('class-title'); const s = h && h.querySelector('small');"
            f" return !!s && s.textContent === {json.dumps(cid)}"
            f" && h.textContent === {json.dumps(name + ' ' + cid)}; }})()"
        )
        assert_nothing_ran(browser)
    # the report's pointer to the explorer
    browser.call("Page.navigate", session=True, url=(workdir / "results" / "explorer" / f"{PAIR}.html").as_uri())
    browser.wait_for(f"document.body.innerText.includes({json.dumps(PAIR + '/index.html')})")
    assert_nothing_ran(browser)
    assert browser.errors() == []
