"""bf16 autocast does not change the science: the tiny demo re-run with
``extraction.autocast: bf16`` against its float32 run (issue 7).

Only the activation half reruns (predictions are always full precision), and
the layerwise MMCS matrices stay within 0.01 and per-concept CMCS within 0.02.

Concepts are compared by identity, not by index: NMF concepts are ordered by
size (``rsvc.factorization.concept_order``) and two concepts of nearly equal
size may swap places when the activations change in the third digit, so each
bf16 concept is paired with the fp32 concept of the same class and model whose
``pre_logits`` direction it matches (Hungarian assignment on cosine). A
concept NMF did not find again (cosine < 0.99: a different local optimum) has
no counterpart to compare; at most a fifth of them may be such.
"""

from __future__ import annotations

import copy
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment

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


def _match_concepts(fp32, bf16, model, class_id):
    """bf16 concept index -> (fp32 concept index, cosine of their pre_logits directions)."""
    def unit_w(out):
        with h5py.File(out / f"concepts/{model}/{class_id}.h5", "r") as f:
            W = f["W/pre_logits"][()]
        return W / np.linalg.norm(W, axis=1, keepdims=True)

    cos = unit_w(bf16) @ unit_w(fp32).T
    rows, cols = linear_sum_assignment(-cos)
    return {int(r): (int(c), float(cos[r, c])) for r, c in zip(rows, cols)}


def test_bf16_mmcs_matches_fp32(bf16_run):
    fp32, bf16, _ = bf16_run
    a, b = _mmcs(fp32), _mmcs(bf16)
    for kind in a:
        assert a[kind].shape == b[kind].shape
        np.testing.assert_array_equal(np.isnan(a[kind]), np.isnan(b[kind]))
        diff = np.nanmax(np.abs(a[kind] - b[kind]))
        assert diff <= 0.01, f"layerwise MMCS ({kind}) differs by {diff:.4f}"
        assert diff > 0, "bf16 gave bit-identical MMCS: autocast was not applied"


def test_bf16_cmcs_matches_fp32_concept_by_concept(bf16_run):
    fp32, bf16, _ = bf16_run
    ta, tb = _table(fp32), _table(bf16)
    assert ta.index.equals(tb.index)
    diffs, unmatched, total = [], 0, 0
    for (class_id, direction), rows in tb.groupby(level=["class_id", "direction"]):
        target = rows["target"].iloc[0]
        pairs = _match_concepts(fp32, bf16, target, class_id)
        for concept, cmcs in rows["cmcs_pearson"].droplevel([0, 1]).items():
            j, cos = pairs[concept]
            total += 1
            if cos < 0.99:
                unmatched += 1
                continue
            ref = ta.loc[(class_id, direction, j), "cmcs_pearson"]
            if np.isnan(ref) and np.isnan(cmcs):
                continue
            diffs.append(abs(ref - cmcs))
    assert unmatched <= total / 5, f"{unmatched} of {total} concepts not found again with bf16"
    assert diffs and max(diffs) <= 0.02, f"CMCS differs by {max(diffs):.4f}"
