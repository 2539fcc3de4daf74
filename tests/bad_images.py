"""Writers of odd, broken and non-image files for the reliability tests.

:func:`write_bad_images` drops one file of each kind into a folder and says,
for each, whether :func:`rsvc.images.load_rgb` must read it and which RGB
pixels it must return. The expected pixels are closed forms computed here with
numpy from the pixels that were encoded (never by decoding the file again), so
they are an independent oracle for the loader:

- readable: CMYK JPEG, 8-bit and 16-bit grayscale, palette with a transparent
  index, RGBA and gray+alpha (composited on white), a PNG named ``.jpg``, a
  JPEG named ``.png``, a JPEG with EXIF orientation 6, an upper-case suffix,
  a 5 x 3 px image;
- unreadable: truncated JPEG, truncated PNG, an empty file, a text file and an
  HTML error page named like images;
- ignored (not images by name): a ``.txt`` file, an AppleDouble ``._*.png``
  file, ``.DS_Store``, ``Thumbs.db``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image

EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class BadImage:
    """One written file.

    expected: ``(H, W, 3)`` uint8 pixels ``load_rgb`` must return (None when
    unreadable); tol: largest allowed mean absolute difference (0 for lossless
    formats, a few grey levels for JPEG).
    """

    path: Path
    kind: str
    readable: bool
    expected: np.ndarray | None = None
    tol: float = 0.0


def reference_rgb(height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    """A non-square ``(H, W, 3)`` uint8 test picture of flat 8 px blocks (JPEG friendly)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(30, 226, size=(-(-height // 8), -(-width // 8), 3), dtype=np.uint8)
    return np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)[:height, :width].copy()


def _jpeg_bytes(img: PIL.Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=98, subsampling=0, **kwargs)
    return buf.getvalue()


def _png_bytes(img: PIL.Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.rint(rgb * a + 255.0 * (1.0 - a)).astype(np.uint8)


def write_bad_images(folder: str | Path, prefix: str = "odd", seed: int = 0) -> list[BadImage]:
    """Write one file of every odd and broken kind into ``folder``; names start with ``prefix``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rgb = reference_rgb(seed=seed)
    h, w, _ = rgb.shape
    gray = rgb.mean(axis=2).round().astype(np.uint8)
    gray3 = np.repeat(gray[..., None], 3, axis=2)
    alpha = np.tile(np.linspace(0, 255, w).round().astype(np.uint8), (h, 1))
    out: list[BadImage] = []

    def put(name: str, data: bytes, kind: str, expected: np.ndarray | None, tol: float = 0.0) -> None:
        path = folder / f"{prefix}_{name}"
        path.write_bytes(data)
        out.append(BadImage(path, kind, expected is not None, expected, tol))

    # ---- readable
    put("cmyk.jpg", _jpeg_bytes(PIL.Image.fromarray(rgb).convert("CMYK")), "cmyk_jpeg", rgb, 4.0)
    put("gray.png", _png_bytes(PIL.Image.fromarray(gray, mode="L")), "grayscale_8bit", gray3)
    put("gray16.png", _png_bytes(PIL.Image.fromarray(gray.astype(np.uint16) * 257)), "grayscale_16bit", gray3)
    palette = np.array([[0, 0, 0], [200, 30, 30], [30, 200, 30], [30, 30, 200]], dtype=np.uint8)
    index = (np.arange(h)[:, None] // 10 + np.arange(w)[None, :] // 10) % 4  # index 0 is transparent
    pimg = PIL.Image.fromarray(index.astype(np.uint8), mode="P")
    pimg.putpalette(palette.ravel().tolist())
    put(
        "palette.png",
        _png_bytes(pimg, transparency=0),
        "palette_transparent",
        np.where((index == 0)[..., None], np.uint8(255), palette[index]),
    )
    rgba = np.dstack([rgb, alpha])
    put("rgba.png", _png_bytes(PIL.Image.fromarray(rgba, mode="RGBA")), "rgba", _composite_on_white(rgb, alpha))
    la = np.dstack([gray, alpha])
    put(
        "gray_alpha.png",
        _png_bytes(PIL.Image.fromarray(la, mode="LA")),
        "gray_alpha",
        _composite_on_white(gray3, alpha),
    )
    put("png_named.jpg", _png_bytes(PIL.Image.fromarray(rgb)), "png_named_jpg", rgb)
    put("jpeg_named.png", _jpeg_bytes(PIL.Image.fromarray(rgb)), "jpeg_named_png", rgb, 4.0)
    # EXIF orientation 6: the viewer rotates the stored pixels 90 degrees clockwise,
    # so the stored pixels are the picture rotated 90 degrees counter-clockwise.
    exif = PIL.Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    stored = np.ascontiguousarray(np.rot90(rgb, k=1))
    put("exif_rot.jpg", _jpeg_bytes(PIL.Image.fromarray(stored), exif=exif.tobytes()), "exif_orientation", rgb, 4.0)
    put("upper.PNG", _png_bytes(PIL.Image.fromarray(rgb)), "upper_case_suffix", rgb)
    put("tiny.png", _png_bytes(PIL.Image.fromarray(rgb[:3, :5])), "tiny_5x3", rgb[:3, :5])

    # ---- unreadable
    jpeg = _jpeg_bytes(PIL.Image.fromarray(reference_rgb(96, 96, seed + 1)))
    put("truncated.jpg", jpeg[: len(jpeg) // 2], "truncated_jpeg", None)
    png = _png_bytes(PIL.Image.fromarray(reference_rgb(96, 96, seed + 2)))
    put("truncated.png", png[: len(png) // 2], "truncated_png", None)
    put("empty.jpg", b"", "empty_file", None)
    put("text.png", b"this is not an image\n", "text_file", None)
    put("error_page.jpeg", b"<!DOCTYPE html><html><body>403 Forbidden</body></html>\n", "html_file", None)
    return out


def write_ignored_files(folder: str | Path) -> list[Path]:
    """Files that are not images by name: never listed, predicted or reported."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "README.txt": b"labels from the annotation tool\n",
        "._appledouble.png": b"\x00\x05\x16\x07 resource fork",
        ".DS_Store": b"\x00\x00\x00\x01Bud1",
        "Thumbs.db": b"\xd0\xcf\x11\xe0",
    }
    paths = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths
