"""The CRAFT patch grid on the canonical square image.

Patches of ``patch_size`` pixels are cut with stride ``int(0.8 * patch_size)``
(``torch.Tensor.unfold``), in row-major order (left to right, then top to
bottom). For the paper's canonical case (``image_size=224``, ``patch_size=64``,
stride 51) this is a 4 x 4 grid of 16 patches. The grid depends only on the
canonical image, never on the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rsvc.specs import patch_stride

if TYPE_CHECKING:
    import torch  # only extract_patches takes tensors; patch_boxes is torch-free


def _starts(image_size: int, patch_size: int, stride: int) -> np.ndarray:
    if not 0 < patch_size <= image_size or stride <= 0:
        raise ValueError(f"invalid patch grid: image_size={image_size}, patch_size={patch_size}, stride={stride}")
    return np.arange(0, image_size - patch_size + 1, stride)


def patch_boxes(image_size: int, patch_size: int, stride: int | None = None) -> np.ndarray:
    """Boxes of the grid in canonical pixels: ``(P, 4)`` int ``x0, y0, x1, y1`` (x1, y1 exclusive).

    Row-major, the order of :func:`extract_patches`.
    """
    stride = patch_stride(patch_size) if stride is None else stride
    starts = _starts(image_size, patch_size, stride)
    y0, x0 = np.meshgrid(starts, starts, indexing="ij")
    x0, y0 = x0.ravel(), y0.ravel()
    return np.stack([x0, y0, x0 + patch_size, y0 + patch_size], axis=1).astype(np.int64)


def extract_patches(images: torch.Tensor, patch_size: int, stride: int | None = None) -> torch.Tensor:
    """Cut every image into the grid.

    images: ``(B, 3, S, S)`` (any dtype) -> ``(B * P, 3, patch_size, patch_size)``,
    image-major then row-major, consistent with :func:`patch_boxes`.
    """
    stride = patch_stride(patch_size) if stride is None else stride
    _, c, h, w = images.shape
    if h != w:
        raise ValueError(f"canonical images must be square, got {h}x{w}")
    _starts(h, patch_size, stride)  # validates the grid
    # (B, C, ny, nx, p, p) -> (B, ny, nx, C, p, p)
    grid = images.unfold(2, patch_size, stride).unfold(3, patch_size, stride)
    return grid.permute(0, 2, 3, 1, 4, 5).reshape(-1, c, patch_size, patch_size)
