"""Image sets from a hand-made prediction table: by prediction (the paper) or by folder label."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rsvc.formats import read_image_set_counts, read_image_sets, read_predictions, write_image_sets, write_predictions
from rsvc.image_sets import image_sets_job
from rsvc.settings import ImageSetSettings


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
            table,
            classes,
            ImageSetSettings(by="labels", max_images=cap, min_images=3, seed=0),
            model=model,
            split="train",
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
        preds,
        classes,
        ImageSetSettings(by="predicted", max_images=1000, min_images=1, seed=0),
        model="a",
        split="train",
    )
    for c in classes:
        want = preds[(preds["pred_class"] == c) & (preds["status"] == "ok")]["image_id"]
        assert sorted(s.loc[s["class_id"] == c, "image_id"]) == sorted(want)
    labelled, _ = image_sets_job(
        preds, classes, ImageSetSettings(by="labels", max_images=1000, min_images=1, seed=0), model="a", split="train"
    )
    assert not labelled.equals(s), "the weak model's predictions differ from the labels"


def test_a_class_below_min_images_is_skipped_with_the_count():
    classes = ["n01", "n02"]
    preds = _predictions(np.random.default_rng(2), classes, per_class=4)
    _, counts = image_sets_job(
        preds, classes, ImageSetSettings(by="labels", max_images=10, min_images=4, seed=0), model="a", split="train"
    )
    row = counts.set_index("class_id").loc["n02"]  # one of its 4 images is unreadable
    assert row["status"] == "skipped" and "3 < concepts.min_images_per_model=4" in row["reason"]
    with pytest.raises(ValueError, match="dataset.image_sets"):
        image_sets_job(
            preds,
            classes,
            ImageSetSettings(by="folders", max_images=10, min_images=1, seed=0),
            model="a",
            split="train",
        )


def _predicted_table(full: dict[str, set[str]], n_images: int) -> pd.DataFrame:
    """Predictions of models that predict class "c" for exactly the images of ``full[model]``."""
    rows = []
    for model, ids in full.items():
        for i in range(n_images):
            image = f"img{i:03d}"
            pred = "c" if image in ids else "other"
            rows.append((model, image, f"/x/{image}.png", "c", "ok", 0, 0.5, pred, ""))
    return pd.DataFrame(
        rows, columns=["model", "image_id", "path", "label", "status", "pred_index", "prob", "pred_class", "reason"]
    )


def _sampled_sets(table, full, concept_images, shared_images, seed, tmp_path=None):
    """model -> the sampled (extracted) image ids of its pool image set, read back as the activation jobs do."""
    sets = {}
    for model in full:
        s, counts = image_sets_job(
            table[table["model"] == model].drop(columns="model"),
            ["c"],
            ImageSetSettings(
                by="predicted", max_images=concept_images, shared_images=shared_images, min_images=1, seed=seed
            ),
            model=model,
            split="train",
        )
        assert set(s["image_id"]) == full[model]  # every predicted image is listed ...
        assert counts["n_selected"].iloc[0] == s["sampled"].sum()  # ... the sampled ones are counted
        if tmp_path is not None:
            write_image_sets(tmp_path / f"{model}.tsv", tmp_path / f"{model}.counts.tsv", s, counts)
            back = read_image_sets(tmp_path / f"{model}.tsv")
            assert {i for i, _ in back["c"]} == set(s.loc[s["sampled"], "image_id"])
            every = read_image_sets(tmp_path / f"{model}.tsv", sampled_only=False)
            assert {i for i, _ in every["c"]} == full[model]
        sets[model] = sorted(s.loc[s["sampled"], "image_id"])
    return sets


def _rank(seed, image, stream=""):
    import hashlib

    prefix = f"{seed}\x1fc\x1f" if not stream else f"{seed}\x1f{stream}\x1fc\x1f"
    return int.from_bytes(hashlib.blake2b(f"{prefix}{image}".encode(), digest_size=8).digest(), "little")


def test_shared_set_is_a_seeded_sample_of_the_union_of_the_full_predicted_sets(tmp_path):
    """The paper's shared set: a seeded sample of I_1^c ∪ I_2^c (all the images each model predicts
    as c), capped at shared_images, drawn with its own ranking (independent of the concept samples),
    although each model's activation file holds only its concept sample and its shared_images lowest of
    the shared ranking; the concept images are the concept_images lowest of the concept ranking of the
    model's full set. Oracle: the ranks recomputed with hashlib."""
    from rsvc.sampling import SHARED_STREAM, lowest_ranked, union_images

    full = {"a": {f"img{i:03d}" for i in range(0, 40)}, "b": {f"img{i:03d}" for i in range(30, 60)}}
    table = _predicted_table(full, 70)
    concept_images, shared_images, seed = 12, 20, 7
    sets = _sampled_sets(table, full, concept_images, shared_images, seed, tmp_path)
    union = full["a"] | full["b"]
    expected = sorted(sorted(union, key=lambda i: _rank(seed, i, SHARED_STREAM))[:shared_images])
    assert list(union_images([sets["a"], sets["b"]], shared_images, seed, "c")) == expected
    for model in full:  # the concept images: the lowest of the concept ranking of the model's full set
        want = sorted(sorted(full[model], key=lambda i: _rank(seed, i))[:concept_images])
        assert list(lowest_ranked(sets[model], concept_images, "c", seed)) == want
    # uniform over the union: no image, shared by both models or not, is favoured
    hits = {i: 0 for i in union}
    n_seeds = 300
    for s in range(n_seeds):
        for i in union_images([sorted(union)], shared_images, s, "c"):
            hits[i] += 1
    p = shared_images / len(union)
    assert max(abs(h / n_seeds - p) for h in hits.values()) < 0.12


def test_concept_images_overlap_the_shared_set_as_independent_draws_do():
    """How many of a model's concept images lie in the shared set: for independent draws, each concept
    image (an image of the union) is in the shared set with probability shared_images / |union|, so the
    expected share is that ratio (0.4 here). Measured over 400 seeds; one ranking for both samples (the
    old behaviour) gives a share of 1.0 (the concept sample nested in the shared set)."""
    from rsvc.sampling import lowest_ranked, union_images

    full = {"a": {f"img{i:03d}" for i in range(0, 30)}, "b": {f"img{i:03d}" for i in range(20, 50)}}
    concept_images, shared_images = 10, 20
    union = full["a"] | full["b"]
    expected = shared_images / len(union)
    shares, nested = [], []
    for seed in range(400):
        shared = set(union_images([sorted(union)], shared_images, seed, "c"))
        concept = set(lowest_ranked(sorted(full["a"]), concept_images, "c", seed))
        shares.append(len(concept & shared) / concept_images)
        same_ranking = set(lowest_ranked(sorted(union), shared_images, "c", seed))
        nested.append(len(concept & same_ranking) / concept_images)
    # hypergeometric-like spread per seed: sd <= 0.16, so the mean over 400 seeds is within 0.025 (3 sd)
    assert abs(np.mean(shares) - expected) < 0.025, (np.mean(shares), expected)
    assert np.mean(nested) > 0.9  # the check can fail: nesting is far from independence
