"""A one-node SLURM cluster on 127.0.0.1 as a pytest fixture, and helpers to run
snakemake through it.

Usage in a test module::

    from slurm.fixtures import SlurmCluster, slurm_cluster  # noqa: F401 (fixture)

    pytestmark = pytest.mark.slurm

    def test_x(slurm_cluster: SlurmCluster, tmp_path):
        res = slurm_cluster.snakemake(tmp_path, "-s", SNAKEFILE, timeout=240)

The fixture is module scoped: it starts the cluster with
`tests/slurm/localcluster.sh start` (installing the Debian packages on first use)
and stops it at teardown. It skips, with the reason, when the cluster cannot be
had here (not root, no apt-get and no SLURM installed, not Linux).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LOCALCLUSTER = HERE / "localcluster.sh"
TEST_PROFILE = HERE / "profile"
PRODUCTION_PROFILE = REPO / "profiles" / "slurm"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
START_TIMEOUT_S = 300  # includes apt-get update + install (about 10 s when measured)
TIMEOUT_RC = (124, 137)  # `timeout` killed the command (TERM, then KILL)


def unavailable_reason() -> str | None:
    """Why a local cluster cannot be started here, or None if it can."""
    if not sys.platform.startswith("linux"):
        return "SLURM test cluster needs Linux"
    if os.geteuid() != 0:
        return "SLURM test cluster needs root (Debian packages, daemons as SlurmUser=root)"
    installed = all(shutil.which(c) for c in ("slurmctld", "slurmd", "sbatch")) and Path("/usr/sbin/munged").exists()
    if not installed and shutil.which("apt-get") is None:
        return "SLURM is not installed and apt-get is unavailable to install it"
    if not SNAKEMAKE.exists():
        return f"snakemake not found next to the interpreter: {SNAKEMAKE}"
    return None


@dataclass(frozen=True)
class SnakemakeRun:
    """One snakemake invocation: exit status, merged stdout+stderr, wall time (s)."""

    returncode: int
    output: str
    seconds: float

    @property
    def timed_out(self) -> bool:
        return self.returncode in TIMEOUT_RC


@dataclass(frozen=True)
class SlurmCluster:
    """A running local cluster. `env`: the environment its clients need."""

    statedir: Path
    env: dict[str, str]

    def run(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a SLURM client (or anything) against this cluster; text output."""
        return subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout)

    def job(self, jobid: int | str) -> dict[str, str]:
        """`scontrol show job -o <jobid>` as a dict (JobState, Partition, NumCPUs,
        MinMemoryNode, TimeLimit, ...). Finished jobs stay visible for MinJobAge=600 s."""
        res = self.run("scontrol", "show", "job", "-o", str(jobid))
        if res.returncode != 0:
            raise RuntimeError(f"scontrol show job {jobid}: {res.stderr}")
        fields = {}
        for token in res.stdout.split():
            key, sep, value = token.partition("=")
            if sep:
                fields.setdefault(key, value)
        return fields

    def snakemake(
        self,
        workdir: Path,
        *args: str,
        timeout: int = 240,
        profiles: tuple[Path, ...] = (PRODUCTION_PROFILE, TEST_PROFILE),
    ) -> SnakemakeRun:
        """Run snakemake in `workdir` through the profiles (production, then the
        small-node override), under `timeout -k 30 <timeout>`: the SLURM executor
        can wait forever when it loses track of a job, and then ignores SIGTERM."""
        cmd = ["timeout", "-k", "30", str(timeout), str(SNAKEMAKE)]
        for profile in profiles:
            cmd += ["--profile", str(profile)]
        cmd += list(args)
        t0 = time.monotonic()
        res = subprocess.run(
            cmd,
            cwd=workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout + 60,
        )
        return SnakemakeRun(res.returncode, res.stdout, time.monotonic() - t0)


def start_cluster(statedir: Path) -> SlurmCluster:
    """Start (idempotent) the cluster whose files live in `statedir`."""
    res = subprocess.run(
        [str(LOCALCLUSTER), "start", str(statedir)],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )
    if res.returncode != 0:
        raise RuntimeError(f"localcluster.sh start failed:\n{res.stderr[-4000:]}")
    env = dict(os.environ)
    env["SLURM_CONF"] = str(statedir / "slurm.conf")
    env["PATH"] = f"{statedir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # a cluster of our own: no SLURM job context leaks in from an outer allocation
    for key in [k for k in env if k.startswith(("SLURM_", "SBATCH_", "SRUN_"))]:
        if key != "SLURM_CONF":
            del env[key]
    return SlurmCluster(statedir=statedir, env=env)


def stop_cluster(statedir: Path) -> None:
    """Cancel leftover jobs and stop the daemons of `statedir` (idempotent)."""
    subprocess.run([str(LOCALCLUSTER), "stop", str(statedir)], check=True, timeout=120)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A running one-node cluster (partition `debug`) for the whole test module."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    statedir = tmp_path_factory.mktemp("slurmcluster")
    try:
        cluster = start_cluster(statedir)
    except Exception:
        stop_cluster(statedir)
        raise
    try:
        yield cluster
    finally:
        stop_cluster(statedir)
