"""Process set-up shared by the workflow entry points: logging and thread limits."""

from __future__ import annotations

import logging
import os
import random
import sys
from pathlib import Path

import numpy as np


def setup_logging(log_path: str | os.PathLike | None, name: str = "rsvc") -> logging.Logger:
    """Send log records (and warnings, tqdm progress on stderr) to ``log_path``."""
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


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def bound_heap(mmap_threshold: int = 128 * 1024, trim_threshold: int = 128 * 1024, arena_max: int = 2) -> bool:
    """Stop glibc's heap from holding on to freed feature maps (CPU forward passes).

    glibc raises its mmap threshold (up to 32 MiB) each time a large block is
    freed, after which feature-map-sized blocks come from the heap and stay
    fragmented there: a resnet50 extraction job on CPU (batch 64) peaked at
    6.3 GB RSS with the defaults and 1.8 GB with these fixed thresholds
    (``benchmarks/extraction.py``), at about 30 % lower speed. Call it at the
    start of a process, before large allocations. Returns False (and does
    nothing) where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1
    ok &= mallopt(_M_ARENA_MAX, int(arena_max)) == 1
    return bool(ok)
