"""Process set-up shared by the workflow entry points: logging and thread limits."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
from pathlib import Path

import numpy as np


def _report_to_console(exc_type, exc, tb) -> None:
    """``sys.excepthook`` of a job. The errors that are messages to the user (a full disk, a damaged
    input: :class:`rsvc.io.DiskFullError`, :class:`rsvc.formats.DamagedFileError`) go to the log with
    their traceback and to the console alone (the job's own stderr, which setup_logging redirected to the
    log). A full disk then ends the process at once with status 1: HDF5 crashes (SIGSEGV) when it closes,
    at exit, a file whose flush failed. Other exceptions get Python's usual traceback (into the log)."""
    from rsvc.formats import DamagedFileError
    from rsvc.io import DiskFullError, disk_full_error, is_disk_full

    if not isinstance(exc, (DiskFullError, DamagedFileError)) and is_disk_full(exc):  # outside rsvc.io's writers
        import re

        where = getattr(exc, "filename", None) or re.search(r"filename = '([^']+)'", str(exc))
        where = where.group(1) if isinstance(where, re.Match) else where
        full = disk_full_error(Path(where or "unknown file"), exc)
        full.__cause__ = exc
        exc_type, exc = DiskFullError, full
    if not isinstance(exc, (DiskFullError, DamagedFileError)):
        sys.__excepthook__(exc_type, exc, tb)
        return
    import traceback

    with contextlib.suppress(Exception):  # the log is on the full disk too, perhaps
        traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
        sys.stderr.flush()
    with contextlib.suppress(Exception):
        sys.__stderr__.write(f"\n{exc_type.__name__}: {exc.strerror or exc}\n")
        sys.__stderr__.flush()
    if isinstance(exc, DiskFullError):
        os._exit(1)  # the exit status of any uncaught exception


def setup_logging(log_path: str | os.PathLike | None, name: str = "rsvc") -> logging.Logger:
    """Send log records (and warnings, tqdm progress on stderr) to ``log_path``; a full disk ends the job
    with its reason on the console (:func:`_report_to_console`)."""
    sys.excepthook = _report_to_console
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_path, "w", buffering=1)  # noqa: SIM115 - lives for the job
        sys.stderr = stream
        handlers = [logging.StreamHandler(stream)]
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)
    return logging.getLogger(name)


def limit_threads(n: int) -> None:
    """Use at most ``n`` threads in BLAS, OpenMP and torch (deterministic, no oversubscription)."""
    n = max(1, int(n))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        pass
    torch = sys.modules.get("torch")  # only if the job uses torch: importing it costs seconds
    if torch is not None:
        torch.set_num_threads(n)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass
