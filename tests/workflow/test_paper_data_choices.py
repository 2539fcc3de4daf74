"""Which classes and images are compared, as in the paper: concepts.min_heldout_images (a class with
too few held-out images is compared, its held-out numbers NaN with the reason), the union rule of
concepts.min_images, and importance.images: shared (concept IG on the pair's shared set)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import grid_rows

from rsvc.compare import compare_class, compare_job
from rsvc.factorization import factorize
from rsvc.formats import read_compare_metrics, read_compare_status, read_concepts, read_head, write_compare
from rsvc.paths import RunPaths
from rsvc.sampling import RowSet
from rsvc.settings import CompareSettings, ConceptSettings, ImportanceSettings, UncertaintySettings, with_defaults
from rsvc.tables import CONCEPT_COLUMNS

HELDOUT_SCORES = ("cmcs_pearson", "cmcs_spearman", "smcs_pearson", "smcs_spearman", "l2", "kl", "match_acc")
POOL_SCORES = ("mcs_pearson", "mcs_spearman", "cv_cmcs_pearson")


def _job(workdir: Path, cfg: dict, class_id: str, min_heldout_images: int):
    a, b = "ps", "nc"
    # the workflow's settings, without the permutation nulls and with the given held-out minimum
    settings = dataclasses.replace(
        CompareSettings.from_config(with_defaults(cfg)),
        min_heldout_images=min_heldout_images,
        uncertainty=UncertaintySettings(),
        importance=None,
    )
    paths = RunPaths.from_config(with_defaults(cfg), root=workdir)
    return compare_job(
        (a, b),
        class_id,
        **paths.compare_inputs((a, b), class_id, (settings.pool_split, settings.heldout_split)),
        settings=settings,
    )


@pytest.mark.workflow
def test_too_few_heldout_images_give_nan_with_the_reason(tiny_run, tmp_path):
    workdir, cfg = tiny_run
    class_id = cfg["dataset"]["classes"][0]
    full, attrs = _job(workdir, cfg, class_id, min_heldout_images=1)
    n_held = attrs["n_heldout_images"]
    assert n_held >= 2 and attrs["note"] == ""
    masked, masked_attrs = _job(workdir, cfg, class_id, min_heldout_images=n_held + 1)
    assert masked_attrs["note"].startswith(f"{n_held} held-out images")
    assert f"min_heldout_images={n_held + 1}" in masked_attrs["note"]

    paths = {}
    for name, data, job_attrs in (("full", full, attrs), ("masked", masked, masked_attrs)):
        paths[name] = tmp_path / f"{name}.h5"
        write_compare(
            paths[name], data, {"pair": "ps-vs-nc", "models": '["ps", "nc"]', "class_id": class_id, **job_attrs}
        )
    m_full, m_masked = read_compare_metrics(paths["full"]), read_compare_metrics(paths["masked"])
    assert m_masked["note"] == masked_attrs["note"] and m_full["note"] == ""
    assert read_compare_status(paths["masked"]).note == masked_attrs["note"]
    assert not read_compare_status(paths["masked"]).skipped
    for d, scores in m_masked["directions"].items():
        for name in HELDOUT_SCORES:
            assert np.isnan(scores[name]).all(), (d, name)
            assert np.isfinite(m_full["directions"][d][name]).any(), (d, name)
        for name in POOL_SCORES:  # measured on the shared patches: unchanged
            np.testing.assert_array_equal(scores[name], m_full["directions"][d][name])
    np.testing.assert_array_equal(masked.mmcs["pearson"], full.mmcs["pearson"])
    for d in ("nc->ps", "ps->nc"):
        assert (masked.views[d] == -1).all() and (full.views[d] >= 0).any()
    assert "note" in CONCEPT_COLUMNS


def test_empty_heldout_set_is_compared_on_the_pool():
    """No held-out image at all: MMCS and MCS as with a held-out set, held-out scores NaN, no rows stored."""
    rng = np.random.default_rng(0)
    n_img, P = 12, 16
    rows = grid_rows(n_img, P)
    pool = {
        "layer0": rng.gamma(1.0, size=(n_img * P, 4)) @ rng.gamma(1.0, size=(4, 16)),
        "pre_logits": rng.random((n_img * P, 3)) @ rng.random((3, 24)) + 0.05 * rng.random((n_img * P, 24)),
    }
    pool_b = {name: A + 0.1 * rng.random(A.shape) for name, A in pool.items()}
    W = {m: {l: factorize(A, 3, seed=0).W for l, A in acts.items()} for m, acts in (("a", pool), ("b", pool_b))}
    head = (rng.normal(size=(4, 24)), rng.normal(size=4))
    kwargs = dict(concepts=W, heads={"a": head, "b": head}, folds=3)
    held_rows = RowSet(rows.image_ids[:6], rows.patch_image[: 6 * P], rows.patch_index[: 6 * P])
    held = {"a": pool["pre_logits"][: 6 * P], "b": pool_b["pre_logits"][: 6 * P]}
    ref = compare_class(("a", "b"), {"a": pool, "b": pool_b}, rows, held, held_rows, **kwargs)
    empty = RowSet.empty()
    none = {"a": np.zeros((0, 24)), "b": np.zeros((0, 24))}
    with pytest.raises(ValueError, match="heldout_reason"):
        compare_class(("a", "b"), {"a": pool, "b": pool_b}, rows, none, empty, **kwargs)
    out = compare_class(("a", "b"), {"a": pool, "b": pool_b}, rows, none, empty, heldout_reason="0 held-out", **kwargs)
    np.testing.assert_array_equal(out.mmcs["pearson"], ref.mmcs["pearson"])
    np.testing.assert_array_equal(out.mcs[("b->a", "pearson")], ref.mcs[("b->a", "pearson")])
    assert np.isnan(out.regression["b->a"]["pearson"]).all() and np.isnan(out.replacement["a->b"]["kl"]).all()
    assert out.heldout_U["a"].shape == (0, 3) and len(out.heldout_rows.image_ids) == 0


# ----------------------------------------------------------------------------- union rule

DIMS = {"a": {"layer0": 6, "pre_logits": 12}, "b": {"layer0": 8, "pre_logits": 12}}
N_GRID = 4


def _activation_file(path: Path, model: str, image_ids: list[str], seed: int) -> None:
    """A real activation file of ``model`` on ``image_ids`` (class c0): low-rank non-negative patches."""
    import h5py

    from rsvc.formats import ActivationFile

    rng = np.random.default_rng(seed)
    n = len(image_ids) * N_GRID
    with h5py.File(path, "w", track_order=True) as f:
        store = ActivationFile(f, ["c0"], DIMS[model], np.float32, {layer: 16 for layer in DIMS[model]})
        for layer, d in DIMS[model].items():
            block = rng.gamma(1.0, size=(n, 3)) @ rng.gamma(1.0, size=(3, d)) + 0.05 * rng.random((n, d))
            ds = store.dataset("c0", layer)
            ds.resize((n, d))
            ds[:] = block
        store.finish({"c0": image_ids}, N_GRID, [], {"layers": '["layer0", "pre_logits"]'})


def test_a_class_one_model_rarely_predicts_is_compared_by_the_union(tmp_path):
    """Model a predicts class c0 for 2 pool images, model b for 40: the union (42) passes min_images=5,
    the class is compared, and the note, the compare status and the run summary say that a's own
    concept set is small. With min_images=50 the union is too small and the class is skipped."""
    from rsvc.concepts import concepts_job
    from rsvc.formats import write_concepts, write_head
    from rsvc.summary import run_status

    own = {"a": [f"pool/a{i}" for i in range(2)], "b": [f"pool/b{i:02d}" for i in range(40)]}
    held = {"a": [], "b": [f"val/b{i:02d}" for i in range(12)]}
    acts = {}
    for m in ("a", "b"):
        for o in ("a", "b"):
            for split, ids in (("train", own[o]), ("val", held[o])):
                acts[(m, o, split)] = tmp_path / f"{m}_on_{o}_{split}.h5"
                _activation_file(acts[(m, o, split)], m, ids, seed=10 * "ab".index(m) + (split == "val"))
    rng = np.random.default_rng(0)
    concepts, heads = {}, {}
    for m in ("a", "b"):
        concepts[m] = tmp_path / f"concepts_{m}.h5"
        result = concepts_job(
            acts[(m, m, "train")],
            "c0",
            ConceptSettings(k=3, min_images=1, max_iter=200, tol=1e-6, decomposition="nmf", seed=0),
        )
        write_concepts(concepts[m], result, {"model": m, "class_id": "c0"})
        heads[m] = tmp_path / f"head_{m}.h5"
        write_head(heads[m], rng.normal(size=(3, 12)), rng.normal(size=3), {"model": m})
    settings = CompareSettings(
        pool_split="train",
        heldout_split="val",
        shared_images=None,
        min_images=5,
        min_heldout_images=10,
        alpha=0.1,
        folds=2,
        tol=1e-4,
        max_iter=1000,
        mix=1.0,
        n_views=3,
        seed=0,
    )

    def job(acts=acts, concepts=concepts, min_images=5, **kwargs):
        return compare_job(
            ("a", "b"), "c0", acts, concepts, heads, dataclasses.replace(settings, min_images=min_images), **kwargs
        )

    data, attrs = job()
    assert attrs["n_union_images"] == 42 and attrs["n_shared_images"] == 42
    assert "a's own concept set is small: 2 images < concepts.min_images=5" in attrs["note"]
    assert "b's own" not in attrs["note"]
    assert np.isfinite(data.mcs[("b->a", "pearson")]).all() and np.isfinite(data.regression["a->b"]["pearson"]).all()
    path = tmp_path / "compare.h5"
    write_compare(path, data, {"pair": "a-vs-b", "models": '["a", "b"]', "class_id": "c0", **attrs})
    status, _ = run_status(pd.DataFrame({"pair": ["a-vs-b"], "class_id": ["c0"]}), ["a-vs-b"], [], [path], [], [], [])
    row = status[(status["stage"] == "compare") & (status["class_id"] == "c0")]
    assert row["status"].tolist() == ["partial"] and "a's own concept set is small" in row["reason"].iloc[0]

    # importance.images: shared: concept IG over the shared set's coefficients, not the own images
    from rsvc.importance import concept_importance, concept_integrated_gradients, importance_job

    shared, _ = compare_job(
        ("a", "b"),
        "c0",
        acts,
        concepts,
        heads,
        dataclasses.replace(settings, importance=ImportanceSettings(target="probability", steps=8)),
        class_index=1,
    )
    for m in ("a", "b"):
        U = shared.pool_U_pre_logits[m]
        assert U.shape[0] == 42 * N_GRID
        W = read_concepts(concepts[m]).W["pre_logits"]
        weight, bias = read_head(heads[m])
        want = concept_importance(concept_integrated_gradients(U, W, weight, bias, 1, target="probability", steps=8))
        np.testing.assert_allclose(shared.importance[m], want, rtol=1e-12)
        own, _ = importance_job(concepts[m], heads[m], 1, ImportanceSettings(target="probability", steps=8))
        assert not np.allclose(own, want)
    assert not data.importance  # importance.images: own
    path = tmp_path / "shared.h5"
    write_compare(path, shared, {"pair": "a-vs-b", "models": '["a", "b"]', "class_id": "c0", **attrs})
    np.testing.assert_array_equal(read_compare_metrics(path)["importance"]["b"], shared.importance["b"])

    # 4 held-out images (< concepts.min_heldout_images = 10): compared, held-out numbers NaN with the reason
    few = dict(acts)
    for m in ("a", "b"):
        few[(m, "b", "val")] = tmp_path / f"{m}_on_b_val4.h5"
        _activation_file(few[(m, "b", "val")], m, held["b"][:4], seed=10 * "ab".index(m) + 1)
    four, four_attrs = job(acts=few)
    assert four_attrs["n_heldout_images"] == 4
    assert "4 held-out images (split val) < concepts.min_heldout_images=10" in four_attrs["note"]
    assert np.isnan(four.regression["a->b"]["pearson"]).all() and np.isnan(four.replacement["b->a"]["l2"]).all()
    np.testing.assert_array_equal(four.mcs[("a->b", "pearson")], data.mcs[("a->b", "pearson")])

    skipped, _ = job(min_images=50)
    assert "42 images in the union of both models' pool sets < concepts.min_images=50" in skipped.reason

    # n_union_images counts the union of the FULL predicted sets (the files hold only samples of them):
    # a predicts 3 more images than it stores, b 20 more, one of them also a's
    predicted = {
        "a": [f"pool/a{i}" for i in range(2)] + ["pool/a_x", "pool/a_y", "pool/both"],
        "b": [f"pool/b{i:02d}" for i in range(59)] + ["pool/both"],
    }
    n_full = len(set(predicted["a"]) | set(predicted["b"]))
    assert n_full == 42 + 3 + 19
    for min_images in (5, n_full):  # 50 > the 42 stored, <= the full union: compared
        _, full_attrs = job(min_images=min_images, predicted=predicted)
        assert full_attrs["n_union_images"] == n_full and full_attrs["n_shared_images"] == 42
    over, _ = job(min_images=n_full + 1, predicted=predicted)
    assert f"{n_full} images in the union of both models' pool sets < concepts.min_images={n_full + 1}" in over.reason

    # concepts.k above a's patches (2 images): a's concepts of the class are skipped with the reason, and so
    # is the class for the pair, instead of an error
    few_patches = concepts_job(
        acts[("a", "a", "train")],
        "c0",
        ConceptSettings(k=2 * N_GRID + 1, min_images=1, max_iter=50, tol=1e-6, decomposition="nmf", seed=0),
    )
    assert f"{2 * N_GRID} patches (2 images) < concepts.k={2 * N_GRID + 1}" in few_patches.reason
    write_concepts(tmp_path / "concepts_a_big_k.h5", few_patches, {"model": "a", "class_id": "c0"})
    pair_skip, _ = job(concepts={**concepts, "a": tmp_path / "concepts_a_big_k.h5"})
    assert "concepts.k" in pair_skip.reason and pair_skip.reason.startswith("a: ")
