"""The workflow end to end on a tiny version of the demo (real images, real timm models,
real HDF5), checked against independent recomputation from the stored arrays."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import class_file, dry_run_jobs, run_paths
from scipy import stats

from rsvc.formats import is_skipped, read_concept_views, read_layerwise, read_mmcs, read_prediction

pytestmark = pytest.mark.workflow


def test_outputs_and_table_shape(tiny_run):
    workdir, cfg = tiny_run
    out = workdir / "results"
    paths = run_paths(workdir, cfg)
    table = pd.read_csv(paths("pair_table", pair="ps-vs-nc"), dtype={"class_id": str})
    k = cfg["concepts"]["k"]
    n_classes = table["class_id"].nunique()
    compared = set()
    for cid in cfg["dataset"]["classes"]:
        if not is_skipped(class_file(out, "compare", "ps-vs-nc", cid))[0]:
            compared.add(cid)
    assert set(table["class_id"]) == compared
    # the tiny models are trained enough to compare several classes (each predicts >= 21 pool
    # images of every class, against min_images = 5, on the processors tried)
    assert n_classes >= 2
    assert len(table) == n_classes * k * 2
    assert set(table["direction"]) == {"nc->ps", "ps->nc"}
    for png in [
        "layerwise_mmcs_pearson.png",
        "cmcs_importance_b_to_a.png",
        "replacement_a_to_b.png",
        "galleries/lowest_cmcs_class0_b_to_a.png",
    ]:
        assert (out / "pairs/ps-vs-nc" / png).stat().st_size > 1000
    assert Path(paths("planted")).exists()
    # no temporary files left behind by the atomic writers
    assert not list(out.rglob("*.tmp"))


def test_table_matches_recomputation_from_stored_arrays(tiny_run):
    """CMCS/SMCS in the table are Pearson/Spearman of stored predictions vs stored held-out U."""
    workdir, cfg = tiny_run
    out = workdir / "results"
    paths = run_paths(workdir, cfg)
    table = pd.read_csv(paths("pair_table", pair="ps-vs-nc"), dtype={"class_id": str})
    checked = 0
    for cid, rows in table.groupby("class_id"):
        path = class_file(out, "compare", "ps-vs-nc", cid)
        for r in rows.itertuples():
            cross = read_concept_views(path, r.source, r.target, r.concept)
            real, pred = cross["real"], cross["pred"]
            same = read_prediction(path, r.target, r.target)[:, r.concept]
            if np.ptp(real) == 0 or np.ptp(pred) == 0:
                assert np.isnan(r.cmcs_pearson)
                continue
            assert r.cmcs_pearson == pytest.approx(stats.pearsonr(pred, real)[0], abs=1e-9)
            assert r.cmcs_spearman == pytest.approx(stats.spearmanr(pred, real)[0], abs=1e-9)
            if np.ptp(same) > 0:
                assert r.smcs_pearson == pytest.approx(stats.pearsonr(same, real)[0], abs=1e-9)
            checked += 1
    assert checked > 0


def test_layerwise_matrix_is_mean_of_class_matrices(tiny_run):
    workdir, cfg = tiny_run
    out = workdir / "results"
    paths = run_paths(workdir, cfg)
    mats = []
    for path in sorted((out / "compare/ps-vs-nc").glob("shard*/*.h5")):
        found = read_mmcs(path, "pearson")
        if found is not None:
            mats.append(found[0])
    assert len(mats) > 1  # a mean over several classes, not one class copied
    mean = read_layerwise(paths("pair_layerwise", pair="ps-vs-nc"), "pearson")[0]
    np.testing.assert_allclose(mean, np.nanmean(np.stack(mats), axis=0), atol=1e-12)


def test_rerun_does_nothing(tiny_run):
    workdir, cfg = tiny_run
    assert dry_run_jobs(workdir, cfg) == []


def test_adding_a_model_only_schedules_its_work(tiny_run, tmp_path):
    """Model C added later: only jobs that involve C, plus aggregation and report."""
    workdir, cfg = tiny_run
    clone = tmp_path / "run"
    shutil.copytree(workdir, clone, symlinks=True)
    cfg = copy.deepcopy(cfg)
    c = copy.deepcopy(cfg["models"]["nc"])
    c.pop("train")
    c["checkpoint"] = None  # a random-init timm model: no training needed
    cfg["models"]["cc"] = c
    jobs = dry_run_jobs(clone, cfg)
    assert jobs, "adding a model must schedule work"
    aggregate_rules = {"summary", "all"}
    for rule, wc in jobs:
        if rule in aggregate_rules:
            continue
        assert "cc" in wc, f"{rule} ({wc}) does not involve the new model"
    # the new pairs and the new model's own work are all there
    rules = {r for r, _ in jobs}
    assert {"predict", "activations", "concepts", "compare", "aggregate_pair"} <= rules
    acts = [wc for r, wc in jobs if r == "activations"]
    assert any("model=ps" in wc and "owner=cc" in wc for wc in acts)
    assert any("model=cc" in wc and "owner=ps" in wc for wc in acts)
    assert not any(r == "compare" and "ps-vs-nc" in wc for r, wc in jobs)
