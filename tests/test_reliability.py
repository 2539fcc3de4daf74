"""Reliability (issue 5): bad images, class guards, numeric guards, atomic outputs,
no pickle, determinism and interruption.

Fast unit tests come first. The workflow tests share two runs of the tiny demo
(``tests/conftest.py``'s ``tiny_config``) on an analysis dataset that the
test draws itself (the demo's ``eval`` scheme) and seeds with every kind of odd
and broken file (``tests/bad_images.py``), plus a fourth class ``star`` whose
folders are empty and on which the models are never trained:

- the *reference* run goes through uninterrupted;
- the *interrupted* run starts from scratch in another folder, is killed with
  SIGKILL (the whole process group) during training, while an activation file
  is being written and during compare, and each time resumed with
  ``--unlock`` / ``--rerun-incomplete``.

Every output of the two runs must be identical (determinism and clean resume
at once). Both runs use ``--cores 2`` and two threads in the GPU rules.
"""

from __future__ import annotations

import ast
import copy
import io
import json
import os
import shutil
import signal
import subprocess
import time
import tokenize
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from bad_images import write_bad_images, write_ignored_files
from conftest import REPO, SNAKEMAKE, run_snakemake, tiny_config, write_config

from rsvc.activations import ExtractionSettings, extract_to_h5, predict_images, readable_mask
from rsvc.compare import RowSet, compare_class
from rsvc.images import ImageLoadError, list_image_files, load_rgb
from rsvc.io import write_h5
from rsvc.models import ModelSpec, create_model
from rsvc.tables import concept_rows, layerwise_mean

EMPTY_CLASS = "star"  # a class of the models' label space with empty folders and no training images
BAD_FOLDERS = ("train/ring", "val/cross")  # where the odd and broken files go


# ====================================================================== unit tests
def test_bad_image_helper_matches_the_loader(tmp_path):
    """The helper's readable/unreadable split (used by the workflow tests) is what load_rgb does."""
    files = write_bad_images(tmp_path)
    ignored = write_ignored_files(tmp_path)
    for f in files:
        if f.readable:
            got = np.asarray(load_rgb(f.path)).astype(int)
            assert got.shape == f.expected.shape, f.kind
            assert np.abs(got - f.expected).mean() <= f.tol, f.kind
        else:
            with pytest.raises(ImageLoadError, match=f.path.name):
                load_rgb(f.path)
    listed = set(list_image_files(tmp_path))
    assert listed == {f.path for f in files}
    assert not listed & set(ignored)


def _small_resnet(num_classes=3, seed=0):
    torch.manual_seed(seed)
    spec = ModelSpec("m", "resnet18", num_classes=num_classes,
                     model_kwargs={"channels": (8, 16, 32, 64), "stem_width": 8},
                     pretrained_cfg_overlay={"input_size": (3, 32, 32)})
    return create_model(spec)


def test_predict_images_skips_unreadable_and_keeps_rows_aligned(tmp_path):
    """Mixed good/bad batch: the skipped list is exactly the broken files, and every kept
    prediction equals the prediction of that image on its own (oracle for alignment)."""
    files = write_bad_images(tmp_path)
    paths = [str(f.path) for f in files]
    settings = ExtractionSettings(image_size=32, patch_size=16, batch_size=4, num_workers=0, device="cpu")
    model = _small_resnet()
    pred, prob, skipped = predict_images(model, paths, settings)
    assert [p for p, _ in skipped] == [str(f.path) for f in files if not f.readable]
    assert all(Path(p).name in reason for p, reason in skipped)
    mask = readable_mask(paths, skipped)
    assert mask.tolist() == [f.readable for f in files]
    for i, path in enumerate(np.asarray(paths)[mask]):
        p1, q1, s1 = predict_images(model, [path], settings)
        assert not s1 and p1[0] == pred[i]
        assert q1[0] == pytest.approx(prob[i], abs=1e-5)


@pytest.mark.parametrize(
    "layer, image, scale, dtype, what",
    [("layer2", 3, float("nan"), "float32", "nan"), ("layer3", 1, float("inf"), "float32", "inf"),
     ("layer4", 2, 1e6, "float16", "float16 overflow")],
)
def test_nonfinite_activations_name_model_layer_class_and_image(tmp_path, layer, image, scale, dtype, what):
    """A layer output made non-finite for one image (NaN, Inf, or finite but beyond float16 storage)
    stops the extraction with an error naming model, layer, class and image; nothing is written."""
    from PIL import Image

    rng = np.random.default_rng(0)
    items = {}
    for c, cid in enumerate(("cls_a", "cls_b")):
        items[cid] = []
        for i in range(3):
            path = tmp_path / f"{cid}_{i}.png"
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
            items[cid].append((f"{cid}/img{i}", str(path)))
    flat = [iid for lst in items.values() for iid, _ in lst]
    model = _small_resnet()
    settings = ExtractionSettings(image_size=32, patch_size=16, batch_size=8, num_workers=0, device="cpu",
                                  storage_dtype=dtype)
    n_grid = 4  # a 32 px canonical image cut in 16 px patches (stride 12): a 2 x 2 grid
    seen = {"rows": 0}

    def poison(module, inputs, output):  # rows arrive in image order, n_grid rows per image
        if output.shape[0] == 1:  # the one-row probe that finds the layer widths
            return output
        rows = torch.arange(seen["rows"], seen["rows"] + output.shape[0]) // n_grid
        seen["rows"] += output.shape[0]
        hit = (rows == image).view(-1, 1, 1, 1)
        return torch.where(hit, output * scale if np.isfinite(scale) else torch.full_like(output, scale), output)

    handle = dict(model.named_modules())[layer].register_forward_hook(poison)
    out = tmp_path / "acts" / "shard.h5"
    try:
        with pytest.raises(FloatingPointError) as err:
            extract_to_h5(model, ["layer1", "layer2", "layer3", "layer4", "pre_logits"], items, out, settings,
                          attrs={"model": "poisoned_net"})
    finally:
        handle.remove()
    msg = str(err.value)
    cid, iid = flat[image].split("/")[0], flat[image]
    assert "poisoned_net" in msg and f"layer {layer}," in msg, msg
    assert f"class {cid}" in msg and f"image {iid} " in msg, msg
    if dtype == "float16":
        assert "float16" in msg
    assert not out.parent.exists() or not list(out.parent.iterdir()), "a failed extraction left files behind"


def _rows(n_img, P):
    return RowSet(np.array([f"img{i:02d}" for i in range(n_img)], dtype=object),
                  np.repeat(np.arange(n_img), P), np.tile(np.arange(P), n_img))


def test_degenerate_layers_and_concepts_give_nan_that_aggregation_ignores_and_counts(tmp_path):
    """An all-zero layer (dead on the shared patches: every coefficient column constant) and a
    model whose held-out activations are all zero (constant targets: folds and held-out rows
    without variance) give NaN similarities, with no crash and no warning; the layerwise mean
    over classes skips them and counts the classes that have a value (numpy nanmean oracle);
    the tidy table keeps them as NaN."""
    rng = np.random.default_rng(0)
    n_img, P, d = 12, 4, 10
    rows, held_rows = _rows(n_img, P), _rows(6, P)
    n = n_img * P
    W = {m: {"l0": rng.random((3, d)), "pre_logits": rng.random((3, d))} for m in "ab"}
    classes = {}
    for cid, zero in (("c_zero", True), ("c_fine", False)):
        pool = {m: {"l0": rng.random((n, d)), "pre_logits": rng.random((n, d))} for m in "ab"}
        if zero:
            pool["a"]["l0"][:] = 0.0
        held = {"a": rng.random((6 * P, d)), "b": np.zeros((6 * P, d))}  # b is dead on the held-out images
        heads = {m: (rng.normal(size=(4, d)), rng.normal(size=4)) for m in "ab"}
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # NaN must be produced on purpose, not by 0/0
            out = compare_class(("a", "b"), pool, rows, held, held_rows, W, heads, folds=3)
        classes[cid] = out
        for m in "ab":
            out[f"rel_error/{m}"] = np.zeros(2)
        for method in ("pearson", "spearman"):
            mm = out[f"mmcs/{method}"]
            assert np.isnan(mm[0]).all() == zero and np.isfinite(mm[1]).all()
            assert np.isfinite(out[f"mcs/b->a/{method}"]).all()
            # b's concepts are constant on the held-out rows, and b's predictions of a's concepts too
            for way in ("a->b", "b->b", "b->a"):
                assert np.isnan(out[f"regression/{way}/{method}"]).all(), way
            assert np.isfinite(out[f"regression/a->a/{method}"]).all()
        np.testing.assert_array_equal(out["heldout/U/b"], 0.0)
        assert np.isfinite(out["regression/a->b/cv_pearson"]).all()  # the pool rows of b do vary

    files = []
    for cid, out in classes.items():
        path = tmp_path / f"{cid}.h5"
        write_h5(path, out, attrs={"pair": "a-vs-b", "models": ["a", "b"], "class_id": cid, "skipped": False})
        files.append(path)
    write_h5(tmp_path / "c_skipped.h5", {}, attrs={"pair": "a-vs-b", "class_id": "c_skipped", "skipped": True})
    files.append(tmp_path / "c_skipped.h5")
    for method in ("pearson", "spearman"):
        mean, count, la, lb = layerwise_mean(files, method)
        stack = np.stack([classes[c][f"mmcs/{method}"] for c in classes])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            np.testing.assert_allclose(mean, np.nanmean(stack, axis=0), atol=1e-12)
        np.testing.assert_array_equal(count, np.isfinite(stack).sum(axis=0))
        assert count.tolist() == [[1, 1], [2, 2]] and (la, lb) == (["l0", "pre_logits"],) * 2

    imp = {}
    for m in "ab":
        imp[m] = tmp_path / f"imp_{m}.h5"
        write_h5(imp[m], {"importance": np.arange(3.0)}, attrs={"skipped": False})
    table = concept_rows(files[0], imp, "a-vs-b", "zero")
    assert table["cmcs_pearson"].isna().all() and table["smcs_pearson"].isna().sum() == 3  # b->b only
    assert concept_rows(tmp_path / "c_skipped.h5", imp, "a-vs-b", "skipped").empty


def test_folds_without_variance_are_ignored_in_the_cross_validated_score():
    """A concept constant on one fold's left-out images gets NaN for that fold only, and the
    cross-validated score is the mean over the other folds; a concept constant everywhere is NaN.
    Oracle: each fold's predictions rebuilt from its stored coefficients and the fold's own
    training statistics, scored with scipy.stats.pearsonr."""
    from scipy.stats import pearsonr

    from rsvc.regression import cross_fitted_lasso, group_folds

    rng = np.random.default_rng(0)
    n_img, P, d = 10, 4, 6
    groups = np.repeat(np.arange(n_img), P)
    X = rng.normal(size=(n_img * P, d))
    Y = np.abs(X @ rng.normal(size=(d, 3)) + 0.3 * rng.normal(size=(n_img * P, 3)))
    folds = group_folds(groups, n_folds=5, seed=0)
    Y[folds[0][1], 0] = 1.0  # concept 0: no variance on the images left out by fold 0
    Y[:, 2] = 0.5  # concept 2: constant everywhere
    X_test, Y_test = X[:12] + 0.1, Y[:12]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = cross_fitted_lasso(X, Y, groups, X_test, Y_test, alpha=0.05, n_folds=5, seed=0, tol=1e-8)
    cv = np.full((5, 3), np.nan)
    for f, (tr, va) in enumerate(folds):
        mx, sx = X[tr].mean(0), X[tr].std(0)
        my, sy = Y[tr].mean(0), Y[tr].std(0)
        sx, sy = np.where(sx > 0, sx, 1.0), np.where(sy > 0, sy, 1.0)
        pred = (X[va] - mx) / sx @ res.coef[f].T * sy + my
        for i in range(3):
            if np.ptp(pred[:, i]) > 1e-12 and np.ptp(Y[va, i]) > 0:
                cv[f, i] = pearsonr(pred[:, i], Y[va, i])[0]
    assert np.isnan(cv[0, 0]) and np.isfinite(cv[1:, 0]).all() and np.isnan(cv[:, 2]).all()
    np.testing.assert_allclose(res.cv_pearson[:2], np.nanmean(cv[:, :2], axis=0), atol=1e-9)
    assert np.isnan(res.cv_pearson[2]) and np.isnan(res.pearson[2]) and np.isfinite(res.pearson[:2]).all()


def test_concept_absent_from_every_patch_gives_nan_similarity():
    """b's concept 2 is a unit that never fires and that the other concepts do not use: the exact
    NNLS coefficient is 0 on every patch (scipy.optimize.nnls agrees up to 1e-15), so its MCS and
    CMCS must be NaN, not a correlation of round-off."""
    from scipy.optimize import nnls

    rng = np.random.default_rng(0)
    n_img, P, d = 12, 4, 10
    rows, held_rows = _rows(n_img, P), _rows(6, P)
    A_b = rng.random((n_img * P, d))
    A_b[:, 0] = 0.0
    W_dead = np.vstack([rng.random((2, d)), np.eye(d)[:1]])
    W_dead[:2, 0] = 0.0
    pool = {"a": {"pre_logits": rng.random((n_img * P, d))}, "b": {"pre_logits": A_b}}
    assert max(nnls(W_dead.T, a)[0][2] for a in pool["b"]["pre_logits"]) < 1e-12
    W = {"a": {"pre_logits": rng.random((3, d))}, "b": {"pre_logits": W_dead}}
    held = {m: pool[m]["pre_logits"][: 6 * P] for m in "ab"}
    heads = {m: (rng.normal(size=(4, d)), rng.normal(size=4)) for m in "ab"}
    out = compare_class(("a", "b"), pool, rows, held, held_rows, W, heads, folds=3)
    assert np.isnan(out["mcs/a->b/pearson"][2]) and np.isnan(out["regression/a->b/pearson"][2])


_FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _pickle_uses(path: Path) -> list[str]:
    """Pickle-capable calls in a Python file (strings and comments do not count)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in _FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _FORBIDDEN_MODULES:
            found.append(f"from {node.module} import")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            kw = {k.arg: k.value for k in node.keywords}
            if name in ("read_pickle", "to_pickle"):
                found.append(name)
            if name == "load" and isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "torch":
                wo = kw.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    found.append("torch.load without weights_only=True")
            ap = kw.get("allow_pickle")
            if isinstance(ap, ast.Constant) and ap.value is True:
                found.append(f"{name}(allow_pickle=True)")
            if name == "save" and isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "torch":
                found.append("torch.save (pickle)")
    return [f"{path.relative_to(REPO)}:{x}" for x in found]


def test_no_pickle_in_library_scripts_or_rules():
    """No code path of the workflow can read or write a pickle (checkpoints: tests/test_models.py)."""
    py = sorted((REPO / "rsvc").glob("*.py")) + sorted((REPO / "workflow_scripts").glob("*.py"))
    assert len(py) > 20
    found = [x for p in py for x in _pickle_uses(p)]
    for p in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        text = p.read_text()
        tokens = tokenize.generate_tokens(io.StringIO(text).readline)
        code = " ".join(t.string for t in tokens if t.type == tokenize.NAME)
        found += [f"{p.name}: {m}" for m in _FORBIDDEN_MODULES | {"read_pickle", "to_pickle"} if f" {m} " in f" {code} "]
    assert not found, found


# ====================================================================== workflow runs
def reliability_config() -> dict:
    """The tiny demo with a fourth, empty class and the analysis data outside results/."""
    cfg = tiny_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    trained = list(cfg["synthetic"]["classes"])
    cfg["dataset"]["root"] = "data/eval"
    cfg["dataset"]["classes"] = trained + [EMPTY_CLASS]
    cfg["dataset"]["analyze_classes"] = [trained[0], EMPTY_CLASS]  # class 0 (planted square) and the empty one
    for spec in cfg["models"].values():
        spec["num_classes"] = len(trained) + 1
    return cfg


def prepare_workdir(workdir: Path, cfg: dict) -> dict:
    """Draw the analysis dataset, seed it with bad files, empty the extra class. Returns the files."""
    from rsvc.synthetic import make_dataset

    syn = cfg["synthetic"]
    root = workdir / cfg["dataset"]["root"]
    make_dataset(root, classes=list(syn["classes"]), n_per_split={k: v for k, v in syn["n_per_split"].items()},
                 image_size=syn["image_size"], scheme="eval", seed=syn["seed"])
    for split in ("train", "val", "test"):
        (root / split / EMPTY_CLASS).mkdir()
    bad, ignored = [], []
    for folder in BAD_FOLDERS:
        bad += write_bad_images(root / folder, prefix="odd")
        ignored += write_ignored_files(root / folder)
    write_config(workdir / "tiny.yaml", cfg)
    return {"bad": bad, "ignored": ignored, "root": root}


def snakemake_cmd(workdir: Path, *extra: str) -> list[str]:
    return [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2",
            "--configfile", str(workdir / "tiny.yaml"), *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference")
    cfg = reliability_config()
    files = prepare_workdir(workdir, cfg)
    t0 = time.monotonic()
    run_snakemake("--cores", "2", "--configfile", str(workdir / "tiny.yaml"), cwd=workdir, timeout=1800)
    print(f"reference run: {time.monotonic() - t0:.0f} s")
    return workdir, cfg, files


# -------------------------------------------------------------- interruption
def _processes_in(workdir: Path) -> list[str]:
    """Live (non-zombie) processes whose working directory is ``workdir``."""
    live, target = [], str(Path(workdir).resolve())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.readlink(proc / "cwd") != target:
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z":
                live.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200])
        except OSError:
            continue
    return live


def _new_files(root: Path, pattern: str, since: float) -> list[Path]:
    if not root.exists():
        return []
    found = []
    for p in root.rglob(pattern):
        try:
            if p.stat().st_mtime >= since:
                found.append(p)
        except FileNotFoundError:  # a temporary file renamed meanwhile
            continue
    return found


# (name, folder under results, file pattern, seconds to wait after it appears)
KILL_POINTS = [
    ("training", "logs/train_model", "*.log", 3.0),
    ("activations being written", "activations", ".shard*.h5.*.tmp", 0.0),
    ("compare", "logs/compare", "*.log", 3.0),
]


def _kill_during(workdir: Path, folder: str, pattern: str, delay: float, timeout: float = 1500) -> None:
    """Run the workflow (resuming) until a file matching ``pattern`` appears, then SIGKILL the group."""
    out = workdir / "results"
    log = open(workdir / "interrupted.log", "a")  # noqa: SIM115 - closed below
    start = time.time()
    proc = subprocess.Popen(snakemake_cmd(workdir, "--rerun-incomplete"), cwd=workdir, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while not _new_files(out / folder, pattern, start - 1):
            if proc.poll() is not None:
                raise AssertionError(f"the workflow ended (rc {proc.returncode}) before the kill point {folder}/{pattern}")
            if time.time() - start > timeout:
                raise AssertionError(f"kill point {folder}/{pattern} not reached in {timeout} s")
            time.sleep(0.1)
        time.sleep(delay)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        log.close()
    deadline = time.time() + 30
    while _processes_in(workdir) and time.time() < deadline:
        time.sleep(0.2)
    assert not _processes_in(workdir), f"processes survived the kill: {_processes_in(workdir)}"


def _assert_outputs_intact(out: Path) -> None:
    """Every HDF5 file under its final name opens and every dataset reads in full."""
    for path in out.rglob("*.h5"):
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)


def run_interrupted(workdir: Path) -> dict[str, list[str]]:
    """From scratch, killed at every kill point and resumed; returns the temporary files seen at each kill."""
    cfg = reliability_config()
    prepare_workdir(workdir, cfg)
    t0 = time.monotonic()
    stale = {}
    for name, folder, pattern, delay in KILL_POINTS:
        _kill_during(workdir, folder, pattern, delay)
        _assert_outputs_intact(workdir / "results")
        stale[name] = sorted(str(p.relative_to(workdir)) for p in (workdir / "results").rglob("*.tmp"))
        subprocess.run(snakemake_cmd(workdir, "--unlock"), cwd=workdir, check=True, capture_output=True,
                       timeout=600)
    run_snakemake("--cores", "2", "--configfile", str(workdir / "tiny.yaml"), "--rerun-incomplete",
                  cwd=workdir, timeout=1800)
    print(f"interrupted run (3 kills, 4 starts): {time.monotonic() - t0:.0f} s; temporary files at the kills: {stale}")
    return stale


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("interrupted")
    return workdir, run_interrupted(workdir)


# -------------------------------------------------------------- comparison of two runs
EXCLUDED = ("logs", "benchmarks")


def _output_files(out: Path) -> dict[str, Path]:
    """Outputs by relative path; logs, benchmarks and hidden temporary files left by killed jobs excluded."""
    files = {}
    for p in out.rglob("*"):
        rel = p.relative_to(out)
        if p.is_dir() or rel.parts[0] in EXCLUDED or any(part.startswith(".") for part in rel.parts):
            continue
        files[rel.as_posix()] = p
    return files


def _attrs(obj) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in obj.attrs.items()}


def _h5_differences(a: Path, b: Path) -> list[str]:
    diffs = []
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        items_a, items_b = {}, {}
        fa.visititems(lambda n, o: items_a.__setitem__(n, o))
        fb.visititems(lambda n, o: items_b.__setitem__(n, o))
        if set(items_a) != set(items_b):
            return [f"objects differ: {sorted(set(items_a) ^ set(items_b))[:5]}"]
        if _attrs(fa) != _attrs(fb):
            diffs.append("root attributes differ")
        for name, oa in items_a.items():
            ob = items_b[name]
            if _attrs(oa) != _attrs(ob):
                diffs.append(f"{name}: attributes differ")
            if isinstance(oa, h5py.Dataset):
                va, vb = oa[()], ob[()]
                if oa.dtype != ob.dtype or np.shape(va) != np.shape(vb):
                    diffs.append(f"{name}: dtype/shape differ")
                elif not np.array_equal(va, vb, equal_nan=oa.dtype.kind == "f"):
                    diffs.append(f"{name}: values differ (max abs diff "
                                 f"{np.nanmax(np.abs(va.astype(float) - vb.astype(float))) if oa.dtype.kind == 'f' else '-'})")
    return diffs


def _without_timing(obj):
    if isinstance(obj, dict):
        return {k: _without_timing(v) for k, v in obj.items() if k != "seconds"}
    return obj


def compare_runs(out_a: Path, out_b: Path) -> tuple[list[str], dict[str, int]]:
    """Differences between two results/ trees, and how many files of each type were compared."""
    fa, fb = _output_files(out_a), _output_files(out_b)
    diffs = [f"only in one run: {sorted(set(fa) ^ set(fb))}"] if set(fa) != set(fb) else []
    counts: dict[str, int] = {}
    for rel in sorted(set(fa) & set(fb)):
        suffix = Path(rel).suffix
        counts[suffix] = counts.get(suffix, 0) + 1
        if suffix == ".h5":
            diffs += [f"{rel}: {d}" for d in _h5_differences(fa[rel], fb[rel])]
        elif suffix == ".json":  # training metrics: all but the wall-clock time
            if _without_timing(json.loads(fa[rel].read_text())) != _without_timing(json.loads(fb[rel].read_text())):
                diffs.append(f"{rel}: differs")
        elif fa[rel].read_bytes() != fb[rel].read_bytes():  # tables, figures, checkpoints, images
            diffs.append(f"{rel}: bytes differ")
    return diffs, counts


# -------------------------------------------------------------- workflow tests
@pytest.mark.workflow
@pytest.mark.slow
def test_bad_images_are_skipped_and_recorded_odd_formats_used(reference):
    workdir, cfg, files = reference
    out = workdir / "results"
    preds = pd.concat([pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)
                       for p in sorted((out / "predictions").rglob("*.tsv"))])
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
        sets = pd.read_csv(out / f"image_sets/{owner.removeprefix('on_')}/{split}.tsv", sep="\t", dtype=str)
        with h5py.File(path, "r") as f:
            for cid, ids in sets.groupby("class_id")["image_id"]:
                stored = [s.decode() for s in f[f"{cid}/image_ids"][()]]
                assert stored == list(ids), (path, cid)
                in_acts |= set(stored)
    # Which odd-format images are drawn into an image set depends on what the trained models predict
    # (it differs between processors), so it is not asserted here; that each readable odd format is
    # decoded and classified is (above: status ok with a prediction), and that whatever is drawn
    # reaches the activation files is (the loop above covers every drawn image).
    # the skipped table lists exactly the unreadable files, each with a reason
    skipped = pd.read_csv(out / "summary/skipped_images.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert sorted(Path(workdir, p).resolve() for p in skipped["path"]) == sorted(
        f.path.resolve() for f in files["bad"] if not f.readable)
    assert (skipped["reason"].str.len() > 0).all() and set(skipped["stage"]) == {"predict"}
    # a warning in the log of every prediction job that met them
    for folder in BAD_FOLDERS:
        split = folder.split("/")[0]
        for model in cfg["models"]:
            log = (out / f"logs/predict/{model}/{split}/shard0000.log").read_text()
            for f in files["bad"]:
                if not f.readable and folder in str(f.path):
                    assert "WARNING" in log and f.path.name in log, (model, f.path.name)
    summary = pd.read_csv(out / "summary/run_summary.tsv", sep="\t", dtype=str, keep_default_na=False)
    n_bad = sum(not f.readable for f in files["bad"])
    assert f"{n_bad} unreadable images" in summary.loc[summary["stage"] == "images", "reason"].item()


@pytest.mark.workflow
@pytest.mark.slow
def test_class_guards_skip_and_report(reference):
    """Classes predicted for fewer than min_images images are skipped per model and per pair, with
    the reason in the run summary; empty class folders are listed; aggregation says how many
    classes it used. Oracle: counts recomputed from the prediction tables."""
    workdir, cfg, _ = reference
    out = workdir / "results"
    min_images = cfg["concepts"]["min_images"]
    analyze = cfg["dataset"]["analyze_classes"]
    pool, held = cfg["dataset"]["pool_split"], cfg["dataset"]["heldout_split"]
    models = list(cfg["models"])
    summary = pd.read_csv(out / "summary/run_summary.tsv", sep="\t", dtype=str, keep_default_na=False)

    def predicted(model, split):
        df = pd.read_csv(out / f"predictions/{model}/{split}/shard0000.tsv", sep="\t", dtype=str,
                         keep_default_na=False)
        return df[df["status"] == "ok"]["pred_class"].value_counts()

    skip_model = {}
    for m in models:
        counts = predicted(m, pool)
        for c in analyze:
            n = int(counts.get(c, 0))
            skip_model[(m, c)] = n < min_images
            rows = summary[(summary["stage"] == "image_set") & (summary["what"] == m) & (summary["class_id"] == c)]
            if skip_model[(m, c)]:
                assert rows["reason"].tolist() == [f"predicted for {n} < min_images={min_images} images"], (m, c)
                with h5py.File(out / f"concepts/{m}/{c}.h5", "r") as f:
                    assert f.attrs["skipped"] and str(n) in f.attrs["reason"]
            else:
                assert rows.empty
    assert skip_model[(models[0], EMPTY_CLASS)] and skip_model[(models[1], EMPTY_CLASS)], "the empty class must be skipped"

    pair = f"{models[0]}-vs-{models[1]}"
    used = []
    for c in analyze:
        held_union = set()
        for m in models:
            s = pd.read_csv(out / f"image_sets/{m}/{held}.tsv", sep="\t", dtype=str, keep_default_na=False)
            held_union |= set(s.loc[s["class_id"] == c, "image_id"])
        expect_skip = skip_model[(models[0], c)] or skip_model[(models[1], c)] or len(held_union) < 2
        with h5py.File(out / f"compare/{pair}/{c}.h5", "r") as f:
            assert bool(f.attrs["skipped"]) == expect_skip, c
        rows = summary[(summary["stage"] == "compare") & (summary["class_id"] == c)]
        assert len(rows) == int(expect_skip) and (rows["reason"].str.len() > 0).all()
        if not expect_skip:
            used.append(c)
    assert used, "the test config must leave at least one class analysed"
    # empty class folders are listed per split
    empty = summary[summary["stage"] == "dataset"]
    assert sorted(zip(empty["split"], empty["class_id"])) == sorted([(held, EMPTY_CLASS), (pool, EMPTY_CLASS)])
    # aggregation: the classes that exist, and how many
    table = pd.read_csv(out / f"pairs/{pair}/concepts.csv", dtype={"class_id": str})
    assert sorted(table["class_id"].unique()) == sorted(used)
    pairs = pd.read_csv(out / "summary/pairs.csv")
    assert (pairs["n_classes"] == len(used)).all() and len(pairs) == 2
    assert summary.loc[summary["stage"] == "pair", "reason"].tolist() == [f"{len(used)} of {len(analyze)} classes analysed"]
    with h5py.File(out / f"pairs/{pair}/layerwise_mmcs.h5", "r") as f:
        assert f.attrs["n_classes_analysed"] == len(used)
        assert f["n_classes/pearson"][()].max() <= len(used)
    assert f"from {len(used)} of {len(analyze)} classes" in (out / f"logs/aggregate_pair/{pair}.log").read_text()


@pytest.mark.workflow
@pytest.mark.slow
def test_nan_counts_and_means_in_pair_summary(reference):
    """pairs.csv: nan_<metric> counts the NaN of concepts.csv, mean_<metric> ignores them (pandas oracle)."""
    workdir, _, _ = reference
    out = workdir / "results"
    table = pd.concat([pd.read_csv(p, dtype={"class_id": str}) for p in sorted((out / "pairs").glob("*/concepts.csv"))])
    pairs = pd.read_csv(out / "summary/pairs.csv")
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
        with h5py.File(path, "r") as f:
            assert len(f.attrs) > 0, path
    with h5py.File(next((out / "concepts").rglob("*.h5")), "r") as f:
        assert f.attrs["k"] == cfg["concepts"]["k"] and f.attrs["seed"] == cfg["seed"]
    with h5py.File(next((out / "activations").rglob("*.h5")), "r") as f:
        assert f.attrs["image_size"] == cfg["dataset"]["image_size"]
        assert f.attrs["patch_size"] == cfg["dataset"]["patch_size"]
    assert not list(out.rglob("*.tmp")), "an uninterrupted run leaves no temporary files"


@pytest.mark.workflow
@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(reference, interrupted):
    """Determinism and clean resume in one comparison: a second run from scratch, killed three
    times and resumed, produces byte-identical tables, figures and checkpoints and identical HDF5
    datasets and attributes. Temporary files of the killed jobs are hidden, never outputs."""
    ref_dir, _, _ = reference
    int_dir, stale = interrupted
    diffs, counts = compare_runs(ref_dir / "results", int_dir / "results")
    assert not diffs, "\n".join(diffs[:30])
    assert counts.get(".h5", 0) >= 20 and counts.get(".csv", 0) >= 3 and counts.get(".png", 0) >= 10, counts
    assert stale["activations being written"], "the second kill must hit a half-written activation file"
    for p in (int_dir / "results").rglob("*.tmp"):
        assert p.name.startswith("."), p  # hidden: no glob of outputs picks it up
    _assert_outputs_intact(int_dir / "results")


@pytest.mark.workflow
@pytest.mark.slow
def test_exported_head_of_a_random_init_model_is_the_predicting_model(reference, tmp_path):
    """A model without checkpoint (random init): the head exported for the CPU jobs must be the
    classifier of the very network that predict and activations build (both seed 0 first)."""
    from rsvc.jobs import model_spec as spec_from_dict
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
    run_snakemake("results/heads/rnd.h5", "--cores", "1", "--configfile", str(tmp_path / "tiny.yaml"),
                  cwd=tmp_path, timeout=600)
    with h5py.File(tmp_path / "results/heads/rnd.h5", "r") as f:
        weight, bias = f["weight"][()], f["bias"][()]
    seed_everything(0)  # what workflow_scripts/predict.py and activations.py do before create_model
    model = create_model(spec_from_dict({"name": "rnd", **rnd}))
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
    run_snakemake("--cores", "2", "--configfile", str(workdir / "tiny.yaml"), "--rerun-triggers", "mtime",
                  "--forcerun", "aggregate_pair", "gallery", "summary", "planted_concept", cwd=workdir, timeout=900)
    out = workdir / "results"
    pair = "ps-vs-nc"
    assert pd.read_csv(out / f"pairs/{pair}/concepts.csv").empty
    assert pd.read_csv(out / "summary/pairs.csv").empty
    assert pd.read_csv(out / "summary/planted_concept.csv").empty
    summary = pd.read_csv(out / "summary/run_summary.tsv", sep="\t", dtype=str, keep_default_na=False)
    row = summary[summary["stage"] == "pair"]
    assert row["status"].tolist() == ["empty"] and row["reason"].tolist() == ["0 of 1 classes analysed"]
    with h5py.File(out / f"pairs/{pair}/layerwise_mmcs.h5", "r") as f:
        assert f.attrs["n_classes_analysed"] == 0
    for png in ["layerwise_mmcs_pearson.png", "galleries/lowest_cmcs_class0_b_to_a.png"]:
        assert (out / f"pairs/{pair}" / png).stat().st_size > 1000
