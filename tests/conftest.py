"""Shared test helpers: run the workflow from the repository with a given config."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def snakemake_command(cwd: Path | str, *args: str) -> list[str]:
    """The command line of snakemake on the repository's Snakefile, working in ``cwd``."""
    return [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(cwd), *args]


def run_snakemake(
    *args: str, cwd: Path | str = REPO, timeout: int = 900, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run snakemake on the repository's Snakefile; returns the completed process (text)."""
    cmd = snakemake_command(cwd, *args)
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def class_file(results: Path, kind: str, group: str, class_id: str) -> Path:
    """A per-class file of a run: ``kind`` compare (group: the pair) or importance (group: the model),
    found in whichever shard folder holds it (rules/common.smk, PATHS)."""
    found = sorted(Path(results).glob(f"{kind}/{group}/shard*/{class_id}.h5"))
    assert len(found) == 1, f"{kind} file of {group} / {class_id}: {found}"
    return found[0]


def grid_rows(n_img: int, P: int):
    """``rsvc.sampling.RowSet`` of ``n_img`` images ``img00, img01, ...`` with ``P`` patches each, in grid order."""
    import numpy as np

    from rsvc.sampling import RowSet

    return RowSet(
        np.array([f"img{i:02d}" for i in range(n_img)], dtype=object),
        np.repeat(np.arange(n_img), P),
        np.tile(np.arange(P), n_img),
    )


def seeded_model(spec, seed: int = 0):
    """``rsvc.models.create_model(spec)`` after ``torch.manual_seed(seed)`` (reproducible random weights)."""
    import torch

    from rsvc.models import create_model

    torch.manual_seed(seed)
    return create_model(spec)


@pytest.fixture(scope="module")
def resnet(request):
    """The test module's ``RESNET`` spec, built with seeded random weights."""
    return seeded_model(request.module.RESNET)


@pytest.fixture(scope="module")
def vit(request):
    """The test module's ``VIT`` spec, built with seeded random weights."""
    return seeded_model(request.module.VIT)


def run_paths(workdir: Path, cfg: dict):
    """The files of the run of ``cfg`` in ``workdir`` (:class:`rsvc.paths.RunPaths`, as the rules name them)."""
    from rsvc.paths import RunPaths
    from rsvc.settings import with_defaults

    return RunPaths.from_config(with_defaults(cfg), root=workdir)


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def dry_run_jobs(workdir: Path, cfg: dict, config_path: Path | None = None) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry-run of ``cfg`` in ``workdir`` would execute
    (the config is written to ``config_path``, default ``workdir/tiny.yaml``)."""
    config = write_config(config_path or workdir / "tiny.yaml", cfg)
    proc = run_snakemake("-n", "--configfile", str(config), cwd=workdir, timeout=300)
    jobs = []
    # grouped jobs are printed indented under "group job ...": allow leading spaces
    for block in re.split(r"\n(?=\s*(?:local)?rule \w+:)", proc.stdout):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if m:
            w = re.search(r"wildcards: (.*)", block)
            jobs.append((m.group(1), w.group(1) if w else ""))
    return jobs


@pytest.fixture
def demo_config() -> dict:
    """The embedded demo config as a dict (a fresh copy per test)."""
    return yaml.safe_load((REPO / "config.yaml").read_text())


def tiny_config(base: dict) -> dict:
    """The demo, shrunk: 3 classes, 64 px images, k = 5, 15 training epochs (a few seconds:
    enough for both models to classify every class, so every class is compared)."""
    cfg = copy.deepcopy(base)
    classes = cfg["synthetic"]["classes"][:3]
    cfg["synthetic"].update(classes=classes, n_per_split={"train": 36, "val": 12, "test": 2}, image_size=64)
    cfg["dataset"].update(classes=classes, image_size=64, patch_size=16)
    for spec in cfg["models"].values():
        spec["num_classes"] = 3
        spec["train"].update(epochs=15, input_size=32, batch_size=32)
        spec["pretrained_cfg_overlay"]["input_size"] = [3, 32, 32]
    cfg["concepts"].update(
        k=5, concept_images=12, shared_images=20, heldout_images=8, min_heldout_images=4, max_iter=100
    )
    cfg["gallery"].update(n=4, concepts_per_direction=1)
    cfg["extraction"].update(batch_size=64, predict_batch_size=64, num_workers=0)
    return cfg


def run_tiny(workdir: Path, cfg: dict, *extra: str):
    config = write_config(workdir / "tiny.yaml", cfg)
    return run_snakemake("--cores", "2", "--configfile", str(config), *extra, cwd=workdir, timeout=1200)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(workdir, config) of ONE completed tiny run shared by all tests: copy it before changing it."""
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg = tiny_config(base)
    workdir = tmp_path_factory.mktemp("tiny")
    run_tiny(workdir, cfg)
    return workdir, cfg


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """(workdir, config, files) of the uninterrupted reliability run (``tests/reliability_runs.py``),
    shared by every test that reads it: copy before changing."""
    import time

    from reliability_runs import prepare_workdir, reliability_config

    workdir = tmp_path_factory.mktemp("reference")
    cfg = reliability_config()
    files = prepare_workdir(workdir, cfg)
    t0 = time.monotonic()
    run_snakemake("--cores", "2", "--configfile", str(workdir / "tiny.yaml"), cwd=workdir, timeout=1800)
    print(f"reference run: {time.monotonic() - t0:.0f} s")
    return workdir, cfg, files


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium (``tests/chromium.py``), installed with apt-get if missing; skips when impossible."""
    from chromium import Chromium, NoChromium, find_chromium

    try:
        binary = find_chromium()
    except NoChromium as exc:
        pytest.skip(str(exc))
    chromium = Chromium(binary, tmp_path_factory.mktemp("chromium_profile"))
    yield chromium
    chromium.close()


# ------------------------------------------------------------------ measurements
# Numbers a test measures but must not assert (they depend on the processor, e.g. how
# often NMF lands in another optimum): printed at the end of the run, under "measurements".
_MEASUREMENTS: list[str] = []


@pytest.fixture
def measurement(request):
    """``measurement(text)``: report a measured number at the end of the pytest run."""

    def record(text: str) -> None:
        _MEASUREMENTS.append(f"{request.node.name}: {text}")

    return record


def pytest_terminal_summary(terminalreporter):
    if _MEASUREMENTS:
        terminalreporter.section("measurements (this machine)")
        for line in _MEASUREMENTS:
            terminalreporter.write_line(line)
