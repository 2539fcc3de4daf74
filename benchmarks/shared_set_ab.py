"""A/B of the shared set on a finished run: class 0 of the planted pair compared with the shared set drawn
independently of the concept samples (the workflow, issue 27) and with the old nested draw (one ranking
for both samples), same models, same concepts, same files.

    python benchmarks/shared_set_ab.py RUN_DIR [CONFIG]   # e.g. . config.yaml after `make demo`

Prints the CMCS (Pearson, held-out) of the first model's class-0 concepts predicted from the second for
both draws, their medians, and the share of each model's concept images that lie in each shared set
(independent draws: about shared_images / n_union_images; nested: 1.0).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import yaml

import rsvc.compare
from rsvc.compare import compare_job
from rsvc.formats import read_image_sets
from rsvc.paths import RunPaths
from rsvc.sampling import lowest_ranked
from rsvc.settings import CompareSettings, UncertaintySettings, with_defaults
from rsvc.specs import direction


def main(run: Path, config: Path) -> None:
    cfg = yaml.safe_load(config.read_text())
    a, b = list(cfg["models"])[:2]
    cid = cfg["dataset"]["classes"][0]
    cfg = with_defaults(cfg)
    paths = RunPaths.from_config(cfg, root=run)
    # the workflow's own settings, without the permutation nulls (not needed here)
    settings = dataclasses.replace(CompareSettings.from_config(cfg), uncertainty=UncertaintySettings())
    sets = {m: paths("image_sets", model=m, split=settings.pool_split) for m in (a, b)}
    predicted = {m: [i for i, _ in read_image_sets(sets[m], [cid], sampled_only=False)[cid]] for m in (a, b)}
    c = cfg["concepts"]
    results = {}
    for name, stream in (("independent", "shared"), ("nested (old)", "")):
        rsvc.compare.SHARED_STREAM = stream  # read by rsvc.compare at call time
        result, attrs = compare_job(
            (a, b),
            cid,
            **paths.compare_inputs((a, b), cid, (settings.pool_split, settings.heldout_split)),
            settings=settings,
            predicted=predicted,
        )
        cmcs = result.regression[direction(b, a)]["pearson"]
        shared = set(map(str, result.pool_rows.image_ids))
        shares = []
        for m in (a, b):
            ids = [i for i, _ in read_image_sets(sets[m], [cid])[cid]]
            concept = set(lowest_ranked(ids, c["concept_images"], cid, cfg["seed"]))
            shares.append(f"{m} {len(concept & shared) / len(concept):.2f}")
        results[name] = cmcs
        print(
            f"{name}: CMCS {b}->{a} {np.round(cmcs, 3)} (median {np.nanmedian(cmcs):.3f}); "
            f"concept images in the shared set: {', '.join(shares)}; "
            f"{len(shared)} shared of {attrs['n_union_images']} images in the union"
        )
    diff = np.abs(results["independent"] - results["nested (old)"])
    print(f"max |CMCS difference| {np.nanmax(diff):.3f}, median {np.nanmedian(diff):.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else Path(sys.argv[1]) / "config.yaml")
