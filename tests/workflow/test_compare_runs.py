"""benchmarks/compare_runs.py (the CUDA-vs-CPU comparison of benchmarks/gpu_check.sh) on a finished tiny run."""

from __future__ import annotations

import shutil
import sys

import h5py
import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from compare_runs import compare_runs, main, verdict  # noqa: E402

pytestmark = pytest.mark.workflow


def test_a_run_equals_itself_and_a_changed_copy_is_caught(tiny_run, tmp_path):
    workdir, _ = tiny_run
    results = workdir / "results"
    same = compare_runs(results, results)
    assert same["image_sets_identical"] and same["image_sets"] > 0 and min(same["compared_classes"]) > 0
    assert same["max_abs_mmcs_diff"] == 0 and same["max_abs_cmcs_diff"] == 0 and same["max_rel_activation_diff"] == 0
    assert same["concepts_not_found_again"] == 0 and same["concepts"] > 0
    assert verdict(same, 0.01, 0.02) == []
    assert main([str(results), str(results), "--json", str(tmp_path / "c.json")]) == 0

    copy = tmp_path / "results"
    for sub in ("image_sets", "pairs", "compare", "concepts", "activations"):
        shutil.copytree(results / sub, copy / sub)
    layerwise = next((copy / "pairs").glob("*/layerwise_mmcs.h5"))
    with h5py.File(layerwise, "r+") as f:
        f["pearson"][0, 0] += 0.05
    sets = next(p for p in (copy / "image_sets").glob("*/*.tsv") if not p.name.endswith(".counts.tsv"))
    lines = sets.read_text().splitlines()
    sets.write_text("\n".join(lines[:-1]) + "\n")  # one image fewer
    changed = compare_runs(results, copy)
    assert abs(changed["max_abs_mmcs_diff_pearson"] - 0.05) < 1e-9 and changed["max_abs_mmcs_diff_spearman"] == 0
    failed = verdict(changed, 0.01, 0.02)
    assert any("image sets differ" in f for f in failed) and any("MMCS" in f for f in failed)
    assert main([str(results), str(copy)]) == 1
