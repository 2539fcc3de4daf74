"""Compare two finished runs of the workflow (e.g. the tiny demo with ``extraction.device: cuda`` and
the same config on the CPU): the same image sets? how far apart are their numbers?

Reads both ``results/`` folders through :mod:`rsvc.formats`, finding their files by :mod:`rsvc.paths`, and reports

- image sets: identical (every model, split and class: the same image ids in the same order);
- stored activations (when the image sets agree): the largest relative Frobenius difference of a
  class's activations at one layer;
- layerwise MMCS (``pairs/<pair>/layerwise_mmcs.h5``, Pearson and Spearman): max |difference|;
- CMCS (``compare/<pair>/shard<s>/<class>.h5``, Pearson, both directions): max |difference| of the same
  concept, concepts paired by identity (pre_logits directions of W, cosine >= 0.99, Hungarian
  pairing), and how many were not found again (NMF can land in another optimum after a change in
  the last digits of its input, see docs/numerics.md); by concept index as well.

    python benchmarks/compare_runs.py RUN_A/results RUN_B/results [--json out.json]

Exit status 1 when a check fails (``--mmcs-tol``, default 0.01; ``--cmcs-tol``, default 0.02;
image sets not identical).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from rsvc.formats import (
    read_attrs,
    read_class_activations,
    read_compare_metrics,
    read_compare_status,
    read_concepts,
    read_image_sets,
    read_layerwise,
)
from rsvc.paths import files, fill, pattern, templates, wildcards_of

METHODS = ("pearson", "spearman")


def image_sets(results: Path) -> dict[str, dict[str, list[str]]]:
    """``{"<model>/<split>": {class: [image ids]}}`` of a run."""
    out = {}
    for path in files(results, "image_sets"):  # image_sets/*/*.tsv holds the counts files too
        if not path.match(pattern("image_set_counts")):
            key = "{model}/{split}".format(**wildcards_of("image_sets", path, results))
            out[key] = {c: [i for i, _ in lst] for c, lst in read_image_sets(path).items()}
    return out


def layerwise(results: Path) -> dict[tuple[str, str], np.ndarray]:
    """``{(pair, method): mean MMCS (La, Lb)}``."""
    return {
        (wildcards_of("pair_layerwise", path, results)["pair"], m): read_layerwise(path, m)[0]
        for path in files(results, "pair_layerwise")
        for m in METHODS
    }


def compare_metrics(results: Path) -> dict[tuple[str, str], dict]:
    """``{(pair, class): read_compare_metrics(...)}`` of the compared (not skipped) classes."""
    out = {}
    for path in files(results, "compare"):
        metrics = read_compare_metrics(path)
        if metrics is not None:
            status = read_compare_status(path)
            out[(status.pair, status.class_id)] = metrics
    if not out:
        raise SystemExit(f"no compared class in {results / pattern('compare')}")
    return out


def _unit_rows(W: np.ndarray) -> np.ndarray:
    return W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-30)


def _max_abs(diffs: list[float]) -> float:
    finite = [d for d in diffs if np.isfinite(d)]
    return max(finite) if finite else float("nan")


def activation_difference(a: Path, b: Path) -> float:
    """Largest relative Frobenius difference ``||A_b - A_a|| / ||A_a||`` over activation files, classes, layers."""
    worst = 0.0
    for path_a in files(a, "activations"):
        path_b = b / path_a.relative_to(a)
        for cid in read_attrs(path_a)["classes"]:
            try:
                acts_a, ids_a, _, _ = read_class_activations(path_a, cid)
            except KeyError:  # no image of this class in this file
                continue
            acts_b, ids_b, _, _ = read_class_activations(path_b, cid)
            if list(ids_a) != list(ids_b):
                return float("nan")
            for layer, x in acts_a.items():
                x64, y64 = x.astype(np.float64), acts_b[layer].astype(np.float64)
                worst = max(worst, float(np.linalg.norm(y64 - x64) / max(np.linalg.norm(x64), 1e-30)))
    return worst


def cmcs_differences(a: Path, b: Path, ma: dict, mb: dict) -> dict[str, float]:
    """Max |CMCS difference| by concept identity and by index, and the concepts not found again."""
    from scipy.optimize import linear_sum_assignment

    by_identity, by_index, unmatched, total = [], [], 0, 0
    for key in sorted(set(ma) & set(mb)):
        _, cid = key
        for d, numbers in ma[key]["directions"].items():
            x, y = numbers["cmcs_pearson"], mb[key]["directions"][d]["cmcs_pearson"]
            by_index += list(np.abs(np.asarray(y) - np.asarray(x)))
            target = d.split("->")[1]
            w_a = read_concepts(fill(templates(a), "concepts", model=target, class_id=cid)).W["pre_logits"]
            w_b = read_concepts(fill(templates(b), "concepts", model=target, class_id=cid)).W["pre_logits"]
            cos = _unit_rows(w_b) @ _unit_rows(w_a).T
            rows, cols = linear_sum_assignment(-cos)
            for i, j in zip(rows, cols):
                total += 1
                if cos[i, j] < 0.99:
                    unmatched += 1
                else:
                    by_identity.append(abs(float(y[i]) - float(x[j])))
    return {
        "max_abs_cmcs_diff": _max_abs(by_identity),
        "max_abs_cmcs_diff_by_index": _max_abs(by_index),
        "concepts_not_found_again": unmatched,
        "concepts": total,
    }


def compare_runs(a: Path, b: Path) -> dict:
    """Every difference between two runs' ``results/`` folders (see the module docstring)."""
    sets_a, sets_b = image_sets(a), image_sets(b)
    same_sets = bool(sets_a) and sets_a == sets_b
    lw_a, lw_b = layerwise(a), layerwise(b)
    if not lw_a or set(lw_a) != set(lw_b):
        raise ValueError(f"the runs hold other pairs: {sorted(lw_a)} vs {sorted(lw_b)}")
    mmcs = {
        m: _max_abs([float(np.nanmax(np.abs(lw_b[k] - lw_a[k]), initial=0.0)) for k in lw_a if k[1] == m])
        for m in METHODS
    }
    ma, mb = compare_metrics(a), compare_metrics(b)
    return {
        "image_sets_identical": same_sets,
        "image_sets": len(sets_a),
        "compared_classes": [len(ma), len(mb)],
        "max_rel_activation_diff": activation_difference(a, b) if same_sets else float("nan"),
        "max_abs_mmcs_diff_pearson": mmcs["pearson"],
        "max_abs_mmcs_diff_spearman": mmcs["spearman"],
        "max_abs_mmcs_diff": max(mmcs.values()),
        **cmcs_differences(a, b, ma, mb),
    }


def verdict(result: dict, mmcs_tol: float, cmcs_tol: float) -> list[str]:
    """The failed checks, [] when all pass (NaN differences count as failed)."""
    failed = []
    if not result["image_sets_identical"]:
        failed.append("image sets differ")
    if not result["max_abs_mmcs_diff"] <= mmcs_tol:
        failed.append(f"layerwise MMCS differs by {result['max_abs_mmcs_diff']:.4f} > {mmcs_tol}")
    if not result["max_abs_cmcs_diff"] <= cmcs_tol:
        failed.append(f"CMCS differs by {result['max_abs_cmcs_diff']:.4f} > {cmcs_tol}")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="the reference run's results folder (e.g. CPU)")
    parser.add_argument("b", type=Path, help="the other run's results folder (e.g. CUDA)")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    parser.add_argument("--mmcs-tol", type=float, default=0.01)
    parser.add_argument("--cmcs-tol", type=float, default=0.02)
    args = parser.parse_args(argv)
    result = compare_runs(args.a, args.b)
    failed = verdict(result, args.mmcs_tol, args.cmcs_tol)
    result["failed"] = failed
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(
        f"image sets identical: {'yes' if result['image_sets_identical'] else 'no'} ({result['image_sets']} files); "
        f"max rel activation diff {result['max_rel_activation_diff']:.2e}; "
        f"max |d layerwise MMCS| {result['max_abs_mmcs_diff']:.4f} "
        f"(pearson {result['max_abs_mmcs_diff_pearson']:.4f}, spearman {result['max_abs_mmcs_diff_spearman']:.4f}); "
        f"max |d CMCS| {result['max_abs_cmcs_diff']:.4f} (by index {result['max_abs_cmcs_diff_by_index']:.4f}; "
        f"{result['concepts_not_found_again']} of {result['concepts']} concepts not found again); "
        + ("PASS" if not failed else "FAIL: " + "; ".join(failed))
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
