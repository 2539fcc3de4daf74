"""The concepts stage on a real SLURM cluster, three ways: one group job, job arrays, one sbatch per job.

    python benchmarks/slurm_concepts.py [--cpus 8] [--workdir DIR] [--keep]

A one-node localhost cluster (tests/slurm/localcluster.sh) that declares ``--cpus`` CPUs
(LOCALCLUSTER_CPUS: more than the machine has, so that SLURM runs that many 1-CPU jobs side by
side; they then share the real cores) and keeps job accounting (LOCALCLUSTER_ACCOUNTING=1:
slurmdbd + MariaDB), so that ``sacct`` and the plugin's ``--slurm-efficiency-report`` work as on
a production cluster. Root only (Debian packages).

The workflow: the demo's 6 classes at the test suite's tiny sizes (2 models: 12 concepts jobs),
run locally up to the activations; then, for each option, the concepts jobs are removed and
submitted through ``profiles/slurm`` + ``tests/slurm/profile`` + the option:

- ``group``  (profiles/slurm before issue 29: ``groups: concepts=analysis``, ``group-components: 16``):
  one sbatch for all 12, the group job asks for ``cores`` cpus;
- ``array``  (``slurm-array-jobs: concepts``): one sbatch, an array of 1-CPU tasks;
- ``single`` (profiles/slurm now: no group, no array): one sbatch per job.

Measured per option, from SLURM's accounting (sacct, as the plugin's efficiency report): the
allocations (jobs or array tasks) with their cpus and elapsed time and the CPU time used in them,
and every job step (the `srun` that runs one Snakemake job, also inside a group job) with its
start and end: how many concepts jobs ran at once, overall and inside one allocation. Also the
wall time of the SLURM run, the sbatch calls (a counting wrapper in front of sbatch) and the mean of
the plugin's own report (whose rows are job steps, so it cannot see idle cpus of an allocation).
Ratios against ``group``, measured in the same run. Each job step has second resolution.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import yaml  # noqa: E402
from conftest import SNAKEMAKE, tiny_config, write_config  # noqa: E402
from slurm.fixtures import PRODUCTION_PROFILE, TEST_PROFILE, start_cluster, stop_cluster  # noqa: E402

from rsvc.paths import files  # noqa: E402

# profiles/slurm submits the concepts jobs one sbatch each; the other options change that.
OPTIONS = {
    "group": {"groups": ["concepts=analysis"], "group-components": {"analysis": 16}},
    "array": {"slurm-array-jobs": "concepts"},
    "single": {},
}


def bench_config() -> dict:
    """The demo's 6 classes at the tiny sizes; NMF run to a tight tolerance so that a job has work."""
    cfg = tiny_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    classes = cfg["synthetic"]["classes"] = yaml.safe_load((REPO / "config.yaml").read_text())["synthetic"]["classes"]
    cfg["dataset"]["classes"] = classes
    for spec in cfg["models"].values():
        spec["num_classes"] = len(classes)
    cfg["concepts"].update(max_iter=500, tol=1e-6)
    return cfg


def counting_sbatch(bindir: Path, count_file: Path, real_bindir: Path) -> None:
    """An ``sbatch`` first on PATH that appends a line to ``count_file`` and runs the cluster's own."""
    bindir.mkdir(parents=True, exist_ok=True)
    (bindir / "sbatch").write_text(f'#!/bin/sh\necho "$*" >> {count_file}\nexec {real_bindir / "sbatch"} "$@"\n')
    (bindir / "sbatch").chmod(0o755)


def seconds(value: str) -> float:
    """A SLURM duration ([D-][HH:]MM:SS[.fff]) in seconds."""
    days, _, rest = value.rpartition("-")
    total = 0.0
    for part in rest.split(":"):
        total = total * 60 + float(part)
    return total + int(days or 0) * 86400


def accounting(env: dict[str, str], run_id: str) -> dict:
    """What sacct recorded for the run's SLURM jobs (job name = the plugin's run id): per allocation
    (a job or an array task) its cpus x elapsed and the CPU time of everything in it; per job step
    (one `srun` per Snakemake job, also inside a group job) its start and end."""
    fields = "JobID,JobName,Start,End,ElapsedRaw,TotalCPU,AllocCPUS"
    res = subprocess.run(
        ["sacct", "-P", "-n", f"--name={run_id}", f"--format={fields}"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = [dict(zip(fields.split(","), line.split("|"))) for line in res.stdout.splitlines() if line]
    allocations = [r for r in rows if "." not in r["JobID"]]
    steps = [r for r in rows if "." in r["JobID"] and r["JobName"] not in ("batch", "extern")]
    stamp = lambda t: time.mktime(time.strptime(t, "%Y-%m-%dT%H:%M:%S"))  # noqa: E731
    per_allocation: dict[str, list[tuple[float, float]]] = {}
    for r in steps:
        per_allocation.setdefault(r["JobID"].split(".")[0], []).append((stamp(r["Start"]), stamp(r["End"])))
    used = sum(seconds(r["TotalCPU"]) for r in allocations)
    allocated = sum(float(r["ElapsedRaw"]) * int(r["AllocCPUS"]) for r in allocations)
    intervals = [iv for ivs in per_allocation.values() for iv in ivs]
    return {
        "allocations": len(allocations),
        "cpus": sorted({int(r["AllocCPUS"]) for r in allocations}),
        "cpu_used_s": used,
        "cpu_alloc_s": allocated,
        "cpu_eff": used / allocated if allocated else float("nan"),
        "steps": len(steps),
        "span_s": max(e for _, e in intervals) - min(s for s, _ in intervals) if intervals else float("nan"),
        "most_at_once": most_at_once(intervals),
        "most_at_once_in_an_allocation": max((most_at_once(ivs) for ivs in per_allocation.values()), default=0),
        "step_intervals": {k: sorted(v) for k, v in per_allocation.items()},
    }


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that overlap (an end at the same second as a start does not overlap it)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def plugin_report(report_dir: Path, run_id: str) -> float:
    """The mean CPU efficiency (%) of the rows of the plugin's efficiency report (its rows are job steps)."""
    path = report_dir / f"efficiency_report_{run_id}.csv"
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    effs = [float(r["CPU Efficiency (%)"]) for r in rows if r.get("CPU Efficiency (%)")]
    return sum(effs) / len(effs) if effs else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpus", type=int, default=8, help="CPUs the localhost node declares (default 8)")
    p.add_argument("--workdir", type=Path, default=None, help="default: a fresh temporary folder")
    p.add_argument("--keep", action="store_true", help="keep the cluster's state and the runs")
    p.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    args = p.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="slurm_concepts."))
    work.mkdir(parents=True, exist_ok=True)
    statedir = work / "cluster"
    os.environ.update(LOCALCLUSTER_CPUS=str(args.cpus), LOCALCLUSTER_ACCOUNTING="1")
    print(f"work folder {work}; node declares {args.cpus} CPUs on {os.cpu_count()} real ones; load {os.getloadavg()}")
    cluster = start_cluster(statedir)
    try:
        run = work / "run"
        run.mkdir(exist_ok=True)
        cfg = bench_config()
        write_config(run / "config.yaml", cfg)
        t0 = time.monotonic()
        base = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--configfile", "config.yaml"]
        subprocess.run([*base, "--cores", "2", "--until", "activations"], cwd=run, check=True, capture_output=True)
        print(f"prepared (local run up to the activations): {time.monotonic() - t0:.0f} s")
        rows = {}
        for option in args.options:
            for kind in ("concepts", "benchmarks/concepts", "logs/concepts"):  # every concepts job again
                for path in files(run / cfg["outdir"], kind):
                    path.unlink()
            prof = work / "profiles" / option
            prof.mkdir(parents=True, exist_ok=True)
            settings = {
                "cores": args.cpus,  # the width of a group job, as `cores: 8` in production
                "jobs": 32,
                "slurm-status-command": "sacct",  # accounting here, as in production
                "slurm-init-seconds-before-status-checks": 5,
                "slurm-efficiency-report": True,
                "slurm-efficiency-report-path": str(work / "efficiency" / option),
                # 1-CPU jobs of 1 GB: a group of --cpus of them fits the node's memory
                "set-resources": {"concepts": {"mem_mb": 1000, "runtime": 10}},
                **OPTIONS[option],
            }
            (prof / "config.yaml").write_text(yaml.safe_dump(settings))
            count = work / f"sbatch_{option}.txt"
            count.unlink(missing_ok=True)
            counting_sbatch(work / "bin" / option, count, statedir / "bin")
            env = {**cluster.env, "PATH": f"{work / 'bin' / option}{os.pathsep}{cluster.env['PATH']}"}
            cmd = ["timeout", "-k", "30", "900", *base, "--until", "concepts"]
            for profile in (PRODUCTION_PROFILE, TEST_PROFILE, prof):
                cmd += ["--profile", str(profile)]
            t0 = time.monotonic()
            res = subprocess.run(cmd, cwd=run, env=env, capture_output=True, text=True)
            wall = time.monotonic() - t0
            (work / f"snakemake_{option}.log").write_text(res.stdout + res.stderr)
            if res.returncode != 0:
                print(f"{option}: snakemake failed ({res.returncode}), see {work / f'snakemake_{option}.log'}")
                print((res.stdout + res.stderr)[-3000:])
                continue
            run_id = re.search(r"SLURM run ID: (\S+)", res.stdout + res.stderr).group(1)
            time.sleep(2)  # sacct: the last records
            acct = accounting(env, run_id)
            rows[option] = r = {
                "wall_s": wall,
                "sbatch": len(count.read_text().splitlines()) if count.exists() else 0,
                "plugin_eff": plugin_report(work / "efficiency" / option, run_id),
                **acct,
            }
            print(
                f"{option}: wall {wall:.1f} s; {r['sbatch']} sbatch calls; {r['allocations']} SLURM allocations of "
                f"{r['cpus']} cpus; {r['steps']} job steps (concepts jobs), first start to last end "
                f"{r['span_s']:.0f} s, at most {r['most_at_once']} at once, at most "
                f"{r['most_at_once_in_an_allocation']} at once in one allocation; CPU used / allocated "
                f"{r['cpu_used_s']:.1f} / {r['cpu_alloc_s']:.0f} cpu-s = {r['cpu_eff']:.1%}; the plugin's "
                f"report (per job step): mean {r['plugin_eff']:.1f} %"
            )
            for alloc, ivs in r["step_intervals"].items():
                t0 = min(s for s, _ in ivs)
                print(f"    {alloc}: " + " ".join(f"[{s - t0:.0f},{e - t0:.0f}]" for s, e in ivs))
        if "group" in rows:
            b = rows["group"]
            print("\nratios against `group` (this run):")
            print(
                "| option | wall of the run | first start to last end | sbatch calls | SLURM allocations "
                "| most jobs at once (in one allocation) | CPU efficiency of the allocations | plugin's report |"
            )
            print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            for option, r in rows.items():
                print(
                    f"| {option} | {r['wall_s']:.0f} s ({r['wall_s'] / b['wall_s']:.2f}x) "
                    f"| {r['span_s']:.0f} s ({r['span_s'] / b['span_s']:.2f}x) | {r['sbatch']} | {r['allocations']} "
                    f"| {r['most_at_once']} ({r['most_at_once_in_an_allocation']}) | {r['cpu_eff']:.1%} "
                    f"| {r['plugin_eff']:.0f} % |"
                )
        print(f"load average at the end {os.getloadavg()}")
    finally:
        if args.keep:
            print(f"cluster left running: {statedir} (tests/slurm/localcluster.sh stop {statedir})")
        else:
            stop_cluster(statedir)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
