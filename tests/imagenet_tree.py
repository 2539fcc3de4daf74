"""A fake ImageNet folder tree for dry-runs and preflight checks at full scale.

``make_imagenet_tree(root)`` lays out ``root/{train,val}/<wnid>/`` for the 1000
wnids of ``experiments/imagenet_classes.txt`` (the standard layout, val sorted
into wnid folders), empty or with one tiny JPEG per folder. 2000 folders take
well under a second.
"""

from __future__ import annotations

import io
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGENET_CLASSES = REPO / "experiments" / "imagenet_classes.txt"


def imagenet_wnids(path: Path = IMAGENET_CLASSES) -> list[str]:
    """The 1000 wnids in the models' output order (first column of the class file)."""
    return [line.split("\t")[0].strip() for line in path.read_text().splitlines() if line.strip()]


def _tiny_jpeg(size: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (124, 116, 104)).save(buf, format="JPEG")
    return buf.getvalue()


def make_imagenet_tree(
    root: str | Path,
    splits: tuple[str, ...] = ("train", "val"),
    wnids: list[str] | None = None,
    images_per_class: int = 0,
    image_size: int = 8,
) -> Path:
    """Create ``root/<split>/<wnid>/`` for every wnid; returns ``root``.

    ``images_per_class`` copies of one tiny grey JPEG (``image_size`` px) go
    into each folder (0: empty folders, enough for ``snakemake -n``).
    """
    root = Path(root)
    wnids = imagenet_wnids() if wnids is None else wnids
    payload = _tiny_jpeg(image_size) if images_per_class else b""
    for split in splits:
        for wnid in wnids:
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(images_per_class):
                (folder / f"{wnid}_{i}.JPEG").write_bytes(payload)
    return root


def job_stats(stdout: str) -> dict[str, int]:
    """{rule: count, ..., "total": n} from the "Job stats" table of a dry-run."""
    table = stdout.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        m = re.match(r"(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def measured_dry_run(workdir: Path, config: Path, timeout: int = 600) -> tuple[dict[str, int], float, float]:
    """Job counts (:func:`job_stats`), wall seconds and CPU seconds (user + sys) of `snakemake -n` of the
    repository's Snakefile with ``config``, in ``workdir``.

    `--quiet rules`: the full DAG and its job stats, without printing every job
    (about 1 s of the 5000-job dry-run).
    """
    snakemake = str(Path(sys.executable).parent / "snakemake")
    cmd = [snakemake, "--snakefile", str(REPO / "Snakefile"), "-n", "--quiet", "rules", "--configfile", str(config)]
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise AssertionError(f"dry run failed in {workdir} ({proc.returncode}):\n{proc.stderr[-4000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return job_stats(proc.stdout), wall, cpu
