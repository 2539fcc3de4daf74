"""A full disk while an output is written: the job fails with a message that says the disk is full and
names the folder (never HDF5's SIGSEGV at exit), and no file is left under a final name.

The HDF5 case fills a real file system: a tmpfs of 128 KiB mounted for the test (needs root and mount;
skipped with the reason elsewhere), written by the activations writer in a job-like subprocess (the
crash it replaces happens at interpreter exit). The pure-Python writers are checked everywhere with
ENOSPC raised by the writer itself.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

from rsvc.io import DiskFullError, atomic_dir, write_table


def test_enospc_in_a_table_writer_is_a_disk_full_message_and_leaves_no_file(tmp_path, monkeypatch):
    out = tmp_path / "results" / "pairs" / "x" / "concepts.csv"
    kept = out.parent / "finished.csv"
    kept.parent.mkdir(parents=True)
    kept.write_text("a\n1\n")

    def to_csv_then_full(self, path, **kwargs):
        Path(path).write_text("class_id,cmcs\nhalf")  # a part is written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv_then_full)
    with pytest.raises(DiskFullError) as err:
        write_table(out, pd.DataFrame({"class_id": ["a"], "cmcs": [0.5]}))
    message = str(err.value)
    assert "the disk is full" in message and str(out.parent.resolve()) in message
    assert "run snakemake again with the options of your run" in message
    assert sorted(p.name for p in out.parent.iterdir()) == ["finished.csv"]  # no final, no temporary file
    assert kept.read_text() == "a\n1\n"


def test_enospc_in_a_folder_output_removes_the_half_built_folder(tmp_path):
    site = tmp_path / "explorer" / "a-vs-b"
    with pytest.raises(DiskFullError, match="the disk is full"), atomic_dir(site) as tmp:
        (tmp / "index.js").write_text("x")
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    assert list(site.parent.iterdir()) == []


WRITER = textwrap.dedent(
    """
    import sys

    import numpy as np
    import PIL.Image
    import torch

    from rsvc.activations import extract_to_h5
    from rsvc.settings import ExtractionSettings
    from rsvc.models import create_model
    from rsvc.specs import ModelSpec
    from rsvc.runtime import setup_logging

    out, log, images = sys.argv[1:4]
    setup_logging(log)  # as every workflow script: stderr goes to the job log
    spec = ModelSpec("rn", "resnet18", num_classes=2, model_kwargs={"channels": (16, 32, 64, 128), "stem_width": 16},
                     pretrained_cfg_overlay={"input_size": (3, 32, 32)})
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(16):
        paths.append(f"{images}/img{i}.png")
        PIL.Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(paths[-1])
    items = {"a": [(f"i{i}", p) for i, p in enumerate(paths[:8])], "b": [(f"i{i}", p) for i, p in enumerate(paths[8:])]}
    settings = ExtractionSettings(image_size=64, patch_size=16, batch_size=64, num_workers=0)
    layers = ["act1", "layer1.0.act1", "layer1.1.act2", "layer2.0.act1", "pre_logits"]
    extract_to_h5(create_model(spec), layers, items, out, settings, {})
    """
)


@pytest.fixture
def small_fs(tmp_path):
    """A 128 KiB tmpfs mounted at ``tmp_path / "fs"`` (unmounted afterwards)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("filling a small file system needs root and mount(8)")
    fs = tmp_path / "fs"
    fs.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(fs)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield fs
    subprocess.run(["umount", "-l", str(fs)], check=False)


def test_a_full_disk_while_hdf5_writes_activations_is_a_message_not_a_crash(tmp_path, small_fs):
    images = tmp_path / "images"
    images.mkdir()
    folder = small_fs / "activations" / "rn" / "on_rn" / "train"
    folder.mkdir(parents=True)
    (folder / "shard0000.h5").write_bytes(b"finished earlier")  # an output of an earlier job: kept
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.run(
        [sys.executable, str(script), str(folder / "shard0001.h5"), str(tmp_path / "job.log"), str(images)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])  # not -11 (SIGSEGV)
    console = proc.stderr
    assert f"DiskFullError: the disk is full: no space left on the file system of {folder}" in console, console
    assert "while writing shard0001.h5" in console
    assert "No space left on device" in (tmp_path / "job.log").read_text()  # HDF5's own words, in the log
    assert sorted(p.name for p in folder.iterdir()) == ["shard0000.h5"]  # nothing half written, nothing lost
    assert (folder / "shard0000.h5").read_bytes() == b"finished earlier"


def test_a_full_disk_outside_the_writers_is_reported_the_same_way(tmp_path):
    """ENOSPC from any other write of a job (a library's own file, the log's folder) ends it with the
    same message, the folder taken from the error."""
    script = tmp_path / "job.py"
    script.write_text(
        "import errno\n"
        "from rsvc.runtime import setup_logging\n"
        f"setup_logging({str(tmp_path / 'job.log')!r})\n"
        "raise OSError(errno.ENOSPC, 'No space left on device', '/data/results/cache/x.bin')\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 1
    assert "DiskFullError: the disk is full: no space left on the file system of /data/results/cache" in proc.stderr
    assert "OSError: [Errno 28]" in (tmp_path / "job.log").read_text()  # the original, in the log
