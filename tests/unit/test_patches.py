import numpy as np
import pytest
import torch

from rsvc.patches import extract_patches, patch_boxes, patch_stride


def brute_force(images: torch.Tensor, patch: int, stride: int) -> tuple[torch.Tensor, np.ndarray]:
    out, boxes = [], []
    s = images.shape[-1]
    for img in images:
        for y in range(0, s - patch + 1, stride):
            for x in range(0, s - patch + 1, stride):
                out.append(img[:, y : y + patch, x : x + patch])
                boxes.append((x, y, x + patch, y + patch))
    return torch.stack(out), np.array(boxes[: len(boxes) // len(images)])


def test_paper_grid_is_4x4():
    assert patch_stride(64) == 51
    boxes = patch_boxes(224, 64)
    assert boxes.shape == (16, 4)
    np.testing.assert_array_equal(np.unique(boxes[:, 0]), [0, 51, 102, 153])
    np.testing.assert_array_equal(boxes[1], [51, 0, 115, 64])  # row-major: x varies first
    np.testing.assert_array_equal(boxes[4], [0, 51, 64, 115])


@pytest.mark.parametrize("size,patch,stride", [(224, 64, None), (112, 32, None), (50, 16, 7), (33, 33, None)])
def test_patches_match_brute_force(size, patch, stride):
    images = torch.arange(3 * 3 * size * size, dtype=torch.float32).reshape(3, 3, size, size)
    got = extract_patches(images, patch, stride)
    want, boxes = brute_force(images, patch, patch_stride(patch) if stride is None else stride)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    np.testing.assert_array_equal(patch_boxes(size, patch, stride), boxes)


def test_patches_uint8_and_boxes_consistent():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (2, 3, 112, 112), dtype=np.uint8))
    patches = extract_patches(images, 32)
    boxes = patch_boxes(112, 32)
    assert patches.dtype == torch.uint8 and patches.shape == (2 * 16, 3, 32, 32)
    for j, (x0, y0, x1, y1) in enumerate(boxes):
        torch.testing.assert_close(patches[16 + j], images[1, :, y0:y1, x0:x1], rtol=0, atol=0)


def test_invalid_grid():
    with pytest.raises(ValueError):
        patch_boxes(32, 64)
    with pytest.raises(ValueError):
        extract_patches(torch.zeros(1, 3, 32, 40), 16)
