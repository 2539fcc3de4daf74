"""Replacement test against a direct loop over the paper's pseudocode (section 3.3)."""

import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from rsvc.replacement import replacement_test


def pseudocode(U, U_cross, U_same, W, H, b, mix):
    """For each concept i: copy U, replace column i, reconstruct, classify; compare the two predictions."""
    m, k = U.shape
    l2, kl, match = np.zeros(k), np.zeros(k), np.zeros(k)
    for i in range(k):
        outcome = {}
        for name, pred in (("cross", U_cross), ("same", U_same)):
            U_bar = U.copy()
            U_bar[:, i] = mix * pred[:, i] + (1 - mix) * U[:, i]
            A_bar = U_bar @ W
            z = A_bar @ H.T + b
            outcome[name] = (A_bar, z, z.argmax(1))
        (Ac, zc, yc), (As, zs, ys) = outcome["cross"], outcome["same"]
        l2[i] = np.mean([np.linalg.norm(Ac[r] - As[r]) for r in range(m)])
        ps = softmax(zs, axis=1)
        kl[i] = np.mean(np.sum(ps * (log_softmax(zs, axis=1) - log_softmax(zc, axis=1)), axis=1))
        match[i] = np.mean(yc == ys)
    return l2, kl, match


@pytest.mark.parametrize("mix", [1.0, 0.5])
def test_matches_pseudocode(mix):
    rng = np.random.default_rng(0)
    m, k, d, C = 60, 5, 20, 30
    U = rng.gamma(1.0, 1.0, (m, k))
    U_same = U + 0.1 * rng.standard_normal((m, k))
    U_cross = U + 1.0 * rng.standard_normal((m, k))
    W = rng.standard_normal((k, d))
    H = 0.1 * rng.standard_normal((C, d))
    b = rng.standard_normal(C)
    res = replacement_test(U, U_cross, U_same, W, H, b, mix=mix, batch_rows=16)
    l2, kl, match = pseudocode(U, U_cross, U_same, W, H, b, mix)
    np.testing.assert_allclose(res.l2, l2, rtol=1e-10)
    np.testing.assert_allclose(res.kl, kl, rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(res.match_acc, match)
    assert res.kl.min() >= 0 and 0 < res.match_acc.min() < 1


def test_no_replacement_means_no_change():
    rng = np.random.default_rng(1)
    U = rng.random((10, 3))
    res = replacement_test(U, U + 1, U - 1, rng.random((3, 4)), rng.random((6, 4)), np.zeros(6), mix=0.0)
    assert np.all(res.l2 == 0) and np.allclose(res.kl, 0) and np.all(res.match_acc == 1)
