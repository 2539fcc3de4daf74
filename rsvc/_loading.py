"""Image datasets and loaders of the forward passes: decoding, the canonical square, the patch grid.

DataLoader workers decode each image (:func:`rsvc.images.load_rgb`), make the canonical square and cut the
patch grid (uint8, model independent), or apply the model's own timm evaluation transform.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from rsvc.images import ImageLoadError, canonical_uint8, load_rgb
from rsvc.patches import extract_patches
from rsvc.settings import ExtractionSettings


class CanonicalImages(Dataset):
    """Item i -> (i, uint8 tensor, reason): the patches ``(P, 3, p, p)`` of image i,
    or its canonical image ``(1, 3, S, S)`` when ``patch_size`` is None; an empty
    tensor and the reason when the file cannot be read."""

    def __init__(self, paths: Sequence[str | os.PathLike], image_size: int, patch_size: int | None):
        self.paths = list(paths)
        self.image_size = image_size
        self.patch_size = patch_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, str]:
        side = self.patch_size or self.image_size
        try:
            canon = canonical_uint8(load_rgb(self.paths[i]), self.image_size)
        except ImageLoadError as exc:
            return i, torch.empty((0, 3, side, side), dtype=torch.uint8), str(exc)
        x = torch.from_numpy(canon.copy()).permute(2, 0, 1).unsqueeze(0)
        if self.patch_size is not None:
            x = extract_patches(x, self.patch_size)
        return i, x.contiguous(), ""


class TimmEvalImages(Dataset):
    """Item i -> (i, float tensor ``(1, 3, H, W)`` normalised by the model's own timm evaluation
    transform (resize by ``crop_pct`` with its interpolation, centre crop), reason)."""

    def __init__(self, paths: Sequence[str | os.PathLike], transform: Any, input_size: Sequence[int]):
        self.paths = list(paths)
        self.transform = transform
        self.input_size = tuple(input_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, str]:
        try:
            img = load_rgb(self.paths[i])
        except ImageLoadError as exc:
            return i, torch.empty((0, *self.input_size)), str(exc)
        return i, self.transform(img).unsqueeze(0), ""


def timm_eval_transform(model: nn.Module):
    """timm's own evaluation transform of ``model``: ``create_transform(**resolve_data_config(model=model))``."""
    import timm.data

    return timm.data.create_transform(**timm.data.resolve_data_config(model=model))


def collate(batch: list[tuple[int, torch.Tensor, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """-> (item indices (b,), rows per item (b,), all rows concatenated, reasons (b,))."""
    index = torch.tensor([b[0] for b in batch], dtype=torch.int64)
    counts = torch.tensor([b[1].shape[0] for b in batch], dtype=torch.int64)
    return index, counts, torch.cat([b[1] for b in batch]), [b[2] for b in batch]


def make_loader(
    dataset: Dataset, items_per_batch: int, settings: ExtractionSettings, device: torch.device
) -> DataLoader:
    workers = settings.num_workers
    return DataLoader(
        dataset,
        batch_size=items_per_batch,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
    )


def progress_bar(total: int, unit: str, desc: str) -> tqdm:
    tty = sys.stderr.isatty()
    return tqdm(total=total, unit=unit, unit_scale=True, desc=desc, file=sys.stderr, mininterval=0.5 if tty else 30.0)
