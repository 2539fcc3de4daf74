"""The reliability run end to end: bad images skipped and listed, class guards, NaN counts, the
parameters in every HDF5 output, the head of a random-init model, aggregation with every class skipped."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import class_file, run_paths, run_snakemake, write_config
from reliability_runs import (
    BAD_FOLDERS,
    EMPTY_CLASS,
)

from rsvc.formats import (
    is_skipped,
    read_attrs,
    read_class_activations,
    read_compare_status,
    read_head,
    read_image_sets,
    read_layerwise,
)
from rsvc.models import create_model
from rsvc.specs import ModelSpec


@pytest.mark.workflow
@pytest.mark.slow
def test_bad_images_are_skipped_and_recorded_odd_formats_used(reference):
    workdir, cfg, files = reference
    out = workdir / "results"
    paths = run_paths(workdir, cfg)
    preds = pd.concat(
        [
            pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)
            for p in sorted((out / "predictions").rglob("*.tsv"))
        ]
    )
    by_path = {}
    for r in preds.itertuples():
        by_path.setdefault(Path(workdir, r.path).resolve(), set()).add((r.status, r.pred_class != ""))
    for f in files["bad"]:
        got = by_path.get(f.path.resolve())
        assert got == ({("ok", True)} if f.readable else {("skipped", False)}), (f.kind, got)
    listed = set(by_path)
    assert not listed & {p.resolve() for p in files["ignored"]}
    # every image of an image set reaches the activation files (odd formats included)
    in_acts = set()
    for path in (out / "activations").rglob("*.h5"):
        model, owner, split = path.relative_to(out / "activations").parts[:3]
        # the sampled images of each set are extracted (the table lists the whole predicted set)
        sets = read_image_sets(paths("image_sets", model=owner.removeprefix("on_"), split=split))
        for cid, rows in sets.items():
            stored = list(read_class_activations(path, cid)[1])
            assert stored == [image_id for image_id, _ in rows], (path, cid)
            in_acts |= set(stored)
    # Which odd-format images are drawn into an image set depends on what the trained models predict
    # (it differs between processors), so it is not asserted here; that each readable odd format is
    # decoded and classified is (above: status ok with a prediction), and that whatever is drawn
    # reaches the activation files is (the loop above covers every drawn image).
    # the skipped table lists exactly the unreadable files, each with a reason
    skipped = pd.read_csv(paths("skipped_images"), sep="\t", dtype=str, keep_default_na=False)
    assert sorted(Path(workdir, p).resolve() for p in skipped["path"]) == sorted(
        f.path.resolve() for f in files["bad"] if not f.readable
    )
    assert (skipped["reason"].str.len() > 0).all() and set(skipped["stage"]) == {"predict"}
    # a warning in the log of every prediction job that met them
    for folder in BAD_FOLDERS:
        split = folder.split("/")[0]
        for model in cfg["models"]:
            log = (out / f"logs/predict/{model}/{split}/shard0000.log").read_text()
            for f in files["bad"]:
                if not f.readable and folder in str(f.path):
                    assert "WARNING" in log and f.path.name in log, (model, f.path.name)
    summary = pd.read_csv(paths("run_summary"), sep="\t", dtype=str, keep_default_na=False)
    n_bad = sum(not f.readable for f in files["bad"])
    assert f"{n_bad} unreadable images" in summary.loc[summary["stage"] == "images", "reason"].item()


@pytest.mark.workflow
@pytest.mark.slow
def test_class_guards_skip_and_report(reference):
    """A model predicting fewer than min_images_per_model pool images of a class has no concepts of
    it (and the pair skips it); a pair compares a class when the union of both models' pool sets has
    min_images images (the paper's rule), naming a model whose own set is smaller; too few held-out
    images leave the class compared with a note. Every reason is in the run summary; empty class
    folders are listed; aggregation says how many classes it used. Oracle: counts recomputed from the
    prediction tables and image sets."""
    workdir, cfg, _ = reference
    out = workdir / "results"
    paths = run_paths(workdir, cfg)
    min_images = cfg["concepts"]["min_images"]
    per_model = cfg["concepts"].get("min_images_per_model", 1)
    min_held = cfg["concepts"].get("min_heldout_images", 10)
    analyze = cfg["dataset"]["analyze_classes"]
    pool, held = cfg["dataset"]["pool_split"], cfg["dataset"]["heldout_split"]
    models = list(cfg["models"])
    summary = pd.read_csv(paths("run_summary"), sep="\t", dtype=str, keep_default_na=False)

    def predicted(model, split):
        df = pd.read_csv(
            paths("predictions", model=model, split=split, shard="0000"), sep="\t", dtype=str, keep_default_na=False
        )
        return df[df["status"] == "ok"]["pred_class"].value_counts()

    skip_model = {}
    for m in models:
        counts = predicted(m, pool)
        for c in analyze:
            n = int(counts.get(c, 0))
            skip_model[(m, c)] = n < per_model
            rows = summary[(summary["stage"] == "image_set") & (summary["what"] == m) & (summary["class_id"] == c)]
            if skip_model[(m, c)]:
                expected = f"predicted for {n} < concepts.min_images_per_model={per_model} images"
                if n == 0:  # told apart from a class without images of its own
                    expected = f"nothing predicted: no image is predicted as this class ({expected})"
                assert rows["reason"].tolist() == [expected], (m, c)
                skipped, reason = is_skipped(paths("concepts", model=m, class_id=c))
                assert skipped and str(n) in reason
            else:
                assert rows.empty
    assert skip_model[(models[0], EMPTY_CLASS)] and skip_model[(models[1], EMPTY_CLASS)], (
        "the empty class must be skipped"
    )

    pair = f"{models[0]}-vs-{models[1]}"
    used = []
    sets = {
        (m, split): pd.read_csv(paths("image_sets", model=m, split=split), sep="\t", dtype=str, keep_default_na=False)
        for m in models
        for split in (pool, held)
    }

    def union(c, split):
        return set().union(*[set(sets[(m, split)].loc[sets[(m, split)]["class_id"] == c, "image_id"]) for m in models])

    n_partial = 0
    for c in analyze:
        expect_skip = skip_model[(models[0], c)] or skip_model[(models[1], c)] or len(union(c, pool)) < min_images
        own = {m: (sets[(m, pool)]["class_id"] == c).sum() for m in models}
        expect_note = not expect_skip and (min(own.values()) < min_images or len(union(c, held)) < min_held)
        status = read_compare_status(class_file(out, "compare", pair, c))
        assert status.skipped == expect_skip and bool(status.note) == expect_note, c
        rows = summary[(summary["stage"] == "compare") & (summary["class_id"] == c)]
        assert len(rows) == int(expect_skip or expect_note) and (rows["reason"].str.len() > 0).all()
        if expect_note:
            n_partial += 1
            assert rows["status"].tolist() == ["partial"]
            for m in models:
                assert (f"{m}'s own concept set is small: {own[m]} images" in status.note) == (own[m] < min_images)
        if not expect_skip:
            used.append(c)
    assert used, "the test config must leave at least one class analysed"
    # empty class folders are listed per split
    empty = summary[summary["stage"] == "dataset"]
    assert sorted(zip(empty["split"], empty["class_id"])) == sorted([(held, EMPTY_CLASS), (pool, EMPTY_CLASS)])
    # aggregation: the classes that exist, and how many
    table = pd.read_csv(paths("pair_table", pair=pair), dtype={"class_id": str})
    assert sorted(table["class_id"].unique()) == sorted(used)
    pairs = pd.read_csv(paths("pairs_summary"))
    assert (pairs["n_classes"] == len(used)).all() and len(pairs) == 2
    assert summary.loc[summary["stage"] == "pair", "reason"].tolist() == [
        f"{len(used)} of {len(analyze)} classes analysed"
    ]
    assert read_attrs(paths("pair_layerwise", pair=pair))["n_classes_analysed"] == len(used)
    assert read_layerwise(paths("pair_layerwise", pair=pair), "pearson")[1].max() <= len(used)
    assert f"from {len(used)} of {len(analyze)} classes" in (out / f"logs/aggregate_pair/{pair}.log").read_text()


@pytest.mark.workflow
@pytest.mark.slow
def test_nan_counts_and_means_in_pair_summary(reference):
    """pairs.csv: nan_<metric> counts the NaN of concepts.csv, mean_<metric> ignores them (pandas oracle)."""
    workdir, cfg, _ = reference
    out = workdir / "results"
    paths = run_paths(workdir, cfg)
    table = pd.concat([pd.read_csv(p, dtype={"class_id": str}) for p in sorted((out / "pairs").glob("*/concepts.csv"))])
    pairs = pd.read_csv(paths("pairs_summary"))
    nan_cols = [c for c in pairs.columns if c.startswith("nan_")]
    assert len(nan_cols) >= 5
    for r in pairs.itertuples():
        g = table[(table["pair"] == r.pair) & (table["direction"] == r.direction)]
        assert r.n_concepts == len(g)
        for col in nan_cols:
            metric = col.removeprefix("nan_")
            assert getattr(r, col) == g[metric].isna().sum(), col
            mean = getattr(r, f"mean_{metric}")
            assert (np.isnan(mean) and g[metric].isna().all()) or mean == pytest.approx(np.nanmean(g[metric]))


@pytest.mark.workflow
@pytest.mark.slow
def test_every_hdf5_output_carries_its_parameters(reference):
    workdir, cfg, _ = reference
    out = workdir / "results"
    files = sorted(out.rglob("*.h5"))
    kinds = {p.relative_to(out).parts[0] for p in files}
    assert kinds == {"activations", "concepts", "importance", "compare", "heads", "pairs"}
    for path in files:
        assert len(read_attrs(path)) > 0, path
    concepts = read_attrs(next((out / "concepts").rglob("*.h5")))
    assert concepts["k"] == cfg["concepts"]["k"] and concepts["seed"] == cfg["seed"]
    acts = read_attrs(next((out / "activations").rglob("*.h5")))
    assert acts["image_size"] == cfg["dataset"]["image_size"]
    assert acts["patch_size"] == cfg["dataset"]["patch_size"]
    assert not list(out.rglob("*.tmp")), "an uninterrupted run leaves no temporary files"


@pytest.mark.workflow
@pytest.mark.slow
def test_exported_head_of_a_random_init_model_is_the_predicting_model(reference, tmp_path):
    """A model without checkpoint (random init): the head exported for the CPU jobs must be the
    classifier of the very network that predict and activations build (both seed 0 first)."""
    from rsvc.models import head_parameters
    from rsvc.runtime import seed_everything

    ref_dir, cfg, _ = reference
    cfg = copy.deepcopy(cfg)
    rnd = copy.deepcopy(cfg["models"]["nc"])
    rnd.pop("train")
    rnd["checkpoint"] = None
    cfg["models"]["rnd"] = rnd
    (tmp_path / "data").symlink_to(ref_dir / "data", target_is_directory=True)
    write_config(tmp_path / "tiny.yaml", cfg)
    run_snakemake(
        "results/heads/rnd.h5", "--cores", "1", "--configfile", str(tmp_path / "tiny.yaml"), cwd=tmp_path, timeout=600
    )
    weight, bias = read_head(tmp_path / "results/heads/rnd.h5")  # float64 of the stored values
    seed_everything(0)  # what workflow_scripts/predict.py and activations.py do before create_model
    keys = ("timm_name", "num_classes", "model_kwargs", "pretrained_cfg_overlay")
    model = create_model(ModelSpec(name="rnd", **{k: rnd[k] for k in keys}))
    w_ref, b_ref = head_parameters(model)
    np.testing.assert_array_equal(weight, w_ref)
    np.testing.assert_array_equal(bias, b_ref)


@pytest.mark.workflow
@pytest.mark.slow
def test_aggregation_with_every_class_skipped(reference, tmp_path):
    """Only the empty class analysed: aggregation, galleries, summary and the planted-concept check
    finish, say that no class was analysed, and write empty tables with their headers."""
    ref_dir, cfg, _ = reference
    workdir = tmp_path / "run"
    shutil.copytree(ref_dir, workdir, symlinks=True)
    cfg = copy.deepcopy(cfg)
    cfg["dataset"]["analyze_classes"] = [EMPTY_CLASS]
    write_config(workdir / "tiny.yaml", cfg)
    run_snakemake(
        "--cores",
        "2",
        "--configfile",
        str(workdir / "tiny.yaml"),
        "--rerun-triggers",
        "mtime",
        "--forcerun",
        "aggregate_pair",
        "gallery",
        "summary",
        "planted_concept",
        cwd=workdir,
        timeout=900,
    )
    out = workdir / "results"
    paths = run_paths(workdir, cfg)
    pair = "ps-vs-nc"
    assert pd.read_csv(paths("pair_table", pair=pair)).empty
    assert pd.read_csv(paths("pairs_summary")).empty
    assert pd.read_csv(paths("planted")).empty
    summary = pd.read_csv(paths("run_summary"), sep="\t", dtype=str, keep_default_na=False)
    row = summary[summary["stage"] == "pair"]
    assert row["status"].tolist() == ["empty"] and row["reason"].tolist() == ["0 of 1 classes analysed"]
    assert read_attrs(paths("pair_layerwise", pair=pair))["n_classes_analysed"] == 0
    for png in ["layerwise_mmcs_pearson.png", "galleries/lowest_cmcs_class0_b_to_a.png"]:
        assert (out / f"pairs/{pair}" / png).stat().st_size > 1000
