"""The planted-concept check (rsvc.planted) against brute force."""

from __future__ import annotations

import numpy as np

from rsvc.planted import overlap_fraction, square_concept, square_counts_in_top


def test_overlap_fraction_brute_force():
    rng = np.random.default_rng(0)
    n = 200
    patches = np.column_stack([rng.integers(0, 20, n), rng.integers(0, 20, n)])
    patches = np.column_stack([patches, patches + rng.integers(1, 12, (n, 2))])
    squares = np.column_stack([rng.integers(0, 25, n), rng.integers(0, 25, n)])
    squares = np.column_stack([squares, squares + rng.integers(1, 8, (n, 2))]).astype(float)
    squares[::7] = np.nan  # images without a square
    frac = overlap_fraction(patches, squares)
    for i in range(n):
        if np.isnan(squares[i, 0]):
            assert frac[i] == 0
            continue
        grid = np.zeros((40, 40), bool)
        x0, y0, x1, y1 = squares[i].astype(int)
        grid[y0:y1, x0:x1] = True
        px0, py0, px1, py1 = patches[i]
        inside = grid[py0:py1, px0:px1].sum()
        assert frac[i] == inside / grid.sum()


def test_square_counts_in_top_brute_force():
    rng = np.random.default_rng(1)
    U = rng.random((50, 4))
    contains = rng.random(50) < 0.3
    counts = square_counts_in_top(U, contains, n=10)
    for j in range(4):
        top = sorted(range(50), key=lambda i: -U[i, j])[:10]
        assert counts[j] == sum(contains[i] for i in top)


def test_square_concept_breaks_ties_deeper_in_the_ranking():
    m = 100
    contains = np.zeros(m, bool)
    contains[:30] = True
    U = np.zeros((m, 3))
    # concept 0: 10/10 then dilutes; concept 1: 10/10 and 25 of its top 40; concept 2: 4/10
    U[np.r_[0:10, 40:100], 0] = np.linspace(2, 1, 70)
    U[np.r_[0:25, 60:100], 1] = np.linspace(2, 1, 65)
    U[np.r_[0:4, 30:100], 2] = np.linspace(2, 1, 74)
    np.testing.assert_array_equal(square_counts_in_top(U, contains, 10), [10, 10, 4])
    assert square_concept(U, contains, n=10) == 1
    # a clear winner in the top n needs no tie break; identical columns keep the lowest index
    assert square_concept(U[:, [2, 1]], contains, n=10) == 1
    assert square_concept(np.column_stack([U[:, 1], U[:, 1]]), contains, n=10) == 0
