"""CPU time and memory of `snakemake -n` for the ImageNet experiments, on a fake ImageNet tree.

Two studies, both on the 1000 wnids of experiments/imagenet_classes.txt (empty class folders are
enough for a dry run; tests/imagenet_tree.py):

- RN18 vs RN50: experiments/imagenet_rn18_rn50.yaml as it is;
- a 10-model ``pairs: all`` study (45 pairs): five copies each of its rn18 and rn50 entries under
  other names (the DAG does not depend on which networks they are).

Each dry run is run twice: the first one checks the models with timm (cached in
.snakemake/rsvc_preflight.json), the second one is what a researcher sees from then on. Printed:
jobs, CPU (user + sys of the snakemake process tree), wall and peak RSS, and CPU per 1000 jobs,
against the goals of issue 13 (10 s and 60 s of CPU).

    python benchmarks/dry_run.py [--workdir /tmp/rsvc_dry_run] [--only rn18_rn50|ten_models]
"""

from __future__ import annotations

import argparse
import copy
import resource
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the fake ImageNet tree and the measured dry run of the tests
from imagenet_tree import IMAGENET_CLASSES, make_imagenet_tree, measured_dry_run  # noqa: E402

GOALS_S = {"rn18_rn50": 10.0, "ten_models": 60.0}


def study(name: str, root: Path, classes: Path) -> dict:
    cfg = yaml.safe_load((REPO / "experiments/imagenet_rn18_rn50.yaml").read_text())
    cfg["dataset"].update(root=str(root), classes=str(classes))
    if name == "ten_models":
        base = cfg["models"]
        cfg["models"] = {f"{m}_{i}": copy.deepcopy(base[m]) for i in range(5) for m in ("rn18", "rn50")}
        cfg["pairs"] = "all"
    return cfg


def dry_run(workdir: Path, cfg: dict) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump({**cfg, "outdir": str(workdir / "results")}, sort_keys=False))
    stats, wall, cpu = measured_dry_run(workdir, config)
    return {
        "jobs": stats["total"],
        "cpu_s": cpu,
        "wall_s": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,  # the largest child so far
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rsvc_dry_run"))
    ap.add_argument("--only", choices=sorted(GOALS_S))
    args = ap.parse_args()
    root = args.workdir / "imagenet"
    if not root.exists():
        make_imagenet_tree(root)
    for name in [args.only] if args.only else list(GOALS_S):
        cfg = study(name, root, IMAGENET_CLASSES)
        for attempt in ("first (model checks)", "cached"):
            r = dry_run(args.workdir / name, cfg)
            print(
                f"{name:10s} {attempt:20s} {r['jobs']:6d} jobs  CPU {r['cpu_s']:6.1f} s "
                f"({1000 * r['cpu_s'] / r['jobs']:.1f} s per 1000 jobs, goal {GOALS_S[name]:.0f} s: "
                f"{r['cpu_s'] / GOALS_S[name]:.2f} of it)  wall {r['wall_s']:6.1f} s  peak RSS {r['peak_rss_mb']:.0f} MB",
                flush=True,
            )


if __name__ == "__main__":
    main()
