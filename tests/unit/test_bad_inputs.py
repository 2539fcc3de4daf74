"""Unreadable and non-finite inputs: skipped images keep predictions aligned, non-finite activations
name the model, layer, class and image (``tests/bad_images.py`` writes the odd files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from bad_images import write_bad_images, write_ignored_files

from rsvc.activations import extract_to_h5
from rsvc.images import ImageLoadError, list_image_files, load_rgb
from rsvc.models import create_model
from rsvc.predictions import predict_images, readable_mask
from rsvc.settings import ExtractionSettings
from rsvc.specs import ModelSpec


def test_bad_image_helper_matches_the_loader(tmp_path):
    """The helper's readable/unreadable split (used by the workflow tests) is what load_rgb does."""
    files = write_bad_images(tmp_path)
    ignored = write_ignored_files(tmp_path)
    for f in files:
        if f.readable:
            got = np.asarray(load_rgb(f.path)).astype(int)
            assert got.shape == f.expected.shape, f.kind
            assert np.abs(got - f.expected).mean() <= f.tol, f.kind
        else:
            with pytest.raises(ImageLoadError, match=f.path.name):
                load_rgb(f.path)
    listed = set(list_image_files(tmp_path))
    assert listed == {f.path for f in files}
    assert not listed & set(ignored)


def _small_resnet(num_classes=3, seed=0):
    torch.manual_seed(seed)
    spec = ModelSpec(
        "m",
        "resnet18",
        num_classes=num_classes,
        model_kwargs={"channels": (8, 16, 32, 64), "stem_width": 8},
        pretrained_cfg_overlay={"input_size": (3, 32, 32)},
    )
    return create_model(spec)


def test_predict_images_skips_unreadable_and_keeps_rows_aligned(tmp_path):
    """Mixed good/bad batch: the skipped list is exactly the broken files, and every kept
    prediction equals the prediction of that image on its own (oracle for alignment)."""
    files = write_bad_images(tmp_path)
    paths = [str(f.path) for f in files]
    settings = ExtractionSettings(image_size=32, patch_size=16, batch_size=4, num_workers=0, device="cpu")
    model = _small_resnet()
    pred, prob, skipped = predict_images(model, paths, settings)
    assert [p for p, _ in skipped] == [str(f.path) for f in files if not f.readable]
    assert all(Path(p).name in reason for p, reason in skipped)
    mask = readable_mask(paths, skipped)
    assert mask.tolist() == [f.readable for f in files]
    for i, path in enumerate(np.asarray(paths)[mask]):
        p1, q1, s1 = predict_images(model, [path], settings)
        assert not s1 and p1[0] == pred[i]
        assert q1[0] == pytest.approx(prob[i], abs=1e-5)


@pytest.mark.parametrize(
    "layer, image, scale, dtype, what",
    [
        ("layer2", 3, float("nan"), "float32", "nan"),
        ("layer3", 1, float("inf"), "float32", "inf"),
        ("layer4", 2, 1e6, "float16", "float16 overflow"),
    ],
)
def test_nonfinite_activations_name_model_layer_class_and_image(tmp_path, layer, image, scale, dtype, what):
    """A layer output made non-finite for one image (NaN, Inf, or finite but beyond float16 storage)
    stops the extraction with an error naming model, layer, class and image; nothing is written."""
    from PIL import Image

    rng = np.random.default_rng(0)
    items = {}
    for _c, cid in enumerate(("cls_a", "cls_b")):
        items[cid] = []
        for i in range(3):
            path = tmp_path / f"{cid}_{i}.png"
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
            items[cid].append((f"{cid}/img{i}", str(path)))
    flat = [iid for lst in items.values() for iid, _ in lst]
    model = _small_resnet()
    settings = ExtractionSettings(
        image_size=32, patch_size=16, batch_size=8, num_workers=0, device="cpu", storage_dtype=dtype
    )
    n_grid = 4  # a 32 px canonical image cut in 16 px patches (stride 12): a 2 x 2 grid
    seen = {"rows": 0}

    def poison(module, inputs, output):  # rows arrive in image order, n_grid rows per image
        if output.shape[0] == 1:  # the one-row probe that finds the layer widths
            return output
        rows = torch.arange(seen["rows"], seen["rows"] + output.shape[0]) // n_grid
        seen["rows"] += output.shape[0]
        hit = (rows == image).view(-1, 1, 1, 1)
        return torch.where(hit, output * scale if np.isfinite(scale) else torch.full_like(output, scale), output)

    handle = dict(model.named_modules())[layer].register_forward_hook(poison)
    out = tmp_path / "acts" / "shard.h5"
    try:
        with pytest.raises(FloatingPointError) as err:
            extract_to_h5(
                model,
                ["layer1", "layer2", "layer3", "layer4", "pre_logits"],
                items,
                out,
                settings,
                attrs={"model": "poisoned_net"},
            )
    finally:
        handle.remove()
    msg = str(err.value)
    cid, iid = flat[image].split("/")[0], flat[image]
    assert "poisoned_net" in msg and f"layer {layer}," in msg, msg
    assert f"class {cid}" in msg and f"image {iid} " in msg, msg
    if dtype == "float16":
        assert "float16" in msg
    assert not out.parent.exists() or not list(out.parent.iterdir()), "a failed extraction left files behind"
