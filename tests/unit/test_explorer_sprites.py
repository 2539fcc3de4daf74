"""The explorer's patch thumbnails: packing them into a sprite sheet, against patches cut with PIL alone."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest

from rsvc.explorer import pack_sprite, save_sprite, tile_origin
from rsvc.galleries import canonical_patches
from rsvc.patches import patch_boxes


@pytest.fixture
def image_root(tmp_path):
    """Five random 64 px RGB images (PNG, lossless), already canonical squares."""
    rng = np.random.default_rng(0)
    for i in range(5):
        PIL.Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"img{i}.png")
    return tmp_path


@pytest.mark.parametrize(("patch", "size", "cols"), [(16, 48, 4), (32, 24, 16), (16, 16, 3)])
def test_tile_i_is_the_patch_cut_and_resized_with_pil(image_root, patch, size, cols):
    boxes = patch_boxes(64, patch)
    rng = np.random.default_rng(1)
    rows = [(f"img{rng.integers(5)}.png", int(rng.integers(len(boxes)))) for _ in range(11)]
    sprite = pack_sprite(canonical_patches(image_root, rows, boxes, 64), size, cols=cols)
    assert sprite.n == 11 and sprite.size == size
    assert sprite.pixels.shape == (-(-11 // sprite.cols) * size, sprite.cols * size, 3)
    for i, (image_id, index) in enumerate(rows):
        # brute force: PIL crops the box from the file and resizes it; the tile sits at column i % cols, row i // cols
        with PIL.Image.open(image_root / image_id) as im:
            crop = im.convert("RGB").crop(tuple(int(v) for v in boxes[index]))
            want = np.asarray(crop.resize((size, size), PIL.Image.Resampling.BILINEAR))
        r, c = divmod(i, sprite.cols)
        tile = sprite.pixels[r * size : (r + 1) * size, c * size : (c + 1) * size]
        np.testing.assert_array_equal(tile, want, err_msg=f"tile {i}")
        assert tile_origin(i, size, sprite.cols) == (c * size, r * size)
    # the unused tiles of the last row stay black
    last = sprite.pixels[-size:, (11 % sprite.cols or sprite.cols) * size :]
    assert not last.any()


def test_saved_sprite_decodes_to_the_packed_pixels(image_root, tmp_path):
    boxes = patch_boxes(64, 16)
    rows = [(f"img{i % 5}.png", i % len(boxes)) for i in range(20)]
    sprite = pack_sprite(canonical_patches(image_root, rows, boxes, 64), 48)
    path = tmp_path / "sprite.webp"
    save_sprite(sprite, path)
    with PIL.Image.open(path) as im:
        assert im.format == "WEBP" and im.size == (sprite.pixels.shape[1], sprite.pixels.shape[0])
        decoded = np.asarray(im.convert("RGB"), dtype=np.float64)
    # lossy, but the tiles stay where they are: mean error small against the noise images' spread
    assert np.abs(decoded - sprite.pixels).mean() < 40
    assert np.corrcoef(decoded.ravel(), sprite.pixels.ravel().astype(float))[0, 1] > 0.8


def test_an_image_is_decoded_once_however_many_patches(image_root, monkeypatch):
    import rsvc.galleries

    calls = []
    real = rsvc.galleries.load_rgb
    monkeypatch.setattr(rsvc.galleries, "load_rgb", lambda p: calls.append(p) or real(p))
    boxes = patch_boxes(64, 16)
    canonical_patches(image_root, [("img0.png", i) for i in range(len(boxes))] + [("img1.png", 0)], boxes, 64)
    assert len(calls) == 2
