"""The SLURM profile against a real one-node cluster on localhost.

Runs tests/slurm_toy/Snakefile through `--profile profiles/slurm --profile
tests/slurm/profile` and checks, with `scontrol show job`, what reached sbatch.
About 2 minutes; installs the Debian SLURM packages on first use (root only).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO
from slurm import fixtures
from slurm.fixtures import SlurmCluster, SnakemakeRun

pytestmark = pytest.mark.slurm
slurm_cluster = fixtures.slurm_cluster  # the cluster fixture of tests/slurm/fixtures.py

SNAKEFILE = REPO / "tests" / "slurm_toy" / "Snakefile"
ITEMS = (1, 2, 3)
# tests/slurm/profile: default-resources and cores
MEM_MB, RUNTIME_MIN, CORES = 500, 5, 2


@dataclass(frozen=True)
class ToyRun:
    workdir: Path
    run: SnakemakeRun
    files: dict[str, str]  # results/<name> -> content, read right after the run
    logs: tuple[str, ...]  # .snakemake/slurm_logs/... relative paths


def slurm_logs(workdir: Path) -> tuple[str, ...]:
    root = workdir / ".snakemake" / "slurm_logs"
    return tuple(sorted(str(p.relative_to(root)) for p in root.rglob("*.log")))


def minutes(limit: str) -> int:
    """SLURM TimeLimit ([D-]HH:MM:SS or MM:SS) in minutes."""
    days, _, hms = limit.rpartition("-")
    parts = [int(x) for x in hms.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    h, m, s = parts
    return (int(days or 0) * 24 + h) * 60 + m + math.ceil(s / 60)


@pytest.fixture(scope="module")
def toy_run(slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> ToyRun:
    """The toy workflow, run once to completion (other tests reuse its workdir)."""
    workdir = tmp_path_factory.mktemp("toy")
    run = slurm_cluster.snakemake(workdir, "-s", str(SNAKEFILE), timeout=240)
    files = {p.name: p.read_text() for p in sorted((workdir / "results").glob("*.txt"))}
    return ToyRun(workdir, run, files, slurm_logs(workdir))


def test_every_job_goes_through_sbatch(slurm_cluster: SlurmCluster, toy_run: ToyRun) -> None:
    run = toy_run.run
    assert not run.timed_out, run.output[-3000:]
    assert run.returncode == 0, run.output[-3000:]
    # outputs: sum of squares, by a closed form
    assert int(toy_run.files["total.txt"]) == sum(i * i for i in ITEMS)
    jobid, array_id = {}, {}  # results file -> SLURM_JOB_ID (and SLURM_ARRAY_JOB_ID) seen inside the job
    for name, content in toy_run.files.items():
        if name != "total.txt":
            value, jid, *array = content.split()
            jobid[name] = jid
            array_id[name] = array[0] if array else None
            i = int(re.search(r"_(\d+)\.txt", name).group(1))
            assert int(value) == (i if name.startswith("data") else i * i)
    assert all(j.isdigit() for j in jobid.values()), jobid  # not "none": inside SLURM
    make_ids = {jobid[f"data_{i}.txt"] for i in ITEMS}
    assert len(make_ids) == len(ITEMS)  # one submission per make job
    # concepts: one sbatch and one 1-cpu allocation per job (profiles/slurm: no group, no array)
    assert {array_id[f"square_{i}.txt"] for i in ITEMS} == {"none"}
    concepts_ids = {jobid[f"square_{i}.txt"] for i in ITEMS}
    assert len(concepts_ids) == len(ITEMS) and not concepts_ids & make_ids

    # every job left its SLURM log (slurm-keep-successful-logs)
    logs = set(toy_run.logs)
    for i in ITEMS:
        assert f"rule_make/{i}/{jobid[f'data_{i}.txt']}.log" in logs
    for i in ITEMS:
        assert f"rule_concepts/{i}/{jobid[f'square_{i}.txt']}.log" in logs, sorted(logs)
    total_logs = [p for p in logs if p.startswith("rule_total/")]
    assert len(total_logs) == 1
    assert len(logs) == 2 * len(ITEMS) + 1

    # what reached sbatch: partition, cpus, memory, runtime from the profile
    for jid in make_ids:
        job = slurm_cluster.job(jid)
        assert job["JobState"] == "COMPLETED"
        assert job["Partition"] == "debug"
        assert int(job["NumCPUs"]) == 1
        assert job["MinMemoryNode"] == f"{MEM_MB}M"
        assert minutes(job["TimeLimit"]) == RUNTIME_MIN
    # the concepts jobs: each the request of one job (1 cpu, its runtime), not a group's sum
    for jid in concepts_ids:
        job = slurm_cluster.job(jid)
        assert job["JobState"] == "COMPLETED"
        assert job["Partition"] == "debug"
        assert int(job["NumCPUs"]) == 1
        assert minutes(job["TimeLimit"]) == RUNTIME_MIN


def test_failing_rule_is_reported_failed_and_retried_bigger(slurm_cluster: SlurmCluster, toy_run: ToyRun) -> None:
    run = slurm_cluster.snakemake(
        toy_run.workdir, "-s", str(SNAKEFILE), "--forcerun", "total",
        "--config", "fail=1", "--retries", "1", timeout=180,
    )  # fmt: skip
    assert not run.timed_out, run.output[-3000:]
    assert run.returncode != 0
    failed = re.findall(r"SLURM-job '(\d+)' failed, SLURM status is: 'FAILED'", run.output)
    assert len(failed) == 2, run.output[-3000:]  # attempt 1 and the retry
    # memory and runtime grow with `attempt` ("500 * attempt", "5 * attempt")
    for attempt, jid in enumerate(failed, start=1):
        job = slurm_cluster.job(jid)
        assert job["JobState"] == "FAILED"
        assert job["MinMemoryNode"] == f"{attempt * MEM_MB}M"
        assert minutes(job["TimeLimit"]) == attempt * RUNTIME_MIN
        log = toy_run.workdir / ".snakemake" / "slurm_logs" / "rule_total" / f"{jid}.log"
        assert "toy failure requested by config fail=1" in log.read_text()
    assert not (toy_run.workdir / "results" / "total.txt").exists()


@pytest.mark.parametrize(
    "target, message",
    [
        ("oversize_cpus", "More processors requested than permitted"),
        ("oversize_mem", "Memory specification can not be satisfied"),
        ("bad_partition", "invalid partition specified: no_such_partition"),
    ],
)
def test_unsatisfiable_request_fails_at_submission(
    slurm_cluster: SlurmCluster, tmp_path: Path, target: str, message: str
) -> None:
    run = slurm_cluster.snakemake(tmp_path, "-s", str(SNAKEFILE), "--retries", "0", target, timeout=120)
    assert not run.timed_out, run.output[-3000:]
    assert run.returncode != 0
    assert "SLURM sbatch failed" in run.output
    assert message in run.output, run.output[-3000:]
    assert not (tmp_path / "results" / f"{target}.txt").exists()
    assert run.seconds < 60  # rejected at once, never queued
