"""Robust loading: odd modes, lying extensions, EXIF rotation, truncated and garbage files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import torchvision.transforms.functional as TF

from rsvc.images import (
    ImageLoadError,
    canonical_image,
    list_image_files,
    load_rgb,
    to_model_input,
)

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def _noise(w: int, h: int, seed: int = 0) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def make_odd_folder(folder: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """Write a folder of awkward files.

    Returns ({readable file name: expected RGB pixels (h, w, 3) or None when only
    "readable" is asserted}, [unreadable file names]).
    """
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, np.ndarray | None] = {}

    PIL.Image.new("CMYK", (24, 20), (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=95)
    expected["cmyk.jpg"] = np.broadcast_to(np.array(RED, np.uint8), (20, 24, 3))

    PIL.Image.new("L", (24, 20), 77).save(folder / "gray.png")
    expected["gray.png"] = np.full((20, 24, 3), 77, np.uint8)

    PIL.Image.fromarray(np.full((20, 24), 32896, np.uint16)).save(folder / "gray16.png")  # 32896 = 128 * 257
    expected["gray16.png"] = np.full((20, 24, 3), 128, np.uint8)

    pal = PIL.Image.new("P", (24, 20), 1)
    pal.putpalette([0, 0, 0, *RED] + [0] * 762)
    pal.paste(0, (0, 0, 12, 20))  # left half: index 0, declared transparent
    pal.save(folder / "palette.png", transparency=0)
    want = np.broadcast_to(np.array(RED, np.uint8), (20, 24, 3)).copy()
    want[:, :12] = WHITE
    expected["palette.png"] = want

    rgba = np.zeros((20, 24, 4), np.uint8)
    rgba[..., :3] = BLUE
    rgba[:, 12:, 3] = 255  # left half fully transparent
    PIL.Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    want = np.broadcast_to(np.array(BLUE, np.uint8), (20, 24, 3)).copy()
    want[:, :12] = WHITE
    expected["rgba.png"] = want

    la = np.zeros((20, 24, 2), np.uint8)
    la[..., 1] = 0  # fully transparent black -> white
    PIL.Image.fromarray(la, "LA").save(folder / "la.png")
    expected["la.png"] = np.full((20, 24, 3), 255, np.uint8)

    noise = _noise(30, 20, seed=1)
    noise.save(folder / "png_named.JPEG", format="PNG")
    expected["png_named.JPEG"] = np.asarray(noise)

    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = RED
    stored[:, 20:] = BLUE
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    PIL.Image.fromarray(stored).save(folder / "exif_rotated.jpg", quality=95, exif=exif)
    shown = np.zeros((40, 20, 3), np.uint8)  # after rotation: the left half is on top
    shown[:20] = RED
    shown[20:] = BLUE
    expected["exif_rotated.jpg"] = shown

    buf = io.BytesIO()
    _noise(64, 64, seed=2).save(buf, format="JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    buf = io.BytesIO()
    _noise(64, 64, seed=3).save(buf, format="PNG")
    (folder / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "garbage.jpg").write_bytes(np.random.default_rng(4).bytes(500))
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    _noise(8, 8).save(folder / ".hidden.png")
    return expected, ["empty.png", "garbage.jpg", "truncated.jpg", "truncated.png"]


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("odd")
    expected, unreadable = make_odd_folder(folder)
    return folder, expected, unreadable


def test_list_image_files(odd_folder):
    folder, expected, unreadable = odd_folder
    names = [p.name for p in list_image_files(folder)]
    assert names == sorted(list(expected) + unreadable)  # .JPEG found, .txt and dotfiles not


def test_readable_files_decode_to_expected_rgb(odd_folder):
    folder, expected, _ = odd_folder
    for name, want in expected.items():
        img = load_rgb(folder / name)
        assert img.mode == "RGB", name
        got = np.asarray(img).astype(int)
        assert got.shape == want.shape, name
        tol = 6 if name.endswith(".jpg") else 0  # JPEG is lossy; edges of the rotated test image too
        if name == "exif_rotated.jpg":
            got, want = got[[2, -3], 10], want[[2, -3], 10]  # away from the red/blue boundary
        assert np.abs(got - want.astype(int)).max() <= tol, name


def test_unreadable_files_raise_with_path(odd_folder):
    folder, _, unreadable = odd_folder
    for name in unreadable:
        with pytest.raises(ImageLoadError, match=name):
            load_rgb(folder / name)
    with pytest.raises(ImageLoadError):
        load_rgb(folder / "does_not_exist.png")


@pytest.mark.parametrize("size", [(130, 100), (100, 130), (64, 64), (500, 90)])
def test_canonical_image_matches_torchvision(size):
    img = _noise(*size, seed=5)
    got = canonical_image(img, 56)
    oracle = TF.center_crop(TF.resize(img, 56, interpolation=TF.InterpolationMode.BILINEAR), [56, 56])
    want = torch.from_numpy(np.asarray(oracle).copy()).permute(2, 0, 1).float() / 255
    assert got.shape == (3, 56, 56) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_to_model_input_closed_form():
    x = torch.full((2, 3, 32, 32), 51, dtype=torch.uint8)  # 0.2 everywhere
    out = to_model_input(x, (3, 48, 40), mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.1))
    assert out.shape == (2, 3, 48, 40)
    want = torch.tensor([(0.2 - 0.1) / 0.5, 0.0, (0.2 - 0.3) / 0.1]).view(1, 3, 1, 1).expand(2, 3, 48, 40)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-5)
    # resizing agrees with torchvision's antialiased bilinear resize of the float image
    y = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(
        to_model_input(y, (3, 24, 24), (0, 0, 0), (1, 1, 1)),
        TF.resize(y, [24, 24], interpolation=TF.InterpolationMode.BILINEAR, antialias=True),
    )
