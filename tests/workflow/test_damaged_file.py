"""A result file damaged after a finished run: the job that reads it names it with the one command that
rebuilds it and everything made from it, and that command, taken from the message as printed, brings
every output back (a dry-run then has nothing to do). A plain rerun does not: the failed job lost its
outputs, but the final outputs are there (checked too, as the reason the message exists).

Set ``RSVC_TINY_RUN=<dir>`` to start from a completed tiny run (a copy) instead of ``tiny_run``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import run_snakemake

from rsvc.formats import read_concepts

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


def result_files(workdir: Path) -> set[str]:
    """Every output file (logs and benchmarks aside)."""
    out = workdir / "results"
    return {
        str(p.relative_to(workdir))
        for p in out.rglob("*")
        if p.is_file() and not {"logs", "benchmarks"} & set(p.relative_to(out).parts)
    }


def test_the_damaged_file_message_gives_the_command_that_rebuilds_everything(tmp_path, request):
    tiny = os.environ.get("RSVC_TINY_RUN")
    source = Path(tiny) if tiny else request.getfixturevalue("tiny_run")[0]
    workdir = tmp_path / "run"
    shutil.copytree(source, workdir, symlinks=True, ignore=shutil.ignore_patterns(".venv", ".git", "report*.html"))
    options = ("--cores", "2", "--configfile", str(workdir / "tiny.yaml"))
    before = result_files(workdir)

    damaged = sorted((workdir / "results" / "concepts" / "ps").glob("*.h5"))[0]
    data = damaged.read_bytes()
    damaged.write_bytes(data[: len(data) // 2])  # cut short, as by a killed copy
    # a later job reads it (here: the compare jobs, forced) and fails
    failed = run_snakemake("--forcerun", "compare", *options, cwd=workdir, check=False, timeout=900)
    assert failed.returncode != 0
    console = failed.stdout + failed.stderr
    m = re.search(r"DamagedFileError: (.*?): cannot be read as HDF5 .*? with `snakemake (--forcerun [^`]+)`", console)
    assert m, console[-4000:]
    assert m.group(1) == str(damaged.relative_to(workdir))
    assert not all((workdir / p).exists() for p in before), "the failed jobs lost outputs"
    assert "Nothing to be done" in run_snakemake("-n", *options, cwd=workdir).stdout  # why a plain rerun is not enough

    run_snakemake(*shlex.split(m.group(2)), *options, cwd=workdir, timeout=1200)  # the command, as printed
    assert "Nothing to be done" in run_snakemake("-n", *options, cwd=workdir).stdout
    assert result_files(workdir) == before  # every output is back
    read_concepts(damaged)  # and readable
