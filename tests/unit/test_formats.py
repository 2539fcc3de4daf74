"""rsvc.formats round trip: every writer/reader pair of the table at the top of rsvc/formats.py, on small
realistic data written to a temporary folder and read back: every array (values and the dtypes the
readers promise), every table and every attribute. A damaged or changed file must be caught."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from rsvc.formats import (
    PREDICTION_COLUMNS,
    SKIPPED_COLUMNS,
    ActivationFile,
    ClassComparison,
    Concepts,
    DamagedFileError,
    Skipped,
    is_skipped,
    read_attrs,
    read_class_activations,
    read_compare_metrics,
    read_compare_status,
    read_concept_table,
    read_concept_views,
    read_concepts,
    read_head,
    read_heldout,
    read_image_set_counts,
    read_image_sets,
    read_importance,
    read_layerwise,
    read_mmcs,
    read_mmcs_null,
    read_prediction,
    read_predictions,
    read_skipped_images,
    write_compare,
    write_concepts,
    write_head,
    write_image_sets,
    write_importance,
    write_layerwise,
    write_predictions,
    write_skipped,
)
from rsvc.io import write_table
from rsvc.sampling import RowSet
from rsvc.specs import direction
from rsvc.tables import CONCEPT_COLUMNS, UNIQUE_TEST_COLUMNS

RNG = np.random.default_rng(0)  # reseeded for every test: the data do not depend on which tests ran
A, B = "ps", "nc"  # the two models of the pair, as in the demo
LAYERS = {A: ["blocks.1", "blocks.3", "pre_logits"], B: ["layer2", "pre_logits"]}
K = {A: 5, B: 4}  # concepts per model: different, so a swapped direction shows
M, N = 6, 9  # held-out rows, pool rows
ATTRS = {
    "seed": 7,
    "k": 5,
    "method": "nmf",
    "tolerance": 1e-4,
    "use_bias": True,
    "layers": ["blocks.1", "pre_logits"],
    "shape": [64, 64],
    "settings": {"min_images": 3, "per_image": None},
    "absent": None,
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    global RNG
    RNG = np.random.default_rng(0)


def assert_arrays_equal(actual: np.ndarray, expected: np.ndarray, dtype=None) -> None:
    """Equal values and shape (NaN equal to NaN), and the dtype ``dtype`` when the reader promises one."""
    np.testing.assert_array_equal(actual, expected, strict=dtype is None)
    if dtype is not None:
        assert np.asarray(actual).dtype == np.dtype(dtype), (np.asarray(actual).dtype, dtype)


def assert_strings_equal(actual: np.ndarray, expected) -> None:
    assert [type(s) for s in actual] == [str] * len(expected)
    assert list(actual) == list(expected)


def assert_attrs_equal(actual: dict, expected: dict) -> None:
    """Every attribute written comes back; JSON-encoded ones decoded, number lists as arrays."""
    for key, value in expected.items():
        assert key in actual, key
        if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
            np.testing.assert_array_equal(actual[key], value, strict=False)
        else:
            assert actual[key] == value, (key, actual[key], value)


def rows(n_images: int, per_image: int, n_rows: int, prefix: str) -> RowSet:
    image_ids = np.array([f"{prefix}_{i:04d}" for i in range(n_images)], dtype=object)
    patch_image = RNG.integers(0, n_images, n_rows).astype(np.int64)
    patch_index = RNG.integers(0, per_image, n_rows).astype(np.int64)
    return RowSet(image_ids, patch_image, patch_index)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


# ---------------------------------------------------------------- predictions
def prediction_table() -> pd.DataFrame:
    """Two readable images and one skipped; ids with leading zeros and a label "NA" must stay text."""
    return pd.DataFrame(
        {
            "image_id": ["0007", "0012", "0100"],
            "path": ["data/NA/0007.jpg", "data/NA/0012.png", "data/n01/0100.jpg"],
            "label": ["NA", "NA", "n01"],
            "status": ["ok", "ok", "skipped"],
            "pred_index": np.array([3, 0, -1], dtype=np.int64),
            "prob": [0.8125, 0.1234567890123, np.nan],
            "pred_class": ["n03", "NA", ""],
            "reason": ["", "", "cannot identify image file"],
        }
    )


def test_predictions_round_trip(tmp_path: Path) -> None:
    table = prediction_table()
    shards = [tmp_path / "shard0.tsv", tmp_path / "shard1.tsv"]
    write_predictions(shards[0], table.iloc[:2][list(reversed(PREDICTION_COLUMNS))])  # the writer orders
    write_predictions(shards[1], table.iloc[2:])
    assert_frame_equal(read_predictions(shards), table, check_exact=True)
    assert shards[0].read_text().splitlines()[0].split("\t") == PREDICTION_COLUMNS
    empty = read_predictions([])
    assert list(empty.columns) == PREDICTION_COLUMNS and len(empty) == 0


# ---------------------------------------------------------------- image sets
def test_image_sets_round_trip(tmp_path: Path) -> None:
    sets = pd.DataFrame(
        {
            "class_id": ["n02", "n02", "n02", "007", "007"],
            "image_id": ["a", "b", "c", "0001", "NA"],
            "path": ["x/a.jpg", "x/b.jpg", "x/c.jpg", "y/0001.jpg", "y/NA.jpg"],
            "sampled": [True, False, True, True, True],
        }
    )
    counts = pd.DataFrame(
        {
            "model": ["ps", "ps"],
            "split": ["concepts", "concepts"],
            "class_id": ["n02", "007"],
            "n_predicted": np.array([3, 2], dtype=np.int64),
            "n_selected": np.array([3, 2], dtype=np.int64),
            "status": ["ok", "ok"],
            "reason": ["", "fewer than 5 images"],
        }
    )
    sets_path, counts_path = tmp_path / "sets.tsv", tmp_path / "counts.tsv"
    write_image_sets(sets_path, counts_path, sets, counts)

    assert read_image_sets(sets_path) == {
        "n02": [("a", "x/a.jpg"), ("c", "x/c.jpg")],
        "007": [("0001", "y/0001.jpg"), ("NA", "y/NA.jpg")],
    }
    assert read_image_sets(sets_path, ["007"], sampled_only=False) == {
        "007": [("0001", "y/0001.jpg"), ("NA", "y/NA.jpg")]
    }
    assert read_image_sets(sets_path, sampled_only=False)["n02"] == [
        ("a", "x/a.jpg"),
        ("b", "x/b.jpg"),
        ("c", "x/c.jpg"),
    ]
    assert_frame_equal(read_image_set_counts(counts_path), counts, check_exact=True)

    write_image_sets(sets_path, counts_path, sets.iloc[:0], counts.iloc[:0])  # no class at all: headers only
    assert read_image_sets(sets_path) == {}
    assert list(read_image_set_counts(counts_path).columns) == list(counts.columns)


# ---------------------------------------------------------------- activations
def write_activations(path: Path, acts: dict, image_ids: dict, n_grid: int, skipped: list, attrs: dict) -> None:
    dims = {layer: a.shape[1] for layer, a in next(iter(acts.values())).items()}
    with h5py.File(path, "w", track_order=True) as f:
        store = ActivationFile(f, list(acts), dims, np.float16, {n: 4 for n in dims}, class_rows={"n02": 6})
        for cid, layers in acts.items():
            for layer, a in layers.items():
                for start in range(0, len(a), 4):  # batch by batch, as the extraction appends
                    ds = store.dataset(cid, layer)
                    block = a[start : start + 4]
                    ds.resize(ds.shape[0] + len(block), axis=0)
                    ds[-len(block) :] = block
        store.finish(image_ids, n_grid, skipped, attrs)


def activation_data() -> tuple[dict, dict, int, list, dict]:
    n_grid = 3
    image_ids = {"n02": ["0001", "0002"], "007": ["NA", "b", "c"]}
    dims = {"blocks.1": 8, "pre_logits": 5}
    acts = {
        cid: {layer: RNG.normal(size=(len(ids) * n_grid, d)).astype(np.float16) for layer, d in dims.items()}
        for cid, ids in image_ids.items()
    }
    skipped = [("007", "d", "data/007/d.jpg", "truncated file"), ("n02", "0003", "data/n02/0003.png", "not an image")]
    attrs = {**ATTRS, "layers": list(dims), "classes": list(image_ids), "storage_dtype": "float16"}
    return acts, image_ids, n_grid, skipped, attrs


def test_activations_round_trip(tmp_path: Path) -> None:
    acts, image_ids, n_grid, skipped, attrs = activation_data()
    path = tmp_path / "acts.h5"
    write_activations(path, acts, image_ids, n_grid, skipped, attrs)

    for cid, ids in image_ids.items():
        got, got_ids, patch_image, patch_index = read_class_activations(path, cid)
        assert list(got) == list(acts[cid])  # every layer, in the file's layer order
        for layer, a in acts[cid].items():
            assert_arrays_equal(got[layer], a.astype(np.float32), np.float32)
        assert_strings_equal(got_ids, ids)
        assert_arrays_equal(patch_image, np.repeat(np.arange(len(ids)), n_grid), np.int64)
        assert_arrays_equal(patch_index, np.tile(np.arange(n_grid), len(ids)), np.int64)
    one, *_ = read_class_activations(path, "007", ["pre_logits"])
    assert list(one) == ["pre_logits"]
    with h5py.File(path) as f:
        assert f["n02/acts/blocks.1"].dtype == np.float16  # stored at the storage dtype

    expected = pd.DataFrame({c: [s[j] for s in skipped] for j, c in enumerate(SKIPPED_COLUMNS)})
    assert_frame_equal(read_skipped_images(path), expected, check_exact=True)
    assert_attrs_equal(read_attrs(path), attrs)

    with pytest.raises(KeyError, match="no class 'n99'"):
        read_class_activations(path, "n99")
    with pytest.raises(ValueError, match=r"no layers \['layer9'\]"):
        read_class_activations(path, "n02", ["layer9", "pre_logits"])


def test_an_activation_file_without_a_layer_or_cut_short_is_named(tmp_path: Path) -> None:
    acts, image_ids, n_grid, skipped, attrs = activation_data()
    path = tmp_path / "acts.h5"
    write_activations(path, acts, image_ids, n_grid, skipped, attrs)
    with h5py.File(path, "a") as f:
        del f["007/acts/blocks.1"]
    read_class_activations(path, "007", ["pre_logits"])  # what is left still reads
    with pytest.raises(ValueError, match=r"class '007' has no layers \['blocks.1'\]"):
        read_class_activations(path, "007", ["blocks.1"])
    truncate(path)
    with pytest.raises(DamagedFileError, match="acts.h5: cannot be read as HDF5"):
        read_class_activations(path, "n02")


# ---------------------------------------------------------------- head
def test_head_round_trip(tmp_path: Path) -> None:
    weight = RNG.normal(size=(4, 6)).astype(np.float32)
    bias = RNG.normal(size=4).astype(np.float32)
    path = tmp_path / "head.h5"
    write_head(path, weight, bias, attrs={"model": {"name": "ps", "timm_name": "resnet18", "classes": 4}})
    got_w, got_b = read_head(path)
    assert_arrays_equal(got_w, weight.astype(np.float64), np.float64)
    assert_arrays_equal(got_b, bias.astype(np.float64), np.float64)
    assert read_attrs(path) == {"model": {"name": "ps", "timm_name": "resnet18", "classes": 4}}


# ---------------------------------------------------------------- concepts
def make_concepts(stability: bool = True) -> Concepts:
    layers = LAYERS[A]
    n_images, per_image, n = 4, 3, 11
    r = rows(n_images, per_image, n, "img")
    k, d = K[A], 7
    fit = {
        layer: {"method": "nmf", "rel_error": float(RNG.uniform()), "n_iter": 40 + i, "converged": i % 2 == 0}
        for i, layer in enumerate(layers)
    }
    return Concepts(
        W={layer: RNG.uniform(size=(k, d)) for layer in layers},
        U={layer: RNG.uniform(size=(n, k)) for layer in layers},
        fit=fit,
        image_ids=r.image_ids,
        patch_image=r.patch_image,
        patch_index=r.patch_index,
        stability={"cosine": RNG.uniform(size=k), "self_mcs": RNG.uniform(size=k)} if stability else None,
    )


def assert_concepts_equal(got: Concepts, expected: Concepts) -> None:
    assert got.layers == expected.layers
    for layer in expected.layers:
        assert_arrays_equal(got.W[layer], expected.W[layer], np.float64)
        assert_arrays_equal(got.U[layer], expected.U[layer], np.float64)
        assert got.fit[layer] == expected.fit[layer]
    assert got.rel_error == expected.rel_error
    assert_strings_equal(got.image_ids, expected.image_ids)
    assert_arrays_equal(got.patch_image, expected.patch_image, np.int64)
    assert_arrays_equal(got.patch_index, expected.patch_index, np.int64)
    if expected.stability is None:
        assert got.stability is None
    else:
        assert set(got.stability) == set(expected.stability)
        for name, values in expected.stability.items():
            assert_arrays_equal(got.stability[name], values, np.float64)


@pytest.mark.parametrize("stability", [True, False])
def test_concepts_round_trip(tmp_path: Path, stability: bool) -> None:
    concepts = make_concepts(stability)
    path = tmp_path / "concepts.h5"
    write_concepts(path, concepts, ATTRS)
    assert_concepts_equal(read_concepts(path), concepts)
    assert_attrs_equal(read_attrs(path), {**ATTRS, "skipped": False})
    assert is_skipped(path) == (False, "")


def test_a_changed_concept_file_fails_the_round_trip(tmp_path: Path) -> None:
    """The comparison above can fail: one changed coefficient, one changed fit statistic, one changed id."""
    concepts = make_concepts()
    path = tmp_path / "concepts.h5"
    for change in ("U/blocks.3", "W/pre_logits:n_iter", "image_ids"):
        write_concepts(path, concepts, ATTRS)
        with h5py.File(path, "a") as f:
            if change == "image_ids":
                f["image_ids"][0] = "img_9999"
            elif ":" in change:
                name, attr = change.split(":")
                f[name].attrs[attr] += 1
            else:
                f[change][2, 1] += 1e-12
        with pytest.raises(AssertionError):
            assert_concepts_equal(read_concepts(path), concepts)


# ---------------------------------------------------------------- skip markers (concepts, importance, compare)
@pytest.mark.parametrize("kind", ["concepts", "importance", "compare", "any"])
def test_skipped_round_trip(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.h5"
    skipped = Skipped("only 2 images (min_images: 3)", extra={"n_images": 2, "models": [A, B]})
    attrs = {**ATTRS, "pair": f"{A}-vs-{B}", "class_id": "n02", "models": [A, B]}
    if kind == "concepts":
        write_concepts(path, skipped, attrs)
    elif kind == "importance":
        write_importance(path, skipped, None, attrs)
        assert read_importance(path) is None
    elif kind == "compare":
        write_compare(path, skipped, attrs)
        assert read_compare_metrics(path) is None
        assert read_mmcs(path, "pearson") is None
        assert read_mmcs_null(path, "pearson") is None
        status = read_compare_status(path)
        assert (status.pair, status.class_id, status.models) == (f"{A}-vs-{B}", "n02", (A, B))
        assert (status.skipped, status.reason, status.note) == (True, skipped.reason, "")
    else:
        write_skipped(path, skipped, attrs)
    assert is_skipped(path) == (True, skipped.reason)
    assert_attrs_equal(read_attrs(path), {**attrs, **skipped.extra, "skipped": True, "reason": skipped.reason})
    with h5py.File(path) as f:
        assert len(f) == 0  # a marker holds no data


# ---------------------------------------------------------------- importance
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_importance_round_trip(tmp_path: Path, dtype) -> None:
    importance = RNG.normal(size=K[A]).astype(dtype)
    attributions = RNG.normal(size=(12, K[A])).astype(dtype)
    path = tmp_path / "importance.h5"
    write_importance(path, importance, attributions, ATTRS)
    assert_arrays_equal(read_importance(path), importance, dtype)
    with h5py.File(path) as f:  # no reader: stored for the record
        assert_arrays_equal(f["attributions"][()], attributions, dtype)
    assert_attrs_equal(read_attrs(path), {**ATTRS, "skipped": False})
    assert is_skipped(path) == (False, "")


# ---------------------------------------------------------------- compare
def make_comparison() -> ClassComparison:
    views_n = 4
    cross = [direction(B, A), direction(A, B)]
    every = [*cross, direction(A, A), direction(B, B)]
    tgt = {direction(s, t): t for s in (A, B) for t in (A, B)}
    k = {d: K[tgt[d]] for d in every}

    def vec(d: str) -> np.ndarray:
        v = RNG.uniform(-1, 1, size=k[d])
        v[-1] = np.nan  # an undefined score (a constant concept) must come back as NaN
        return v

    heldout, pool = rows(3, 4, M, "held"), rows(5, 4, N, "pool")
    return ClassComparison(
        layers={m: list(v) for m, v in LAYERS.items()},
        mmcs={meth: RNG.uniform(size=(len(LAYERS[A]), len(LAYERS[B]))) for meth in ("pearson", "spearman")},
        mcs={(d, meth): vec(d) for d in cross for meth in ("pearson", "spearman")},
        regression={
            d: {"pearson": vec(d), "spearman": vec(d), "cv_pearson": vec(d), "pred": RNG.normal(size=(M, k[d]))}
            for d in every
        },
        replacement={d: {"l2": vec(d), "kl": vec(d), "match_acc": vec(d)} for d in cross},
        views={d: RNG.integers(-1, M, size=(k[d], 3, views_n)).astype(np.int64) for d in cross},
        heldout_U={m: RNG.uniform(size=(M, K[m])) for m in (A, B)},
        pool_U_pre_logits={m: RNG.uniform(size=(N, K[m])) for m in (A, B)},
        heldout_rows=heldout,
        pool_rows=pool,
        intervals={
            **{("regression", d): {n: vec(d) for n in ("ci_low", "ci_high", "se_z", "df")} for d in every},
            **{("mcs", d): {n: vec(d) for n in ("ci_low", "ci_high")} for d in cross},
        },
        null={d: (vec(d), vec(d)) for d in cross},
        mmcs_null={meth: RNG.uniform(size=(len(LAYERS[A]), len(LAYERS[B]))) for meth in ("pearson", "spearman")},
        importance={m: RNG.uniform(size=K[m]) for m in (A, B)},
        rel_error={m: [float(x) for x in RNG.uniform(size=len(LAYERS[m]))] for m in (A, B)},
        stability={A: {"cosine": RNG.uniform(size=K[A]), "self_mcs": RNG.uniform(size=K[A])}, B: None},
    )


COMPARE_ATTRS = {**ATTRS, "pair": f"{A}-vs-{B}", "class_id": "n02", "models": [A, B], "note": "1 held-out image"}


def test_compare_round_trip(tmp_path: Path) -> None:
    res = make_comparison()
    path = tmp_path / "compare.h5"
    write_compare(path, res, COMPARE_ATTRS)

    status = read_compare_status(path)
    assert (status.pair, status.class_id, status.models) == (f"{A}-vs-{B}", "n02", (A, B))
    assert (status.skipped, status.reason, status.note) == (False, "", "1 held-out image")
    assert_attrs_equal(read_attrs(path), {**COMPARE_ATTRS, "skipped": False})
    assert is_skipped(path) == (False, "")

    for meth in ("pearson", "spearman"):
        mmcs, layers_a, layers_b = read_mmcs(path, meth)
        assert_arrays_equal(mmcs, res.mmcs[meth], np.float64)
        assert (layers_a, layers_b) == (LAYERS[A], LAYERS[B])
        assert_arrays_equal(read_mmcs_null(path, meth), res.mmcs_null[meth], np.float64)

    for m in (A, B):
        U, ids, patch_image, patch_index = read_heldout(path, m)
        assert_arrays_equal(U, res.heldout_U[m], np.float64)
        assert_strings_equal(ids, res.heldout_rows.image_ids)
        assert_arrays_equal(patch_image, res.heldout_rows.patch_image, np.int64)
        assert_arrays_equal(patch_index, res.heldout_rows.patch_index, np.int64)
    for src in (A, B):
        for tgt in (A, B):
            assert_arrays_equal(read_prediction(path, src, tgt), res.regression[direction(src, tgt)]["pred"])

    for src, tgt in ((B, A), (A, B)):
        d = direction(src, tgt)
        every = read_concept_views(path, src, tgt)
        assert_arrays_equal(every["views"], res.views[d], np.int64)
        assert_arrays_equal(every["real"], res.heldout_U[tgt])
        assert_arrays_equal(every["pred"], res.regression[d]["pred"])
        assert_strings_equal(every["image_ids"], res.heldout_rows.image_ids)
        assert_arrays_equal(every["patch_image"], res.heldout_rows.patch_image)
        assert_arrays_equal(every["patch_index"], res.heldout_rows.patch_index)
        one = read_concept_views(path, src, tgt, concept=2)
        assert_arrays_equal(one["views"], res.views[d][2])
        assert_arrays_equal(one["real"], res.heldout_U[tgt][:, 2])
        assert_arrays_equal(one["pred"], res.regression[d]["pred"][:, 2])

    metrics = read_compare_metrics(path)
    assert metrics["models"] == (A, B) and metrics["class_id"] == "n02" and metrics["note"] == "1 held-out image"
    assert metrics["has_stability"] == {A: True, B: False}
    assert set(metrics["rel_error"]) == {A, B}
    for m in (A, B):
        assert_arrays_equal(metrics["rel_error"][m], np.asarray(res.rel_error[m]), np.float64)
        assert_arrays_equal(metrics["importance"][m], res.importance[m], np.float64)
    assert set(metrics["directions"]) == {direction(B, A), direction(A, B)}
    for src, tgt in ((B, A), (A, B)):
        d, same = direction(src, tgt), direction(tgt, tgt)
        expected = {
            "mcs_pearson": res.mcs[(d, "pearson")],
            "mcs_spearman": res.mcs[(d, "spearman")],
            "cmcs_pearson": res.regression[d]["pearson"],
            "cmcs_spearman": res.regression[d]["spearman"],
            "smcs_pearson": res.regression[same]["pearson"],
            "smcs_spearman": res.regression[same]["spearman"],
            "cv_cmcs_pearson": res.regression[d]["cv_pearson"],
            **{name: res.replacement[d][name] for name in ("l2", "kl", "match_acc")},
            "cmcs_pearson_ci_low": res.intervals[("regression", d)]["ci_low"],
            "cmcs_pearson_ci_high": res.intervals[("regression", d)]["ci_high"],
            "smcs_pearson_ci_low": res.intervals[("regression", same)]["ci_low"],
            "smcs_pearson_ci_high": res.intervals[("regression", same)]["ci_high"],
            "cmcs_pearson_se_z": res.intervals[("regression", d)]["se_z"],
            "cmcs_pearson_df": res.intervals[("regression", d)]["df"],
            "mcs_pearson_ci_low": res.intervals[("mcs", d)]["ci_low"],
            "mcs_pearson_ci_high": res.intervals[("mcs", d)]["ci_high"],
            "mcs_null_mean": res.null[d][0],
            "mcs_p_value": res.null[d][1],
            "stability_cosine": res.stability[tgt]["cosine"] if res.stability[tgt] else np.full(K[tgt], np.nan),
            "stability_self_mcs": res.stability[tgt]["self_mcs"] if res.stability[tgt] else np.full(K[tgt], np.nan),
        }
        assert set(metrics["directions"][d]) == set(expected)
        for name, values in expected.items():
            assert_arrays_equal(metrics["directions"][d][name], values, np.float64)


def test_compare_without_the_optional_numbers(tmp_path: Path) -> None:
    """No permutations, no intervals, no shared-set importance, no stability: the readers say none (NaN)."""
    full = make_comparison()
    res = ClassComparison(
        **{f: getattr(full, f) for f in ("layers", "mmcs", "mcs", "regression", "replacement", "views")},
        heldout_U=full.heldout_U,
        pool_U_pre_logits=full.pool_U_pre_logits,
        heldout_rows=full.heldout_rows,
        pool_rows=full.pool_rows,
        rel_error=full.rel_error,
    )
    path = tmp_path / "compare.h5"
    write_compare(path, res, COMPARE_ATTRS)
    assert read_mmcs_null(path, "pearson") is None
    metrics = read_compare_metrics(path)
    assert metrics["importance"] == {} and metrics["has_stability"] == {A: False, B: False}
    for d in (direction(B, A), direction(A, B)):
        assert np.isnan(metrics["directions"][d]["mcs_p_value"]).all()
        assert np.isnan(metrics["directions"][d]["cmcs_pearson_ci_low"]).all()
        assert_arrays_equal(metrics["directions"][d]["cmcs_pearson"], res.regression[d]["pearson"], np.float64)


# ---------------------------------------------------------------- layerwise MMCS
def test_layerwise_round_trip(tmp_path: Path) -> None:
    shape = (len(LAYERS[A]), len(LAYERS[B]))
    mean = {meth: RNG.uniform(size=shape) for meth in ("pearson", "spearman")}
    mean["pearson"][0, 1] = np.nan  # a cell no class scored
    count = {meth: RNG.integers(0, 5, size=shape).astype(np.int64) for meth in mean}
    intervals = {"pearson": (mean["pearson"] - 0.1, mean["pearson"] + 0.1)}
    null = {"pearson": RNG.uniform(0, 0.2, size=shape)}
    path = tmp_path / "layerwise.h5"
    write_layerwise(path, (A, B), mean, count, LAYERS, ATTRS, intervals=intervals, null=null)
    for meth in mean:
        got_mean, got_count, layers_a, layers_b = read_layerwise(path, meth)
        assert_arrays_equal(got_mean, mean[meth], np.float64)
        assert_arrays_equal(got_count, count[meth], np.int64)
        assert (layers_a, layers_b) == (LAYERS[A], LAYERS[B])
    assert_attrs_equal(read_attrs(path), {**ATTRS, "models": [A, B]})
    with h5py.File(path) as f:  # the interval and the chance level: no reader, read by the report's tables
        assert_arrays_equal(f["pearson_ci_low"][()], intervals["pearson"][0])
        assert_arrays_equal(f["pearson_ci_high"][()], intervals["pearson"][1])
        assert_arrays_equal(f["pearson_null"][()], null["pearson"])
        assert_arrays_equal(f["pearson_calibrated"][()], mean["pearson"] - null["pearson"])
        assert "spearman_null" not in f and "spearman_ci_low" not in f


# ---------------------------------------------------------------- tidy concept table (CSV)
def concept_table() -> pd.DataFrame:
    """Rows as aggregate_pair writes them: names that look like missing values or hold commas and quotes
    stay text, NaN numbers stay NaN, ``unique`` True / False / undefined."""
    n = 4
    table = pd.DataFrame(
        {
            "pair": f"{A}-vs-{B}",
            "model_a": A,
            "model_b": B,
            "class_id": ["NA", "NA", "n02", "n02"],
            "class_name": ["NA", "NA", 'tench, "Tinca tinca"', 'tench, "Tinca tinca"'],
            "direction": [direction(B, A), direction(A, B)] * 2,
            "source": [B, A] * 2,
            "target": [A, B] * 2,
            "concept": np.array([0, 0, 1, 3], dtype=np.int64),
        }
    )
    for column in CONCEPT_COLUMNS[9:]:
        if column not in ("unique", "note"):
            table[column] = RNG.uniform(-1, 1, size=n)
    table.loc[1, ["cmcs_pearson_ci_low", "cmcs_pearson_ci_high", *UNIQUE_TEST_COLUMNS]] = np.nan
    table["unique"] = pd.array([True, pd.NA, False, True], dtype="boolean")
    table["note"] = ["", "CMCS interval: 1 held-out image", "", "NA"]
    return table[CONCEPT_COLUMNS]


def test_concept_table_round_trip(tmp_path: Path) -> None:
    table = concept_table()
    path = tmp_path / "concepts.csv"
    write_table(path, table)
    got = read_concept_table(path)
    assert_frame_equal(got, table, check_exact=True)
    assert got["unique"].dtype == "boolean" and got["concept"].dtype == np.int64
    assert all(got[c].dtype == np.float64 for c in CONCEPT_COLUMNS[9:-2])

    write_table(path, table.iloc[:0])  # a pair whose every class was skipped
    assert list(read_concept_table(path).columns) == CONCEPT_COLUMNS and len(read_concept_table(path)) == 0


# ---------------------------------------------------------------- damaged files
@pytest.mark.parametrize(
    "reader",
    [read_attrs, read_concepts, read_importance, read_head, read_compare_status, lambda p: read_mmcs(p, "pearson")],
    ids=["attrs", "concepts", "importance", "head", "compare_status", "mmcs"],
)
def test_a_file_cut_short_is_named_with_the_command_that_rebuilds_it(tmp_path: Path, reader) -> None:
    path = tmp_path / "results" / "x.h5"
    path.parent.mkdir()
    write_concepts(path, make_concepts(), ATTRS)
    truncate(path)
    with pytest.raises(DamagedFileError, match=r"x\.h5: cannot be read as HDF5.*snakemake --forcerun"):
        reader(path)
