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
