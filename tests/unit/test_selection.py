"""Dissimilarity views against a brute-force selection."""

import numpy as np
import pytest

from rsvc.selection import dissimilarity_views


def brute_force(real, pred, image_ids, n):
    def pick(score, banned):
        chosen, seen = [], set(banned)
        for r in sorted(range(len(score)), key=lambda r: (-score[r], r)):
            if score[r] > 0 and image_ids[r] not in seen:
                chosen.append(r)
                seen.add(image_ids[r])
            if len(chosen) == n:
                break
        return chosen

    top = pick(real, ())
    banned = {image_ids[r] for r in top}
    return top, pick(pred - real, banned), pick(real - pred, banned)


@pytest.mark.parametrize("seed,n", [(0, 10), (1, 3), (2, 50)])
def test_matches_brute_force(seed, n):
    rng = np.random.default_rng(seed)
    m = 16 * 30
    image_ids = np.repeat([f"img{i:03d}" for i in rng.permutation(30)], 16)
    real = np.round(rng.gamma(0.5, 1.0, m), 1)  # ties
    pred = real + np.round(rng.standard_normal(m), 1)
    v = dissimilarity_views(real, pred, image_ids, n=n)
    top, over, under = brute_force(real, pred, image_ids, n)
    assert v.top_real.tolist() == top
    assert v.over.tolist() == over
    assert v.under.tolist() == under
    assert len(set(image_ids[v.top_real])) == len(v.top_real)
    assert not set(image_ids[v.over]) & set(image_ids[v.top_real])
    assert not set(image_ids[v.under]) & set(image_ids[v.top_real])
    assert (real[v.top_real] > 0).all() and (pred - real)[v.over].min(initial=1) > 0
    assert (real - pred)[v.under].min(initial=1) > 0


def test_zero_residuals_and_absent_concepts_are_never_shown():
    """A concept present in 3 images, predicted exactly except on one patch: one over-predicted patch, no
    under-predicted one, and no top-real patch with coefficient 0 (the rows are not padded to n)."""
    image_ids = np.repeat([f"img{i}" for i in range(8)], 4)
    real = np.zeros(32)
    real[[0, 4, 8]] = [3.0, 2.0, 1.0]
    pred = real.copy()
    pred[13] = 0.5
    v = dissimilarity_views(real, pred, image_ids, n=10)
    assert v.top_real.tolist() == [0, 4, 8]
    assert v.over.tolist() == [13]
    assert v.under.tolist() == []
