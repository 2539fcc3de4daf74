"""The reliability runs of the tiny demo (shared by ``test_run_guards.py`` and ``test_interruption.py``).

The analysis dataset is drawn by the test (the demo's ``eval`` scheme) and seeded with every kind of
odd and broken file (``tests/bad_images.py``), plus a fourth class ``star`` whose folders are empty and
on which the models are never trained. The *reference* run (fixture ``reference`` in ``conftest.py``)
goes through uninterrupted; the *interrupted* run starts from scratch in another folder and is killed
with SIGKILL (the whole process group) during training, while an activation file is being written and
during compare, each time resumed with ``--unlock`` / ``--rerun-incomplete`` (``run_interrupted``).
Both use ``--cores 2`` and two threads in the GPU rules.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import yaml
from bad_images import write_bad_images, write_ignored_files
from conftest import REPO, run_snakemake, snakemake_command, tiny_config, write_config

EMPTY_CLASS = "star"  # a class of the models' label space with empty folders and no training images


BAD_FOLDERS = ("train/ring", "val/cross")  # where the odd and broken files go


def reliability_config() -> dict:
    """The tiny demo with a fourth, empty class and the analysis data outside results/."""
    cfg = tiny_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    trained = list(cfg["synthetic"]["classes"])
    cfg["dataset"]["root"] = "data/eval"
    cfg["dataset"]["classes"] = trained + [EMPTY_CLASS]
    cfg["dataset"]["analyze_classes"] = [trained[0], EMPTY_CLASS]  # class 0 (planted square) and the empty one
    for spec in cfg["models"].values():
        spec["num_classes"] = len(trained) + 1
    return cfg


def prepare_workdir(workdir: Path, cfg: dict) -> dict:
    """Draw the analysis dataset, seed it with bad files, empty the extra class. Returns the files."""
    from rsvc.synthetic import make_dataset

    syn = cfg["synthetic"]
    root = workdir / cfg["dataset"]["root"]
    make_dataset(
        root,
        classes=list(syn["classes"]),
        n_per_split={k: v for k, v in syn["n_per_split"].items()},
        image_size=syn["image_size"],
        scheme="eval",
        seed=syn["seed"],
    )
    for split in ("train", "val", "test"):
        (root / split / EMPTY_CLASS).mkdir()
    bad, ignored = [], []
    for folder in BAD_FOLDERS:
        bad += write_bad_images(root / folder, prefix="odd")
        ignored += write_ignored_files(root / folder)
    write_config(workdir / "tiny.yaml", cfg)
    return {"bad": bad, "ignored": ignored, "root": root}


def snakemake_cmd(workdir: Path, *extra: str) -> list[str]:
    return snakemake_command(workdir, "--cores", "2", "--configfile", str(workdir / "tiny.yaml"), *extra)


def _processes_in(workdir: Path) -> list[str]:
    """Live (non-zombie) processes whose working directory is ``workdir``."""
    live, target = [], str(Path(workdir).resolve())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.readlink(proc / "cwd") != target:
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z":
                live.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200])
        except OSError:
            continue
    return live


def _new_files(root: Path, pattern: str, since: float) -> list[Path]:
    if not root.exists():
        return []
    found = []
    for p in root.rglob(pattern):
        try:
            if p.stat().st_mtime >= since:
                found.append(p)
        except FileNotFoundError:  # a temporary file renamed meanwhile
            continue
    return found


# (name, folder under results, file pattern, seconds to wait after it appears)
KILL_POINTS = [
    ("training", "logs/train_model", "*.log", 3.0),
    ("activations being written", "activations", ".shard*.h5.*.tmp", 0.0),
    ("compare", "logs/compare", "*.log", 3.0),
]


def _kill_during(workdir: Path, folder: str, pattern: str, delay: float, timeout: float = 1500) -> None:
    """Run the workflow (resuming) until a file matching ``pattern`` appears, then SIGKILL the group."""
    out = workdir / "results"
    log = open(workdir / "interrupted.log", "a")  # noqa: SIM115 - closed below
    start = time.time()
    proc = subprocess.Popen(
        snakemake_cmd(workdir, "--rerun-incomplete"),
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        while not _new_files(out / folder, pattern, start - 1):
            if proc.poll() is not None:
                raise AssertionError(
                    f"the workflow ended (rc {proc.returncode}) before the kill point {folder}/{pattern}"
                )
            if time.time() - start > timeout:
                raise AssertionError(f"kill point {folder}/{pattern} not reached in {timeout} s")
            time.sleep(0.1)
        time.sleep(delay)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        log.close()
    deadline = time.time() + 30
    while _processes_in(workdir) and time.time() < deadline:
        time.sleep(0.2)
    assert not _processes_in(workdir), f"processes survived the kill: {_processes_in(workdir)}"


def _assert_outputs_intact(out: Path) -> None:
    """Every HDF5 file under its final name opens and every dataset reads in full."""
    for path in out.rglob("*.h5"):
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)


def run_interrupted(workdir: Path) -> dict[str, list[str]]:
    """From scratch, killed at every kill point and resumed; returns the temporary files seen at each kill."""
    cfg = reliability_config()
    prepare_workdir(workdir, cfg)
    t0 = time.monotonic()
    stale = {}
    for name, folder, pattern, delay in KILL_POINTS:
        _kill_during(workdir, folder, pattern, delay)
        _assert_outputs_intact(workdir / "results")
        stale[name] = sorted(str(p.relative_to(workdir)) for p in (workdir / "results").rglob("*.tmp"))
        subprocess.run(snakemake_cmd(workdir, "--unlock"), cwd=workdir, check=True, capture_output=True, timeout=600)
    run_snakemake(
        "--cores", "2", "--configfile", str(workdir / "tiny.yaml"), "--rerun-incomplete", cwd=workdir, timeout=1800
    )
    print(f"interrupted run (3 kills, 4 starts): {time.monotonic() - t0:.0f} s; temporary files at the kills: {stale}")
    return stale


EXCLUDED = ("logs", "benchmarks")


def _output_files(out: Path) -> dict[str, Path]:
    """Outputs by relative path; logs, benchmarks and hidden temporary files left by killed jobs excluded."""
    files = {}
    for p in out.rglob("*"):
        rel = p.relative_to(out)
        if p.is_dir() or rel.parts[0] in EXCLUDED or any(part.startswith(".") for part in rel.parts):
            continue
        files[rel.as_posix()] = p
    return files


def _attrs(obj) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in obj.attrs.items()}


def _h5_differences(a: Path, b: Path) -> list[str]:
    diffs = []
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        items_a, items_b = {}, {}
        fa.visititems(lambda n, o: items_a.__setitem__(n, o))
        fb.visititems(lambda n, o: items_b.__setitem__(n, o))
        if set(items_a) != set(items_b):
            return [f"objects differ: {sorted(set(items_a) ^ set(items_b))[:5]}"]
        if _attrs(fa) != _attrs(fb):
            diffs.append("root attributes differ")
        for name, oa in items_a.items():
            ob = items_b[name]
            if _attrs(oa) != _attrs(ob):
                diffs.append(f"{name}: attributes differ")
            if isinstance(oa, h5py.Dataset):
                va, vb = oa[()], ob[()]
                if oa.dtype != ob.dtype or np.shape(va) != np.shape(vb):
                    diffs.append(f"{name}: dtype/shape differ")
                elif not np.array_equal(va, vb, equal_nan=oa.dtype.kind == "f"):
                    diffs.append(
                        f"{name}: values differ (max abs diff "
                        f"{np.nanmax(np.abs(va.astype(float) - vb.astype(float))) if oa.dtype.kind == 'f' else '-'})"
                    )
    return diffs


def _without_timing(obj):
    if isinstance(obj, dict):
        return {k: _without_timing(v) for k, v in obj.items() if k != "seconds"}
    return obj


def compare_runs(out_a: Path, out_b: Path) -> tuple[list[str], dict[str, int]]:
    """Differences between two results/ trees, and how many files of each type were compared."""
    fa, fb = _output_files(out_a), _output_files(out_b)
    diffs = [f"only in one run: {sorted(set(fa) ^ set(fb))}"] if set(fa) != set(fb) else []
    counts: dict[str, int] = {}
    for rel in sorted(set(fa) & set(fb)):
        suffix = Path(rel).suffix
        counts[suffix] = counts.get(suffix, 0) + 1
        if suffix == ".h5":
            diffs += [f"{rel}: {d}" for d in _h5_differences(fa[rel], fb[rel])]
        elif suffix == ".json":  # training metrics: all but the wall-clock time
            if _without_timing(json.loads(fa[rel].read_text())) != _without_timing(json.loads(fb[rel].read_text())):
                diffs.append(f"{rel}: differs")
        elif fa[rel].read_bytes() != fb[rel].read_bytes():  # tables, figures, checkpoints, images
            diffs.append(f"{rel}: bytes differ")
    return diffs, counts
