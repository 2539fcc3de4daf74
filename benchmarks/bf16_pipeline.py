"""bf16 autocast through the full pipeline, next to the noise of the factorisation itself.

    python benchmarks/bf16_pipeline.py [--workdir DIR] [--fp32 FINISHED_TINY_RUN] [--keep]

The test suite's tiny demo (``tests/conftest.py``: tiny_config) is run in float32, then a copy of it
with ``extraction.autocast: bf16`` (Snakemake reruns the activations and everything after them), as
``tests/workflow/test_precision.py`` does. bf16 refits the concepts, and NMF is non-convex, so a change in
the third digit of the activations can move a factorisation to another local optimum, differently on
each processor: the difference of the full pipeline measures NMF's luck as much as bf16, so it is
reported here, not asserted (what bf16 changes with the concepts held fixed is bounded by the test).

Printed, each against the float32 run (concepts of the float32 activations, per class recomputed with
the workflow's compare settings): the largest layerwise MMCS difference (Pearson, Spearman) and the
largest CMCS difference over concepts found again (pre_logits directions of W, cosine >= 0.99,
Hungarian pairing), with how many were not found again, for

- bf16 (the full pipeline);
- float32, NMF seed + 1 (same activations);
- float32, NMF from a random start with seed + 1 (the restart noise floor).

``--fp32`` reuses a finished tiny run (its folder is copied, never changed); about 2 tiny runs'
time otherwise (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from scipy.optimize import linear_sum_assignment

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "workflow")]  # conftest.py, test_precision.py

from conftest import run_tiny, tiny_config  # noqa: E402
from test_precision import PAIR, _directions, _layerwise, _mmcs_file, _recompare, _shard_file  # noqa: E402

from rsvc.concepts import concepts_job  # noqa: E402
from rsvc.formats import read_concepts, write_concepts  # noqa: E402
from rsvc.settings import ConceptSettings, with_defaults  # noqa: E402


def _unit_rows(W: np.ndarray) -> np.ndarray:
    return W / np.linalg.norm(W, axis=1, keepdims=True)


def cmcs_by_identity(ref: dict, new: dict, ref_w: Path, new_w: Path) -> tuple[float, int, int]:
    """|CMCS difference| of every concept found again (pre_logits direction cosine >= 0.99,
    Hungarian pairing): the largest, how many of all concepts were not found again, and all."""
    diffs, unmatched, total = [], 0, 0
    for cid in set(ref) & set(new):
        for d in _directions(ref):
            target = d.split("->")[1]
            w_ref = read_concepts(ref_w / target / f"{cid}.h5").W["pre_logits"]
            w_new = read_concepts(new_w / target / f"{cid}.h5").W["pre_logits"]
            cos = _unit_rows(w_new) @ _unit_rows(w_ref).T
            rows, cols = linear_sum_assignment(-cos)
            x, y = ref[cid].regression[d]["pearson"], new[cid].regression[d]["pearson"]
            for i, j in zip(rows, cols):
                total += 1
                if cos[i, j] < 0.99:
                    unmatched += 1
                elif np.isfinite(x[j]) and np.isfinite(y[i]):
                    diffs.append(abs(x[j] - y[i]))
    return (max(diffs) if diffs else float("nan")), unmatched, total


def refit_concepts(cfg: dict, out: Path, dest: Path, seed: int, init: str = "nndsvd") -> None:
    """The float32 run's concepts refitted with another seed (same activations, same settings);
    ``init="random"``: from a random start, as ``concepts.restarts`` refits (the restart noise floor)."""
    for m in PAIR.split("-vs-"):
        # the workflow's settings of the model's concepts, with another seed and start
        settings = dataclasses.replace(ConceptSettings.from_config(with_defaults(cfg), m), seed=seed, init=init)
        for cid in cfg["dataset"]["classes"]:
            result = concepts_job(
                _shard_file(out, m, m, cfg["dataset"]["pool_split"], cid),
                cid,
                settings,
                sample_seed=cfg["seed"],  # the workflow's concept images, whatever the NMF seed
            )
            write_concepts(dest / m / f"{cid}.h5", result, {"model": m, "class_id": cid, "seed": seed})


def runs(work: Path, fp32_run: Path | None) -> tuple[dict, Path, Path]:
    """(config, float32 results, bf16 results): the tiny run and its bf16 copy, run to completion."""
    cfg = tiny_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    fp32 = work / "fp32"
    if fp32_run is not None:
        shutil.copytree(fp32_run, fp32, symlinks=True)
    fp32.mkdir(parents=True, exist_ok=True)
    run_tiny(fp32, cfg)  # nothing to do when the copied run is finished and current
    bf16 = work / "bf16"
    shutil.copytree(fp32, bf16, symlinks=True)
    cfg_bf16 = copy.deepcopy(cfg)
    cfg_bf16["extraction"]["autocast"] = "bf16"
    run_tiny(bf16, cfg_bf16)
    return cfg, fp32 / "results", bf16 / "results"


def measure(cfg: dict, fp32: Path, bf16: Path, scratch: Path) -> list[str]:
    """One line per variant (bf16, NMF seed + 1, NMF random start) against the float32 run."""
    ref = _recompare(cfg, fp32, fp32 / "concepts")
    bf16_results = _recompare(cfg, bf16, bf16 / "concepts")
    # what is reported is what the workflow stored: its matrix is the mean of the per-class ones recomputed here
    for out, results in ((fp32, ref), (bf16, bf16_results)):
        for kind, stored in _mmcs_file(out).items():
            np.testing.assert_allclose(_layerwise(results, kind), stored, atol=1e-9)

    reseeded, restarted = scratch / "reseeded", scratch / "restarted"
    refit_concepts(cfg, fp32, reseeded, seed=cfg["seed"] + 1)
    refit_concepts(cfg, fp32, restarted, seed=cfg["seed"] + 1, init="random")
    lines = []
    for label, res, w_dir in (
        ("bf16 (full pipeline)", bf16_results, bf16 / "concepts"),
        ("fp32, NMF seed + 1", _recompare(cfg, fp32, reseeded), reseeded),
        ("fp32, NMF from a random start (the restart noise floor)", _recompare(cfg, fp32, restarted), restarted),
    ):
        mm = {k: float(np.nanmax(np.abs(_layerwise(ref, k) - _layerwise(res, k)))) for k in ("pearson", "spearman")}
        cm, unmatched, total = cmcs_by_identity(ref, res, fp32 / "concepts", w_dir)
        lines.append(
            f"{label}: layerwise MMCS max diff pearson {mm['pearson']:.4f} spearman {mm['spearman']:.4f}; "
            f"CMCS max diff {cm:.4f} over concepts found again; {unmatched}/{total} not found again"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    ap.add_argument("--fp32", type=Path, default=None, help="a finished tiny run to start from (copied)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="rsvc_bf16_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        cfg, fp32, bf16 = runs(work, args.fp32)
        for line in measure(cfg, fp32, bf16, work / "refits"):
            print(line, flush=True)
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"runs kept in {work}")


if __name__ == "__main__":
    main()
