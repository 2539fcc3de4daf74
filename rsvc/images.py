"""Robust image loading and the model-independent canonical square image.

Every image goes through the same pixels pipeline, whatever model looks at it:

1. :func:`load_rgb`: decode the file fully into an 8-bit RGB ``PIL.Image``
   (format sniffed from the content, EXIF orientation applied, transparency
   composited on white);
2. :func:`canonical_image`: resize the shorter side to ``image_size``
   (bilinear) and centre-crop to an ``image_size`` square;
3. :func:`to_model_input`: resize a batch of canonical images (or of patches
   cut from them, see :mod:`rsvc.patches`) to the model's input size and
   normalise it with the model's own mean/std.

Steps 1-2 (and the patch grid) do not depend on the model, so two models
compared by RSVC always see the same pixels; only step 3 is per model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import PIL.Image
import PIL.ImageOps

if TYPE_CHECKING:
    import torch  # imported on use: the explorer and galleries cut patches without torch

IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"})


class ImageLoadError(Exception):
    """An image file that cannot be decoded (truncated, corrupt, not an image)."""


def _to_rgb(img: PIL.Image.Image) -> PIL.Image.Image:
    """Convert any PIL mode to 8-bit RGB (transparency composited on white)."""
    if img.mode == "P":
        # palette images may carry transparency as an info entry: go through RGBA
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # high bit depth grayscale: PIL's convert("L") clips instead of rescaling
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 / 65535.0 if img.mode != "F" or arr.max(initial=0) > 1.0 else 255.0
        arr = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
        img = PIL.Image.fromarray(arr, mode="L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = PIL.Image.alpha_composite(white, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, RGBX
    return img


def load_rgb(path: str | os.PathLike) -> PIL.Image.Image:
    """Decode ``path`` fully into an 8-bit RGB image.

    Handles CMYK, grayscale (``L``, ``I;16``), palette (with transparency),
    RGBA/LA (composited on white), files whose extension lies about the format
    (PIL sniffs the content) and EXIF orientation. Truncated or unreadable
    files raise :class:`ImageLoadError` ``"<path>: <reason>"``; truncated
    images are never silently padded (``LOAD_TRUNCATED_IMAGES`` is not used).
    """
    try:
        with PIL.Image.open(path) as img:
            img.load()
            img = PIL.ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except Exception as exc:  # decoders of untrusted files raise many types
        raise ImageLoadError(f"{path}: {type(exc).__name__}: {exc}") from exc


def canonical_uint8(img: PIL.Image.Image, image_size: int) -> np.ndarray:
    """Shorter side to ``image_size`` (bilinear), centre crop: ``(S, S, 3)`` uint8."""
    w, h = img.size
    # torchvision's Resize(int) convention: the longer side is truncated, not rounded
    if w <= h:
        new_w, new_h = image_size, int(image_size * h / w)
    else:
        new_w, new_h = int(image_size * w / h), image_size
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), PIL.Image.Resampling.BILINEAR)
    left = round((new_w - image_size) / 2.0)
    top = round((new_h - image_size) / 2.0)
    img = img.crop((left, top, left + image_size, top + image_size))
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def canonical_image(img: PIL.Image.Image, image_size: int) -> torch.Tensor:
    """The canonical square: ``(3, S, S)`` float32 in ``[0, 1]``, ``S = image_size``."""
    import torch

    return torch.from_numpy(canonical_uint8(img, image_size).copy()).permute(2, 0, 1).float().div_(255.0)


def to_model_input(
    x: torch.Tensor, input_size: Sequence[int], mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Resize (bilinear, antialiased) and normalise a batch for one model.

    x: ``(N, 3, h, w)``, uint8 in ``[0, 255]`` or float in ``[0, 1]``;
    input_size: ``(3, H, W)`` or ``(H, W)`` from the model's data config.
    Returns ``(N, 3, H, W)`` float32 ``(x - mean) / std``.
    """
    import torch
    import torch.nn.functional as F

    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    size = tuple(int(s) for s in input_size[-2:])
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder``, sorted by name; suffixes case-insensitive, dotfiles skipped."""
    return sorted(
        p
        for p in Path(folder).iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
