"""concepts.min_heldout_images: a class with too few held-out images is compared, but every number
scored on the held-out patches is NaN and the files and tables say why (the paper's code needs 10)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rsvc.compare import RowSet, compare_class
from rsvc.factorization import factorize
from rsvc.formats import read_compare_metrics, read_compare_status, write_compare
from rsvc.jobs import compare_job
from rsvc.tables import CONCEPT_COLUMNS

HELDOUT_SCORES = ("cmcs_pearson", "cmcs_spearman", "smcs_pearson", "smcs_spearman", "l2", "kl", "match_acc")
POOL_SCORES = ("mcs_pearson", "mcs_spearman", "cv_cmcs_pearson")


def _job(workdir: Path, cfg: dict, class_id: str, min_heldout_images: int):
    out = workdir / cfg["outdir"]
    a, b = "ps", "nc"
    splits = {"pool": cfg["dataset"]["pool_split"], "heldout": cfg["dataset"]["heldout_split"]}
    acts = {
        (m, o, s): next(iter(sorted((out / f"activations/{m}/on_{o}/{s}").glob("shard*.h5"))))
        for m in (a, b)
        for o in (a, b)
        for s in splits.values()
    }
    return compare_job(
        (a, b),
        class_id,
        acts,
        concepts={m: out / f"concepts/{m}/{class_id}.h5" for m in (a, b)},
        heads={m: out / f"heads/{m}.h5" for m in (a, b)},
        splits=splits,
        shared_images=cfg["concepts"]["shared_images"],
        min_heldout_images=min_heldout_images,
        regression=cfg["regression"],
        replacement=cfg["replacement"],
        gallery_n=cfg["gallery"]["n"],
        seed=cfg["seed"],
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
    np.testing.assert_array_equal(masked["mmcs/pearson"], full["mmcs/pearson"])
    for d in ("nc->ps", "ps->nc"):
        assert (masked[f"views/{d}"] == -1).all() and (full[f"views/{d}"] >= 0).any()
    assert "note" in CONCEPT_COLUMNS


def test_empty_heldout_set_is_compared_on_the_pool():
    """No held-out image at all: MMCS and MCS as with a held-out set, held-out scores NaN, no rows stored."""
    rng = np.random.default_rng(0)
    n_img, P = 12, 16
    rows = RowSet(
        np.array([f"img{i:02d}" for i in range(n_img)], dtype=object),
        np.repeat(np.arange(n_img), P),
        np.tile(np.arange(P), n_img),
    )
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
    empty = RowSet(rows.image_ids[:0], rows.patch_image[:0], rows.patch_index[:0])
    none = {"a": np.zeros((0, 24)), "b": np.zeros((0, 24))}
    with pytest.raises(ValueError, match="heldout_reason"):
        compare_class(("a", "b"), {"a": pool, "b": pool_b}, rows, none, empty, **kwargs)
    out = compare_class(("a", "b"), {"a": pool, "b": pool_b}, rows, none, empty, heldout_reason="0 held-out", **kwargs)
    np.testing.assert_array_equal(out["mmcs/pearson"], ref["mmcs/pearson"])
    np.testing.assert_array_equal(out["mcs/b->a/pearson"], ref["mcs/b->a/pearson"])
    assert np.isnan(out["regression/b->a/pearson"]).all() and np.isnan(out["replacement/a->b/kl"]).all()
    assert out["heldout/U/a"].shape == (0, 3) and len(out["heldout/image_ids"]) == 0
