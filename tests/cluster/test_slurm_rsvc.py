"""The RSVC workflow itself through SLURM: a reduced demo run via `profiles/slurm` +
`tests/slurm/profile` on the one-node localhost cluster must send every job through
sbatch and give the same numbers as a local run of the same config.

A few minutes (two tiny runs side by side on the same machine); marked `slurm`.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import safetensors.numpy
import yaml
from conftest import REPO, SNAKEMAKE, tiny_config, write_config
from slurm import fixtures
from slurm.fixtures import SlurmCluster

pytestmark = pytest.mark.slurm
slurm_cluster = fixtures.slurm_cluster  # the cluster fixture of tests/slurm/fixtures.py

RUN_TIMEOUT_S = 900
# not results: run times and logs
SKIP_DIRS = {"logs", "benchmarks"}
VOLATILE_KEYS = {"seconds"}  # training wall time in models/*.metrics.json
# one thread per job in both runs: two jobs side by side on the 2-CPU test node
# (profiles/slurm asks 8 for the GPU rules, capped to the node's 2)
THREADS = [
    "--set-threads",
    "predict=1",
    "activations=1",
    "train_model=1",
    "make_dataset=1",
    "aggregate_pair=1",
    "explorer=1",
]
RULES = {
    "make_dataset",
    "train_model",
    "predict",
    "image_sets",
    "export_head",
    "activations",
    "concepts",
    "importance",
    "compare",
    "aggregate_pair",
    "gallery",
    "explorer",
    "summary",
    "planted_concept",
}
# rules that may go as job arrays (`slurm-array-jobs`; profiles/slurm sets none: docs/cluster.md)
ARRAYS = {"concepts"}


def reduced_config() -> dict:
    """tiny_config with 2 classes and fewer images: the smallest run that still analyses a class."""
    cfg = tiny_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    classes = cfg["synthetic"]["classes"][:2]
    cfg["synthetic"].update(classes=classes, n_per_split={"train": 24, "val": 10, "test": 2})
    cfg["dataset"]["classes"] = classes
    for spec in cfg["models"].values():
        spec["num_classes"] = 2
    cfg["concepts"].update(concept_images=10, shared_images=16, heldout_images=8, min_heldout_images=4)
    return cfg


def result_files(out: Path) -> dict[str, Path]:
    """Every file under ``out`` but logs and benchmarks, by relative path."""
    files = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if p.is_file() and not SKIP_DIRS & set(rel.parts):
            files[str(rel)] = p
    return files


def _without_volatile(obj):
    if isinstance(obj, dict):
        return {k: _without_volatile(v) for k, v in obj.items() if k not in VOLATILE_KEYS}
    if isinstance(obj, list):
        return [_without_volatile(v) for v in obj]
    return obj


def _h5_items(path: Path) -> dict[str, object]:
    """Every dataset (array) and attribute (value) of an HDF5 file, by name."""
    items: dict[str, object] = {}
    with h5py.File(path, "r") as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                items[name] = obj[()]
            for key, value in obj.attrs.items():
                items[f"{name}@{key}"] = value

        visit("/", f)
        f.visititems(visit)
    return items


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _max_diff(a, b) -> str:
    try:
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        return f"max |diff| {np.nanmax(np.abs(a - b)):.3g}" if a.shape == b.shape else f"shapes {a.shape} {b.shape}"
    except (TypeError, ValueError):
        return "non-numeric"


def compare_file(rel: str, a: Path, b: Path) -> list[str]:
    """Differences between two result files (empty: identical numbers)."""
    if a.suffix == ".h5":
        ia, ib = _h5_items(a), _h5_items(b)
        diffs = [f"{rel}: only in one run: {sorted(set(ia) ^ set(ib))}"] if set(ia) != set(ib) else []
        diffs += [f"{rel}:{k}: {_max_diff(ia[k], ib[k])}" for k in sorted(set(ia) & set(ib)) if not _same(ia[k], ib[k])]
        return diffs
    if a.suffix in (".csv", ".tsv"):
        sep = "," if a.suffix == ".csv" else "\t"
        ta = pd.read_csv(a, sep=sep, dtype=str, keep_default_na=False)
        tb = pd.read_csv(b, sep=sep, dtype=str, keep_default_na=False)
        if list(ta.columns) != list(tb.columns) or len(ta) != len(tb):
            return [f"{rel}: columns/rows differ: {list(ta.columns)} x {len(ta)} vs {list(tb.columns)} x {len(tb)}"]
        # the text of every cell: equal text = equal numbers (written with full precision)
        return [
            f"{rel}:{c}: {_max_diff(ta[c].replace('', 'nan'), tb[c].replace('', 'nan'))}"
            for c in ta.columns
            if not ta[c].equals(tb[c])
        ]
    if a.suffix == ".safetensors":
        sa, sb = safetensors.numpy.load_file(str(a)), safetensors.numpy.load_file(str(b))
        if sa.keys() != sb.keys():
            return [f"{rel}: tensor names differ"]
        return [f"{rel}:{k}: {_max_diff(sa[k], sb[k])}" for k in sa if not _same(sa[k], sb[k])]
    if a.suffix == ".json":
        ja, jb = (_without_volatile(json.loads(p.read_text())) for p in (a, b))
        return [] if ja == jb else [f"{rel}: {ja} != {jb}"]
    # images (dataset, figures, galleries) and anything else: the bytes
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b)]
    return [] if digest[0] == digest[1] else [f"{rel}: bytes differ"]


def submissions(output: str) -> dict[str, tuple[str, Path]]:
    """{snakemake job id or group job uuid: (SLURM job id, SLURM log)} of every sbatch."""
    found = re.findall(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", output)
    return {job: (slurm_id, Path(log)) for job, slurm_id, log in found}


def array_submissions(output: str) -> dict[str, str]:
    """{snakemake job id: SLURM array job id} of every job submitted in a job array."""
    found = re.findall(r"Submitted array job with Snakemake IDs (\S+) and SLURM job ID (\d+)\.", output)
    return {job: slurm_id for jobs, slurm_id in found for job in jobs.split(",")}


def executed_jobs(output: str) -> list[tuple[str, str, bool, str]]:
    """(kind, rule, grouped, jobid) of every job a run started; grouped jobs are printed indented."""
    jobs, header = [], None
    for line in output.splitlines():
        m = re.match(r"^(\s*)(localrule|rule) (\w+):$", line)
        if m:
            header = (m.group(2), m.group(3), bool(m.group(1)))
            continue
        m = re.match(r"^\s*jobid: (\d+)$", line)
        if m and header:
            jobs.append((*header, m.group(1)))
            header = None
    return jobs


def test_reduced_demo_through_slurm_equals_local_run(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    cfg = reduced_config()
    slurm_dir, local_dir = tmp_path / "slurm", tmp_path / "local"
    for d in (slurm_dir, local_dir):
        d.mkdir()
        write_config(d / "config.yaml", cfg)
    t0 = time.monotonic()
    with open(tmp_path / "local.out", "w") as local_log:
        # the local reference run, side by side with the SLURM one
        local = subprocess.Popen(
            [
                "timeout",
                "-k",
                "30",
                str(RUN_TIMEOUT_S),
                SNAKEMAKE,
                "--snakefile",
                str(REPO / "Snakefile"),
                "--cores",
                "2",
                "--configfile",
                "config.yaml",
                *THREADS,
            ],
            cwd=local_dir,
            stdout=local_log,
            stderr=subprocess.STDOUT,
        )
        try:
            run = slurm_cluster.snakemake(
                slurm_dir,
                "--snakefile",
                str(REPO / "Snakefile"),
                "--configfile",
                "config.yaml",
                *THREADS,
                "--slurm-init-seconds-before-status-checks",
                "3",  # react to finished jobs sooner
                timeout=RUN_TIMEOUT_S,
            )
        finally:
            local_rc = local.wait(timeout=RUN_TIMEOUT_S + 60)
    print(f"\nSLURM run {run.seconds:.0f} s; both runs (side by side) {time.monotonic() - t0:.0f} s")
    assert not run.timed_out and run.returncode == 0, run.output[-4000:]
    assert local_rc == 0, (tmp_path / "local.out").read_text()[-4000:]

    # every job went through sbatch once, with its SLURM log, and no group job; with slurm-array-jobs
    # the concepts jobs that are ready together go as one job array (a lone ready job as a plain job)
    jobs = executed_jobs(run.output)
    subs = submissions(run.output)
    arrays = array_submissions(run.output)
    assert {rule for _, rule, _, _ in jobs} - {"all"} == RULES
    assert all(kind == "rule" for kind, rule, _, _ in jobs if rule != "all"), jobs  # no local rule
    assert not any(grouped for _, _, grouped, _ in jobs), "no group jobs"
    executed = [(rule, jobid) for _, rule, _, jobid in jobs if rule != "all"]
    assert not set(subs) & set(arrays)
    assert set(subs) | set(arrays) == {jobid for _, jobid in executed}
    assert set(arrays) <= {jobid for rule, jobid in executed if rule in ARRAYS}
    logs = (slurm_dir / ".snakemake" / "slurm_logs").resolve()
    for rule, jobid in executed:
        if jobid in subs:
            slurm_id, log = subs[jobid]
            assert log.is_file() and log.parent.relative_to(logs).parts[0] == f"rule_{rule}"
    for array in set(arrays.values()):
        tasks = sorted((logs / "rule_concepts").glob(f"{array}_*.log"))
        assert len(tasks) == list(arrays.values()).count(array), tasks
    print(f"concepts jobs in job arrays: {len(arrays)} of {sum(rule in ARRAYS for rule, _ in executed)}")

    # the same numbers as the local run, file by file
    fa, fb = result_files(slurm_dir / "results"), result_files(local_dir / "results")
    assert fa.keys() == fb.keys(), sorted(set(fa) ^ set(fb))
    assert any(k.startswith("compare/") for k in fa) and any(k.endswith(".safetensors") for k in fa)
    diffs = [d for rel in fa for d in compare_file(rel, fa[rel], fb[rel])]
    assert not diffs, "\n".join(diffs[:50])
