"""Unique calls (rsvc.tables.unique_calls): one-sided tests on the CMCS jackknife, false-discovery control
over every concept of a pair, NaN where undefined; checked by simulations with a known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rsvc.tables import CONCEPT_COLUMNS, is_unique, unique_calls
from rsvc.uncertainty import jackknife_pearson


def _held_out_concepts(rng, rhos, n_images=20, per_image=16):
    """Predicted and real coefficients of ``len(rhos)`` concepts on one class's held-out images, image
    and patch effects both correlated ``rho`` (the population Pearson correlation is exactly ``rho``)."""
    k = len(rhos)
    L = np.linalg.cholesky
    out_x, out_y = [], []
    for rho in rhos:
        c = L(np.array([[1.0, rho], [rho, 1.0]]))
        img = rng.normal(size=(n_images, 1, 2)) @ c.T
        patch = rng.normal(size=(n_images, per_image, 2)) @ c.T
        xy = (img + patch).reshape(-1, 2)
        out_x.append(xy[:, 0])
        out_y.append(xy[:, 1])
    return np.array(out_x).T, np.array(out_y).T, np.repeat(np.arange(n_images), per_image), k


def _pair_table(rng, rhos_per_class, floors=None):
    """A tidy table with the columns unique_calls reads, one class per entry of ``rhos_per_class``."""
    frames = []
    for c, rhos in enumerate(rhos_per_class):
        x, y, groups, k = _held_out_concepts(rng, rhos)
        r, se, df = jackknife_pearson(x, y, groups)
        frame = pd.DataFrame({col: np.nan for col in CONCEPT_COLUMNS}, index=range(k))
        frame["class_id"] = f"c{c}"
        frame["concept"] = np.arange(k)
        frame["cmcs_pearson"], frame["cmcs_pearson_se_z"], frame["cmcs_pearson_df"] = r, se, df
        frame["stability_self_mcs"] = np.nan if floors is None else floors[c]
        frame["has_floor"] = floors is not None
        frame["note"] = ""
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _false_discovery_share(reps, rng, rhos_per_class, is_null, fdr=0.05, floors=None, method="bh"):
    """(mean share of false calls among the calls, its standard error, mean share of true ones found)."""
    shares, power = [], []
    for _ in range(reps):
        t = unique_calls(_pair_table(rng, rhos_per_class, floors), 0.5, fdr, method)
        called = is_unique(t["unique"])
        shares.append((called & is_null).sum() / max(called.sum(), 1))
        power.append(called[~is_null].mean() if (~is_null).any() else np.nan)
    return np.mean(shares), np.std(shares) / np.sqrt(reps), np.mean(power)


def test_no_more_false_unique_calls_than_the_fdr_when_every_concept_sits_at_the_threshold():
    """Global null (every CMCS exactly at the threshold 0.5): the share of false unique calls, here the
    chance of any call, is at most uncertainty.fdr plus simulation error (300 pairs of 100 concepts)."""
    rng = np.random.default_rng(0)
    rhos = [[0.5] * 10] * 10
    share, se, _ = _false_discovery_share(300, rng, rhos, np.ones(100, bool))
    assert share <= 0.05 + 2.5 * se, (share, se)


def test_false_discovery_share_with_true_unique_concepts_and_a_floor():
    """20 of 100 concepts truly unique (CMCS 0.1), the rest at the threshold; a stability floor of 0.8
    (above the threshold: the threshold test decides). False share <= fdr, and the unique ones are found."""
    rng = np.random.default_rng(1)
    rhos = [[0.1, 0.1] + [0.5] * 8] * 10
    is_null = np.tile(np.r_[False, False, [True] * 8], 10)
    share, se, power = _false_discovery_share(200, rng, rhos, is_null, floors=[0.8] * 10)
    assert share <= 0.05 + 2.5 * se, (share, se)
    assert power > 0.5, power  # CMCS 0.1 against 0.5 on 20 held-out images


def test_the_floor_test_blocks_concepts_below_the_threshold_but_within_restart_noise():
    """CMCS 0.1 < threshold 0.5, but the concept's own stability floor is 0.1 too: not unique (H0 CMCS >=
    floor is true); p_unique is the larger of the two p-values (intersection-union test)."""
    rng = np.random.default_rng(2)
    t = unique_calls(_pair_table(rng, [[0.1] * 10] * 5, floors=[0.1] * 5), 0.5, 0.05)
    np.testing.assert_array_equal(t["p_unique"], np.fmax(t["p_below_threshold"], t["p_below_floor"]))
    assert is_unique(t["unique"]).mean() < 0.2


def test_undefined_tests_give_na_never_false_and_are_not_counted():
    rng = np.random.default_rng(3)
    table = _pair_table(rng, [[0.05] * 10] * 3)
    table.loc[2, "cmcs_pearson"] = np.nan  # CMCS undefined
    table.loc[3, "cmcs_pearson_se_z"] = np.nan  # interval undefined
    table.loc[4, "has_floor"] = True  # floor expected (restarts) but undefined
    t = unique_calls(table, 0.5, 0.05)
    assert t["unique"].isna().tolist()[2:5] == [True, True, True]
    assert t.loc[2:4, ["p_unique", "q_unique"]].isna().all().all()
    assert not t["unique"].drop(index=[2, 3, 4]).isna().any()
    # the 27 defined tests are the family: the q-values equal BH on them alone
    from scipy.stats import false_discovery_control

    ok = t["p_unique"].notna()
    np.testing.assert_allclose(t.loc[ok, "q_unique"], false_discovery_control(t.loc[ok, "p_unique"]), rtol=1e-12)


@pytest.mark.parametrize("method", ["bh", "by"])
def test_the_tidy_table_round_trip_keeps_undefined_unique(tmp_path, method):
    from rsvc.formats import read_concept_table
    from rsvc.io import write_table

    rng = np.random.default_rng(4)
    table = _pair_table(rng, [[0.05] * 4 + [0.5] * 6] * 2)
    table.loc[0, "cmcs_pearson"] = np.nan
    t = unique_calls(table, 0.5, 0.05, method)
    write_table(tmp_path / "t.csv", t)
    back = read_concept_table(tmp_path / "t.csv")
    assert str(back["unique"].dtype) == "boolean"
    assert back["unique"].isna().tolist() == t["unique"].isna().tolist()
    np.testing.assert_array_equal(is_unique(back["unique"]), is_unique(t["unique"]))


def test_galleries_and_explorer_counts_use_the_fdr_call_and_never_an_undefined_one():
    from rsvc.explorer import class_summary
    from rsvc.galleries import pick_concept

    table = pd.DataFrame(
        {
            "class_id": "c0",
            "direction": ["b->a"] * 4,
            "concept": range(4),
            "cmcs_pearson": [0.1, 0.2, 0.3, 0.4],
            "importance": [5.0, 4.0, 3.0, 9.0],
            "unique": pd.array([pd.NA, True, False, True], dtype="boolean"),
        }
    )
    # the most important unique concept is 3, then 1; the NA call (concept 0, importance 5) is never picked
    assert pick_concept(table, "important_b_to_a_0", ("a", "b"), "c0", 0.5)["concept"] == 3
    assert pick_concept(table, "important_b_to_a_1", ("a", "b"), "c0", 0.5)["concept"] == 1
    assert pick_concept(table, "important_b_to_a_2", ("a", "b"), "c0", 0.5) is None
    summary = class_summary(table, ("a", "b"))["b->a"]
    assert summary["n_unique"] == 2 and summary["importance_unique"] == 13.0
