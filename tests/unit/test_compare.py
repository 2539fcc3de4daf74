"""compare_class end to end on arrays: self-comparison and row bookkeeping."""

from __future__ import annotations

import numpy as np
from conftest import grid_rows

from rsvc.compare import compare_class
from rsvc.factorization import factorize
from rsvc.sampling import RowSet, gather_rows, take_rows, union_images


def _acts(rng, n, dims, rank=4):
    acts = {}
    for i, d in enumerate(dims):
        U = rng.gamma(1.0, size=(n, rank))
        acts[f"layer{i}"] = U @ rng.gamma(1.0, size=(rank, d)) + 0.05 * rng.random((n, d))
    acts["pre_logits"] = rng.random((n, 3)) @ rng.random((3, 24)) + 0.05 * rng.random((n, 24))
    return acts


def test_self_comparison_gives_unit_mmcs_diagonal():
    rng = np.random.default_rng(0)
    n_img, P = 12, 16
    rows = grid_rows(n_img, P)
    pool = _acts(rng, n_img * P, [8, 16, 32])
    held_rows = RowSet(rows.image_ids[:6], np.repeat(np.arange(6), P), np.tile(np.arange(P), 6))
    held = pool["pre_logits"][: 6 * P]
    W = {l: factorize(A, 5, seed=0).W for l, A in pool.items()}
    head = (rng.normal(size=(4, 24)), rng.normal(size=4))
    out = compare_class(
        ("a", "b"),
        {"a": pool, "b": pool},
        rows,
        {"a": held, "b": held},
        held_rows,
        {"a": W, "b": W},
        {"a": head, "b": head},
        folds=3,
    )
    for method in ("pearson", "spearman"):
        diag = np.diagonal(out.mmcs[method])
        np.testing.assert_allclose(diag, 1.0, atol=1e-6)
    # identical models: cross-model and same-model regressions coincide
    np.testing.assert_allclose(out.regression["b->a"]["pearson"], out.regression["a->a"]["pearson"], atol=1e-10)
    np.testing.assert_allclose(out.replacement["b->a"]["l2"], 0.0, atol=1e-10)
    np.testing.assert_allclose(out.replacement["b->a"]["match_acc"], 1.0)


def test_gather_rows_takes_each_image_once_in_order():
    a = RowSet(np.array(["x", "y"], dtype=object), np.array([0, 0, 1, 1]), np.array([1, 0, 0, 1]))
    b = RowSet(np.array(["y", "z"], dtype=object), np.array([0, 0, 1, 1]), np.array([0, 1, 1, 0]))
    images = union_images([a.image_ids, b.image_ids], cap=None, seed=0)
    assert list(images) == ["x", "y", "z"]
    picks, rows = gather_rows([a, b], images)
    vals_a = np.array([[10], [11], [20], [21]])  # x1 x0 y0 y1
    vals_b = np.array([[20], [21], [31], [30]])  # y0 y1 z1 z0
    got = take_rows([vals_a, vals_b], picks)[:, 0]
    assert list(got) == [11, 10, 20, 21, 30, 31]
    assert list(rows.image_ids) == ["x", "y", "z"]
    assert list(rows.patch_index) == [0, 1, 0, 1, 0, 1]


def test_union_cap_is_seeded_subsample():
    sets = [np.array([f"i{i}" for i in range(10)]), np.array([f"i{i}" for i in range(5, 15)])]
    u1 = union_images(sets, cap=7, seed=3)
    u2 = union_images(sets, cap=7, seed=3)
    assert list(u1) == list(u2) and len(u1) == 7 and list(u1) == sorted(u1)
    assert set(u1) <= {f"i{i}" for i in range(15)}
