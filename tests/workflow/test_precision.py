"""bf16 autocast does not change the science: the tiny demo re-run with
``extraction.autocast: bf16`` against its float32 run (issues 7 and 12).

What bf16 changes, and nothing else, is measured and bounded:

1. the stored activations: per (file, class, layer) relative error
   ``||A_bf16 - A_fp32|| / ||A_fp32||`` must stay below ``ACT_REL_BOUND``;
2. the similarities recomputed from the bf16 activations with the float32
   run's concepts (W held fixed, so no factorisation can move to another local
   optimum): the layerwise MMCS within 0.01 and every CMCS within 0.02 of the
   same computation on the float32 activations.

The full pipeline's difference (bf16 refits the concepts, and NMF is
non-convex, so a change in the third digit of the activations can move a
factorisation to another local optimum, differently on each processor) is
not asserted against a fixed number: it measures NMF's luck, not bf16.
``python benchmarks/bf16_pipeline.py`` reports it next to the noise the
factorisation itself has on the float32 activations with another seed.

A test of the test replaces the bf16 activations by the float32 ones with 5 %
relative noise (what a broken autocast could look like) and checks that the
bounds catch it.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import dry_run_jobs, run_tiny

from rsvc.compare import compare_job
from rsvc.formats import Skipped, read_attrs, read_layerwise
from rsvc.settings import CompareSettings, UncertaintySettings, with_defaults
from rsvc.tables import nan_mean

pytestmark = pytest.mark.workflow

PAIR = "ps-vs-nc"
# bf16 keeps 8 significant bits: unit roundoff u = 2**-8 = 0.0039 per rounding.
# A forward pass rounds the input of every layer, so the error of a deep layer
# is a few u; 0.03 (about 8 u) is far above what bf16 with float32
# accumulation gives on any CPU (0.3 % seen) and far below 5 % noise.
ACT_REL_BOUND = 0.03
MMCS_BOUND = 0.01
CMCS_BOUND = 0.02


# ------------------------------------------------------------------ reading the runs
def _activation_files(out: Path) -> dict[Path, Path]:
    return {p.relative_to(out): p for p in sorted((out / "activations").rglob("*.h5"))}


def _activation_errors(fp32: Path, other: Path) -> dict[tuple[str, str, str], float]:
    """(file, class, layer) -> ||A_other - A_fp32|| / ||A_fp32|| over all patches of the class."""
    errors = {}
    files = _activation_files(fp32)
    assert files and set(files) == set(_activation_files(other))
    for rel, path in files.items():
        with h5py.File(path, "r") as fa, h5py.File(other / rel, "r") as fb:
            for cid in fa:
                if "acts" not in fa[cid]:
                    continue
                for layer in fa[cid]["acts"]:
                    A = fa[cid]["acts"][layer][()].astype(np.float64)
                    B = fb[cid]["acts"][layer][()].astype(np.float64)
                    assert A.shape == B.shape, (rel, cid, layer)
                    errors[(str(rel), cid, layer)] = float(np.linalg.norm(B - A) / np.linalg.norm(A))
    return errors


def _mmcs_file(out: Path) -> dict[str, np.ndarray]:
    """The stored layerwise MMCS matrices of the pair (mean over classes), per method."""
    return {kind: read_layerwise(out / f"pairs/{PAIR}/layerwise_mmcs.h5", kind)[0] for kind in ("pearson", "spearman")}


def _compare_settings(cfg: dict) -> CompareSettings:
    """The workflow's compare settings of ``cfg``, without the permutation nulls (not compared here)."""
    return dataclasses.replace(CompareSettings.from_config(with_defaults(cfg)), uncertainty=UncertaintySettings())


def _shard_file(out: Path, model: str, owner: str, split: str, class_id: str) -> Path:
    """The activation file of the class's shard (the tiny config has one shard: every class is in it)."""
    (path,) = sorted((out / f"activations/{model}/on_{owner}/{split}").glob("shard*.h5"))
    return path


def _recompare(cfg: dict, acts_out: Path, concepts_dir: Path) -> dict[str, dict]:
    """class -> compare results from ``acts_out``'s activations and the concepts in ``concepts_dir``."""
    models = tuple(PAIR.split("-vs-"))
    settings = _compare_settings(cfg)
    results = {}
    for class_id in cfg["dataset"]["classes"]:
        acts = {
            (m, o, s): _shard_file(acts_out, m, o, s, class_id)
            for m in models
            for o in models
            for s in (settings.pool_split, settings.heldout_split)
        }
        data, _ = compare_job(
            models,
            class_id,
            acts,
            concepts={m: concepts_dir / m / f"{class_id}.h5" for m in models},
            heads={m: acts_out / f"heads/{m}.h5" for m in models},
            settings=settings,
        )
        if not isinstance(data, Skipped):
            results[class_id] = data
    return results


def _layerwise(results: dict[str, dict], kind: str) -> np.ndarray:
    """Mean over classes of the per-class MMCS matrices (NaN ignored), as the aggregate rule computes it."""
    return nan_mean([r.mmcs[kind] for r in results.values()])[0]


def _directions(results: dict[str, dict]) -> list[str]:
    a, b = PAIR.split("-vs-")
    return [f"{b}->{a}", f"{a}->{b}"]


def fixed_w_differences(cfg: dict, fp32: Path, other: Path) -> dict[str, float]:
    """MMCS and CMCS recomputed from ``other``'s activations with ``fp32``'s concepts,
    against the same computation on ``fp32``'s activations: the largest differences."""
    ref = _recompare(cfg, fp32, fp32 / "concepts")
    stored = _mmcs_file(fp32)
    for kind in stored:  # the recomputation is the workflow's: the mean of its per-class matrices is the stored one
        np.testing.assert_allclose(_layerwise(ref, kind), stored[kind], atol=1e-9)
    new = _recompare(cfg, other, fp32 / "concepts")
    assert set(ref) == set(new) and ref, "W held fixed: the same classes must be compared"
    out = {}
    for kind in ("pearson", "spearman"):
        a, b = _layerwise(ref, kind), _layerwise(new, kind)
        out[f"mmcs_{kind}"] = float(np.nanmax(np.abs(a - b)))
        out[f"mmcs_{kind}_nan_mismatch"] = int((np.isnan(a) != np.isnan(b)).sum())
    cmcs, mismatch = [], 0
    for cid in ref:
        for d in _directions(ref):
            x, y = ref[cid].regression[d]["pearson"], new[cid].regression[d]["pearson"]
            # a concept constant on the held-out patches has no correlation (NaN)
            both = np.isfinite(x) & np.isfinite(y)
            mismatch += int((np.isfinite(x) != np.isfinite(y)).sum())
            cmcs.append(np.abs(x[both] - y[both]))
    out["cmcs_pearson"] = float(np.concatenate(cmcs).max())
    out["cmcs_nan_mismatch"] = mismatch
    return out


def bf16_failures(errors: dict, fixed: dict) -> list[str]:
    """The precision contract, as a list of broken promises (empty when bf16 is fine)."""
    failures = []
    worst = max(errors, key=errors.get)
    if errors[worst] > ACT_REL_BOUND:
        failures.append(f"activation relative error {errors[worst]:.4f} > {ACT_REL_BOUND} at {worst}")
    for kind in ("pearson", "spearman"):
        if fixed[f"mmcs_{kind}"] > MMCS_BOUND:
            failures.append(f"layerwise MMCS ({kind}) with W fixed differs by {fixed[f'mmcs_{kind}']:.4f}")
    for key in ("mmcs_pearson_nan_mismatch", "mmcs_spearman_nan_mismatch", "cmcs_nan_mismatch"):
        if fixed[key]:
            failures.append(f"{key}: {fixed[key]} values defined in one run and NaN in the other (W fixed)")
    if fixed["cmcs_pearson"] > CMCS_BOUND:
        failures.append(f"CMCS with W fixed differs by {fixed['cmcs_pearson']:.4f}")
    return failures


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def bf16_run(tiny_run, tmp_path_factory):
    workdir, cfg = tiny_run
    clone = tmp_path_factory.mktemp("bf16")
    shutil.copytree(workdir, clone, dirs_exist_ok=True, symlinks=True)
    cfg = copy.deepcopy(cfg)
    cfg["extraction"]["autocast"] = "bf16"
    jobs = dry_run_jobs(clone, cfg)
    run_tiny(clone, cfg)
    return workdir / "results", clone / "results", jobs


@pytest.fixture(scope="module")
def noisy_acts(tiny_run, tmp_path_factory):
    """The float32 results with every stored activation replaced by A (1 + 0.05 e), e ~ N(0, 1):
    5 % relative noise, what a broken autocast could give."""
    workdir, _ = tiny_run
    out = tmp_path_factory.mktemp("noisy") / "results"
    for sub in ("activations", "heads"):
        shutil.copytree(workdir / "results" / sub, out / sub)
    rng = np.random.default_rng(0)
    for path in sorted((out / "activations").rglob("*.h5")):
        with h5py.File(path, "r+") as f:
            for cid in f:
                if "acts" in f[cid]:
                    for ds in f[cid]["acts"].values():
                        A = ds[()]
                        ds[...] = A * (1 + 0.05 * rng.standard_normal(A.shape)).astype(A.dtype)
    return out


# ------------------------------------------------------------------ tests
def test_autocast_reruns_only_the_activation_half(bf16_run):
    _, _, jobs = bf16_run
    rules = {rule for rule, _ in jobs}
    assert "activations" in rules and "compare" in rules
    assert not rules & {"make_dataset", "train_model", "predict", "image_sets", "export_head"}, rules


def test_bf16_is_recorded_in_the_activation_files(bf16_run):
    fp32, bf16, _ = bf16_run
    for out, expected in ((fp32, None), (bf16, "bf16")):
        files = sorted((out / "activations").rglob("*.h5"))
        assert files
        for path in files:
            assert read_attrs(path)["autocast"] == expected, path


def test_bf16_changes_activations_within_bf16_precision(bf16_run, tiny_run, measurement):
    fp32, bf16, _ = bf16_run
    errors = _activation_errors(fp32, bf16)
    worst = max(errors.values())
    measurement(
        f"bf16 activations: relative error median {np.median(list(errors.values())):.4f}, "
        f"max {worst:.4f} over {len(errors)} (file, class, layer) (bound {ACT_REL_BOUND})"
    )
    assert worst > 0, "bf16 gave bit-identical activations: autocast was not applied"
    fixed = fixed_w_differences(tiny_run[1], fp32, bf16)
    measurement(
        "bf16, W held fixed: "
        + ", ".join(f"{k} {v}" if k.endswith("mismatch") else f"{k} max diff {v:.4f}" for k, v in fixed.items())
    )
    assert not bf16_failures(errors, fixed)


def test_the_bounds_catch_five_percent_noise(bf16_run, tiny_run, noisy_acts, measurement):
    """Test of the test: 5 % relative noise in place of bf16 breaks the contract."""
    fp32, _, _ = bf16_run
    errors = _activation_errors(fp32, noisy_acts)
    fixed = fixed_w_differences(tiny_run[1], fp32, noisy_acts)
    failures = bf16_failures(errors, fixed)
    measurement("5 % noise instead of bf16: " + "; ".join(failures))
    assert any("activation relative error" in f for f in failures), failures


def test_bf16_compares_the_same_layers_and_classes(bf16_run):
    """The stored layerwise MMCS of both runs: the same layers, and a cell defined in one is defined in the other."""
    fp32, bf16, _ = bf16_run
    a, b = _mmcs_file(fp32), _mmcs_file(bf16)
    for kind in a:
        assert a[kind].shape == b[kind].shape
        np.testing.assert_array_equal(np.isnan(a[kind]), np.isnan(b[kind]))
