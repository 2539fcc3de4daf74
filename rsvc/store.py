"""Reading stored activations (torch-free, so CPU analysis jobs start fast).

The files are written by :func:`rsvc.activations.extract_to_h5`.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import h5py
import numpy as np
import pandas as pd

from rsvc.io import read_strings


def read_class_activations(
    path: str | os.PathLike, class_id: str, layers: Sequence[str] | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """-> ``(acts {layer: (n_patches, d) float32}, image_ids (n_images,) str,
    patch_image (n_patches,) int64, patch_index (n_patches,) int64)``; ``layers=None`` reads all,
    in the file's layer order. KeyError: the file has no such class; ValueError: it lacks a layer."""
    with h5py.File(path, "r") as f:
        if class_id not in f or "acts" not in f[class_id]:
            raise KeyError(f"{path}: no class {class_id!r}")
        g = f[class_id]
        if layers is None:
            layers = [n for n in json.loads(f.attrs["layers"]) if n in g["acts"]]
        missing = [n for n in layers if n not in g["acts"]]
        if missing:
            raise ValueError(f"{path}: class {class_id!r} has no layers {missing}; "
                             "delete the file and rerun to extract them")
        acts = {n: g["acts"][n][()].astype(np.float32, copy=False) for n in layers}
        return acts, read_strings(g["image_ids"]), g["patch_image"][()], g["patch_index"][()]


def read_skipped(path: str | os.PathLike) -> pd.DataFrame:
    """The unreadable images of an activation file: columns class_id, image_id, path, reason."""
    with h5py.File(path, "r") as f:
        return pd.DataFrame({c: read_strings(f["skipped"][c]) for c in ("class_id", "image_id", "path", "reason")})
