"""Change one config key of a finished run: the dry run must schedule exactly the rules whose
numbers the key changes (Snakemake's default rerun triggers on params, inputs and code), and
nothing for the settings that change only speed."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
from conftest import dry_run_jobs

pytestmark = pytest.mark.workflow

ANALYSIS = {"compare", "aggregate_pair", "gallery", "explorer", "summary", "planted_concept"}
CONCEPTS = {"concepts", "importance"} | ANALYSIS
NOTHING: set[str] = set()

# (config key, new value, the rules that must rerun)
CASES = [
    ("extraction.batch_size", 32, NOTHING),
    ("extraction.predict_batch_size", 32, NOTHING),
    ("extraction.num_workers", 1, NOTHING),
    ("extraction.device", "cpu", NOTHING),
    ("extraction.compile", True, NOTHING),
    ("resources.cpu_threads", 2, NOTHING),
    ("resources.gpu_threads", 1, NOTHING),
    ("explorer.threads", 1, NOTHING),
    ("concepts.k", 4, CONCEPTS),
    ("concepts.max_iter", 90, CONCEPTS),
    ("concepts.restarts", 1, CONCEPTS),
    ("uncertainty.bootstrap", 50, {"aggregate_pair", "gallery", "explorer", "summary"}),
    ("uncertainty.level", 0.9, ANALYSIS),
    ("uncertainty.fdr", 0.1, {"aggregate_pair", "gallery", "explorer", "summary"}),
    ("uncertainty.fdr_method", "by", {"aggregate_pair", "gallery", "explorer", "summary"}),
    ("uncertainty.permutations", 50, ANALYSIS),
    ("uncertainty.mmcs_permutations", 5, ANALYSIS),
    ("models.ps.decomposition", "seminmf", CONCEPTS),
    # the pool image sets sample concept_images of one ranking and shared_images of another
    ("concepts.shared_images", 18, {"image_sets", "activations"} | CONCEPTS),
    ("concepts.min_heldout_images", 3, ANALYSIS),
    ("concepts.min_images", 6, ANALYSIS),  # at least regression.folds (5)
    ("concepts.min_images_per_model", 2, {"image_sets", "activations"} | CONCEPTS),
    ("concepts.heldout_images", 6, {"image_sets", "activations"} | ANALYSIS),
    ("concepts.concept_images", 10, {"image_sets", "activations"} | CONCEPTS),
    ("extraction.autocast", "bf16", {"activations"} | CONCEPTS),
    ("dataset.image_sets", "labels", {"image_sets", "activations"} | CONCEPTS),
    ("dataset.preprocess", "timm_eval", {"predict", "image_sets", "activations"} | CONCEPTS),
    ("regression.alpha", 0.2, ANALYSIS),
    ("regression.folds", 3, ANALYSIS),
    ("replacement.mix", 0.5, ANALYSIS),
    ("gallery.n", 3, ANALYSIS),
    ("explorer.thumb_size", 32, {"explorer"}),
    ("gallery.similarity_threshold", 0.4, {"aggregate_pair", "gallery", "explorer", "summary"}),
    ("importance.images", "shared", ANALYSIS),
    ("importance.steps", 20, {"importance", "aggregate_pair", "gallery", "explorer", "summary"}),
    ("importance.target", "logit", {"importance", "aggregate_pair", "gallery", "explorer", "summary"}),
]


def _set(cfg: dict, key: str, value) -> dict:
    cfg = copy.deepcopy(cfg)
    *parents, leaf = key.split(".")
    node = cfg
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return cfg


@pytest.fixture(scope="module")
def schedules(tiny_run, tmp_path_factory):
    """key -> Counter(rule -> jobs) of the dry run after changing that key on the finished tiny run."""
    workdir, cfg = tiny_run
    configs = tmp_path_factory.mktemp("rerun_configs")
    assert dry_run_jobs(workdir, cfg, configs / "unchanged.yaml") == [], "the finished run must be complete"
    out = {}
    for key, value, _ in CASES:
        jobs = dry_run_jobs(workdir, _set(cfg, key, value), configs / f"{key}.yaml")
        out[key] = Counter(rule for rule, _ in jobs if rule != "all")
    return out


@pytest.mark.parametrize(("key", "value", "expected"), CASES, ids=[c[0] for c in CASES])
def test_a_change_reruns_exactly_what_it_changes(schedules, key, value, expected, measurement):
    """Each line of docs/reliability.md's table ("What a config change reruns"), jobs per rule printed at the end."""
    jobs = schedules[key]
    measurement(f"{key} = {value!r}: " + (", ".join(f"{rule} {n}" for rule, n in sorted(jobs.items())) or "nothing"))
    assert set(jobs) == expected, (key, dict(jobs))


def test_split_and_model_specific_changes_rerun_only_that_split_or_model(schedules, tiny_run):
    _, cfg = tiny_run
    n_classes = len(cfg["dataset"]["classes"])
    n_shards = -(-n_classes // cfg["extraction"]["shard_size"])  # importance: one job per class shard
    n_models = len(cfg["models"])
    held = schedules["concepts.heldout_images"]
    assert held["image_sets"] == n_models, "only the held-out image sets (one per model)"
    assert held["activations"] == n_models * n_models, "only the held-out activations (model x owner)"
    ps_only = schedules["models.ps.decomposition"]
    assert ps_only["concepts"] == n_classes and ps_only["importance"] == n_shards, "only ps's concepts"


def _reversed_keys(value, top=True):
    """``value`` with every mapping's keys in reverse order, except the models' own order."""
    if isinstance(value, dict):
        return {
            k: (
                {m: _reversed_keys(s, False) for m, s in value[k].items()}
                if top and k == "models"
                else _reversed_keys(value[k], False)
            )
            for k in reversed(list(value))
        }
    if isinstance(value, list):
        return [_reversed_keys(v, False) for v in value]
    return value


def test_writing_the_config_keys_in_another_order_reruns_nothing(tiny_run, tmp_path):
    workdir, cfg = tiny_run
    shuffled = _reversed_keys(cfg)
    assert list(shuffled["dataset"]) != list(cfg["dataset"])  # the test does reorder
    assert dry_run_jobs(workdir, shuffled, tmp_path / "reordered.yaml") == []


def test_preprocess_auto_is_canonical_for_the_models_the_workflow_trains(tiny_run, tmp_path):
    """dataset.preprocess: auto (the default) resolves to canonical for trained models (what they were
    trained on): writing it out explicitly changes no number, so it reruns nothing."""
    workdir, cfg = tiny_run
    assert "preprocess" not in cfg["dataset"]
    assert dry_run_jobs(workdir, _set(cfg, "dataset.preprocess", "canonical"), tmp_path / "canonical.yaml") == []
