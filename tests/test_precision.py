"""bf16 autocast does not change the science: the tiny demo re-run with
``extraction.autocast: bf16`` against its float32 run (issue 7).

Only the activation half reruns (predictions are always full precision), and
the layerwise MMCS matrices and per-concept CMCS stay within 0.01 and 0.02.
"""

from __future__ import annotations

import copy
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import run_tiny
from test_workflow import dry_run_jobs

pytestmark = pytest.mark.workflow

PAIR = "ps-vs-nc"


def _mmcs(out):
    with h5py.File(out / f"pairs/{PAIR}/layerwise_mmcs.h5", "r") as f:
        return {kind: f[kind][()] for kind in ("pearson", "spearman")}


def _table(out):
    df = pd.read_csv(out / f"pairs/{PAIR}/concepts.csv", dtype={"class_id": str})
    return df.set_index(["class_id", "direction", "concept"]).sort_index()


@pytest.fixture(scope="module")
def bf16_run(tiny_run, tmp_path_factory):
    workdir, cfg = tiny_run
    clone = tmp_path_factory.mktemp("bf16")
    shutil.copytree(workdir, clone, dirs_exist_ok=True, symlinks=True)
    cfg = copy.deepcopy(cfg)
    cfg["extraction"]["autocast"] = "bf16"
    jobs = dry_run_jobs(clone, cfg)
    run_tiny(clone, cfg)
    return workdir / "results", clone / "results", jobs


def test_autocast_reruns_only_the_activation_half(bf16_run):
    _, _, jobs = bf16_run
    rules = {rule for rule, _ in jobs}
    assert "activations" in rules and "compare" in rules
    assert not rules & {"make_dataset", "train_model", "predict", "image_sets", "export_head"}, rules


def test_bf16_is_recorded_in_the_activation_files(bf16_run):
    fp32, bf16, _ = bf16_run
    for out, expected in ((fp32, "null"), (bf16, "bf16")):
        files = sorted((out / "activations").rglob("*.h5"))
        assert files
        for path in files:
            with h5py.File(path, "r") as f:
                assert str(f.attrs["autocast"]) == expected, path


def test_bf16_mmcs_and_cmcs_match_fp32(bf16_run):
    fp32, bf16, _ = bf16_run
    a, b = _mmcs(fp32), _mmcs(bf16)
    for kind in a:
        assert a[kind].shape == b[kind].shape
        np.testing.assert_array_equal(np.isnan(a[kind]), np.isnan(b[kind]))
        diff = np.nanmax(np.abs(a[kind] - b[kind]))
        assert diff <= 0.01, f"layerwise MMCS ({kind}) differs by {diff:.4f}"
        assert diff > 0, "bf16 gave bit-identical MMCS: autocast was not applied"
    ta, tb = _table(fp32), _table(bf16)
    assert ta.index.equals(tb.index)
    diff = np.nanmax(np.abs(ta["cmcs_pearson"].to_numpy() - tb["cmcs_pearson"].to_numpy()))
    assert diff <= 0.02, f"CMCS differs by {diff:.4f}"
