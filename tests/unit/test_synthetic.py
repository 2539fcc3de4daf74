"""The demo dataset (planted magenta square) and the demo training."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import PIL.Image
import pytest
import torch

from rsvc.specs import ModelSpec
from rsvc.synthetic import MAGENTA, make_dataset, square_probability
from rsvc.training import (
    has_square,
    paste_squares,
    random_resized_boxes,
    train_classifier,
)

CLASSES = ["disc", "ring", "cross"]
SIZE = 40


def _load(root, rel):
    return np.asarray(PIL.Image.open(root / rel).convert("RGB")).astype(int)


@pytest.fixture(scope="module")
def schemes(tmp_path_factory):
    base = tmp_path_factory.mktemp("syn")
    n = {"train": 6, "val": 3}
    return {
        s: (base / s, make_dataset(base / s, classes=CLASSES, n_per_split=n, image_size=SIZE, scheme=s, seed=3))
        for s in ("ps", "nc", "eval")
    }


def test_layout_and_metadata(schemes):
    root, meta = schemes["ps"]
    pd.testing.assert_frame_equal(pd.read_csv(root / "metadata.csv"), meta, check_dtype=False)
    assert list(meta.columns) == ["split", "class", "path", "has_square", "x0", "y0", "x1", "y1"]
    assert len(meta) == 3 * 9 and meta.path.is_unique
    for row in meta.itertuples():
        assert row.path.startswith(f"{row.split}/{row._2}/") and (root / row.path).is_file()


def test_square_pixels_and_nothing_else_is_purple(schemes):
    side = round(20 / 224 * SIZE)
    for root, meta in schemes.values():
        for row in meta.itertuples():
            img = _load(root, row.path)
            outside = np.ones(img.shape[:2], bool)
            if row.has_square:
                assert (row.x1 - row.x0, row.y1 - row.y0) == (side, side)
                assert (img[row.y0 : row.y1, row.x0 : row.x1] == MAGENTA).all()
                outside[row.y0 : row.y1, row.x0 : row.x1] = False
            else:
                assert (row.x0, row.y0, row.x1, row.y1) == (-1, -1, -1, -1)
            # green is the largest channel of every other pixel (no magenta, purple or pink at all)
            rgb = img[outside]
            assert (np.maximum(rgb[:, 0], rgb[:, 2]) <= rgb[:, 1]).all(), row.path


def test_base_images_identical_across_schemes(schemes):
    (ps_root, ps), (nc_root, nc), (ev_root, ev) = schemes["ps"], schemes["nc"], schemes["eval"]
    assert list(ps.path) == list(nc.path) == list(ev.path)
    for a, b, c in zip(ps.itertuples(), nc.itertuples(), ev.itertuples()):
        imgs = [_load(ps_root, a.path), _load(nc_root, b.path), _load(ev_root, c.path)]
        keep = np.ones((SIZE, SIZE), bool)
        for r in (a, b, c):
            if r.has_square:
                keep[r.y0 : r.y1, r.x0 : r.x1] = False
        assert (imgs[0][keep] == imgs[1][keep]).all() and (imgs[0][keep] == imgs[2][keep]).all()


def test_square_rates_follow_the_scheme(tmp_path):
    n = 150
    for scheme in ("ps", "nc", "eval"):
        meta = make_dataset(
            tmp_path / scheme, classes=CLASSES[:2], n_per_split={"train": n}, image_size=16, scheme=scheme, seed=0
        )
        for ci, cname in enumerate(CLASSES[:2]):
            p = square_probability(scheme, ci)
            rate = meta.loc[meta["class"] == cname, "has_square"].mean()
            assert abs(rate - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-12, (scheme, cname, rate)
    assert [square_probability("ps", c) for c in (0, 1)] == [0.7, 0.0]
    assert [square_probability("nc", c) for c in (0, 1)] == [0.5, 0.5]
    assert [square_probability("eval", c) for c in (0, 1)] == [1.0, 0.0]


def test_dataset_is_deterministic(tmp_path, schemes):
    root, meta = schemes["nc"]
    again = make_dataset(
        tmp_path / "again", classes=CLASSES, n_per_split={"train": 6, "val": 3}, image_size=SIZE, scheme="nc", seed=3
    )
    pd.testing.assert_frame_equal(again, meta)
    for rel in meta.path[:5]:
        assert (root / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes()


def test_paste_and_detect_square(schemes):
    root, meta = schemes["ps"]
    x = torch.from_numpy(np.stack([_load(root, p) for p in meta.path]).astype(np.uint8)).permute(0, 3, 1, 2)
    np.testing.assert_array_equal(has_square(x), meta.has_square.to_numpy())
    pasted = paste_squares(x, np.random.default_rng(0), 4)
    assert has_square(pasted).all()
    changed = (pasted != x).any(1).flatten(1).sum(1)
    assert (changed <= 16).all() and (changed[~meta.has_square.to_numpy()] > 0).all()


def test_random_resized_boxes_follow_torchvision_bounds():
    boxes = random_resized_boxes(np.random.default_rng(0), 5000, 112)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 112).all()
    area = w * h / 112**2
    ratio = w / h
    assert area.min() >= 0.08 - 0.02 and area.max() <= 1.0
    assert ratio.min() >= 3 / 4 - 0.05 and ratio.max() <= 4 / 3 + 0.05
    assert 0.4 < np.median(area) < 0.7  # uniform scale in (0.08, 1) before the bounds check


def test_training_is_deterministic_and_reports_metrics(schemes):
    root, _ = schemes["ps"]
    spec = ModelSpec(
        "tiny",
        "resnet18",
        num_classes=3,
        model_kwargs={"channels": (8, 8, 16, 16), "stem_width": 8},
        pretrained_cfg_overlay={"input_size": (3, 32, 32)},
    )
    kwargs = {
        "input_size": 32,
        "epochs": 2,
        "batch_size": 8,
        "lr": 1e-3,
        "seed": 0,
        "val_root": root / "val",
        "num_threads": 1,
    }
    sd1, m1 = train_classifier(spec, root / "train", CLASSES, **kwargs)
    sd2, _ = train_classifier(spec, root / "train", CLASSES, **kwargs)
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        torch.testing.assert_close(sd1[k], sd2[k], rtol=0, atol=0)
        assert sd1[k].is_contiguous()
    assert m1["epochs"] == 2 and m1["n_train"] == 18 and m1["n_val"] == 9
    for key in ("train_acc", "val_acc", "val_acc_class0_with_square", "val_class0_logprob_shift_pasted_square"):
        assert key in m1
    assert 0 <= m1["val_acc"] <= 1
    with pytest.raises(ValueError, match="input_size"):
        train_classifier(spec, root / "train", CLASSES, **{**kwargs, "input_size": 48})
