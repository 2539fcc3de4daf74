"""Image sets from a hand-made prediction table: by prediction (the paper) or by folder label."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rsvc.formats import read_image_set_counts, read_image_sets, read_predictions, write_image_sets, write_predictions
from rsvc.jobs import image_sets_job


def _predictions(rng: np.random.Generator, classes: list[str], per_class: int) -> pd.DataFrame:
    rows = []
    for c in classes:
        for i in range(per_class):
            pred = c if rng.random() < 0.3 else classes[int(rng.integers(len(classes)))]  # a weak model
            status = "skipped" if i == 0 and c == classes[1] else "ok"
            rows.append((f"train/{c}/{i:03d}.JPEG", f"/data/train/{c}/{i:03d}.JPEG", c, status, 0, 0.5, pred, ""))
    return pd.DataFrame(
        rows, columns=["image_id", "path", "label", "status", "pred_index", "prob", "pred_class", "reason"]
    )


@pytest.mark.parametrize("cap", [5, 100])
def test_labels_mode_takes_every_image_of_the_folder_up_to_the_cap(tmp_path, cap):
    classes = ["n01", "n02", "n03"]
    preds = _predictions(np.random.default_rng(0), classes, per_class=12)
    write_predictions(tmp_path / "p.tsv", preds)
    table = read_predictions([tmp_path / "p.tsv"])
    sets = {}
    for model in ("a", "b"):
        s, counts = image_sets_job(
            table, classes, by="labels", max_images=cap, min_images=3, seed=0, model=model, split="train"
        )
        write_image_sets(tmp_path / f"{model}.tsv", tmp_path / f"{model}.counts.tsv", s, counts)
        sets[model] = read_image_sets(tmp_path / f"{model}.tsv")
        got = read_image_set_counts(tmp_path / f"{model}.counts.tsv")
        assert list(got["model"]) == [model] * 3 and (got["status"] == "ok").all()
    assert sets["a"] == sets["b"], "labels mode: both models get the same images"
    for c in classes:
        readable = preds[(preds["label"] == c) & (preds["status"] == "ok")]["image_id"]
        chosen = [i for i, _ in sets["a"][c]]
        assert len(chosen) == min(cap, len(readable))
        assert set(chosen) <= set(readable) and len(set(chosen)) == len(chosen)


def test_predicted_mode_takes_the_images_predicted_as_the_class():
    classes = ["n01", "n02", "n03"]
    preds = _predictions(np.random.default_rng(1), classes, per_class=30)
    s, counts = image_sets_job(
        preds, classes, by="predicted", max_images=1000, min_images=1, seed=0, model="a", split="train"
    )
    for c in classes:
        want = preds[(preds["pred_class"] == c) & (preds["status"] == "ok")]["image_id"]
        assert sorted(s.loc[s["class_id"] == c, "image_id"]) == sorted(want)
    labelled, _ = image_sets_job(
        preds, classes, by="labels", max_images=1000, min_images=1, seed=0, model="a", split="train"
    )
    assert not labelled.equals(s), "the weak model's predictions differ from the labels"


def test_a_class_below_min_images_is_skipped_with_the_count():
    classes = ["n01", "n02"]
    preds = _predictions(np.random.default_rng(2), classes, per_class=4)
    _, counts = image_sets_job(
        preds, classes, by="labels", max_images=10, min_images=4, seed=0, model="a", split="train"
    )
    row = counts.set_index("class_id").loc["n02"]  # one of its 4 images is unreadable
    assert row["status"] == "skipped" and "3 < concepts.min_images_per_model=4" in row["reason"]
    with pytest.raises(ValueError, match="dataset.image_sets"):
        image_sets_job(preds, classes, by="folders", max_images=10, min_images=1, seed=0, model="a", split="train")


def test_shared_set_is_a_seeded_sample_of_the_union_of_the_full_predicted_sets():
    """The paper's shared set: a seeded sample of I_1^c ∪ I_2^c (all the images each model predicts
    as c), capped at shared_images, although each model's image set (and activation file) holds only
    its max(concept_images, shared_images) lowest-ranked images; the concept images are the
    concept_images lowest-ranked of the model's full set. Oracle: the ranks recomputed with hashlib."""
    import hashlib

    from rsvc.compare import lowest_ranked, union_images

    full = {"a": {f"img{i:03d}" for i in range(0, 40)}, "b": {f"img{i:03d}" for i in range(30, 60)}}
    rows = []
    for model, ids in full.items():
        for i in range(70):
            image = f"img{i:03d}"
            pred = "c" if image in ids else "other"
            rows.append((model, image, f"/x/{image}.png", "c", "ok", 0, 0.5, pred, ""))
    table = pd.DataFrame(
        rows, columns=["model", "image_id", "path", "label", "status", "pred_index", "prob", "pred_class", "reason"]
    )
    concept_images, shared_images, seed = 12, 20, 7
    sets = {}
    for model in full:
        s, _ = image_sets_job(
            table[table["model"] == model].drop(columns="model"),
            ["c"],
            by="predicted",
            max_images=max(concept_images, shared_images),
            min_images=1,
            seed=seed,
            model=model,
            split="train",
        )
        sets[model] = list(s["image_id"])
        assert len(sets[model]) == shared_images and set(sets[model]) <= full[model]

    def rank(image):
        digest = hashlib.blake2b(f"{seed}\x1fc\x1f{image}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little")

    union = full["a"] | full["b"]
    expected = sorted(sorted(union, key=rank)[:shared_images])
    assert list(union_images([sets["a"], sets["b"]], shared_images, seed, "c")) == expected
    for model in full:  # the concept images: a prefix of the same ranking of the model's full set
        want = sorted(sorted(full[model], key=rank)[:concept_images])
        assert list(lowest_ranked(sets[model], concept_images, "c", seed)) == want
    # uniform over the union: no image, shared by both models or not, is favoured
    hits = {i: 0 for i in union}
    n_seeds = 300
    for s in range(n_seeds):
        for i in lowest_ranked(union, shared_images, "c", s):
            hits[i] += 1
    p = shared_images / len(union)
    assert max(abs(h / n_seeds - p) for h in hits.values()) < 0.12
