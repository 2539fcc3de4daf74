"""Every output of a run by name, written once: the path templates, the pair figures and the galleries.

Pure Python, like :mod:`rsvc.specs`: the rules (``rules/common.smk``), the tests and the benchmarks all
find a run's files through :class:`RunPaths`, so no path is spelt twice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

#: Output path templates relative to the run's folder (``outdir``), with their wildcards.
#: ``importance`` and ``compare`` run one job per class shard: a folder per shard (``*_shard``), one
#: file per class inside.
TEMPLATES = {
    "weights": "weights/{model}.ok",
    "predictions": "predictions/{model}/{split}/shard{shard}.tsv",
    "image_sets": "image_sets/{model}/{split}.tsv",
    "image_set_counts": "image_sets/{model}/{split}.counts.tsv",
    "head": "heads/{model}.h5",
    "activations": "activations/{model}/on_{owner}/{split}/shard{shard}.h5",
    "concepts": "concepts/{model}/{class_id}.h5",
    "importance_shard": "importance/{model}/shard{shard}",
    "importance": "importance/{model}/shard{shard}/{class_id}.h5",
    "compare_shard": "compare/{pair}/shard{shard}",
    "compare": "compare/{pair}/shard{shard}/{class_id}.h5",
    "pair_table": "pairs/{pair}/concepts.csv",
    "pair_layerwise": "pairs/{pair}/layerwise_mmcs.h5",
    "pair_figure": "pairs/{pair}/{figure}.png",
    "gallery": "pairs/{pair}/galleries/{gallery}.png",
    "explorer": "explorer/{pair}",
    "explorer_link": "explorer/{pair}.html",
    "run_summary": "summary/run_summary.tsv",
    "pairs_summary": "summary/pairs.csv",
    "skipped_images": "summary/skipped_images.tsv",
    "model_matrix": "summary/model_matrix.png",
    "planted": "summary/planted_concept.csv",
    "model_checkpoint": "models/{model}.safetensors",
    "model_metrics": "models/{model}.metrics.json",
}

#: The figures of a pair: name -> (report caption file under ``report/``, what it shows, for which models;
#: ``{a}``, ``{b}``: the pair's models, "X → Y": the concepts of Y predicted from the activations of X).
#: :func:`rsvc.plots.pair_figures` draws exactly these.
PAIR_FIGURES: dict[str, tuple[str, str, str]] = {
    "layerwise_mmcs_pearson": ("layerwise_mmcs.rst", "layerwise MMCS (Pearson)", "{a} rows, {b} columns"),
    "layerwise_mmcs_spearman": ("layerwise_mmcs.rst", "layerwise MMCS (Spearman)", "{a} rows, {b} columns"),
    "layerwise_mmcs_pearson_calibrated": (
        "layerwise_mmcs.rst",
        "layerwise MMCS minus chance (Pearson)",
        "{a} rows, {b} columns",
    ),
    "layerwise_mmcs_spearman_calibrated": (
        "layerwise_mmcs.rst",
        "layerwise MMCS minus chance (Spearman)",
        "{a} rows, {b} columns",
    ),
    "cmcs_importance_b_to_a": ("similarity_importance.rst", "CMCS vs importance", "{b} → {a}"),
    "cmcs_importance_a_to_b": ("similarity_importance.rst", "CMCS vs importance", "{a} → {b}"),
    "smcs_importance_a": ("smcs_importance.rst", "SMCS vs importance", "{a} → {a}"),
    "smcs_importance_b": ("smcs_importance.rst", "SMCS vs importance", "{b} → {b}"),
    "replacement_b_to_a": ("replacement.rst", "replacement test", "{b} → {a}"),
    "replacement_a_to_b": ("replacement.rst", "replacement test", "{a} → {b}"),
    "mcs_cmcs": ("mcs_cmcs.rst", "MCS vs CMCS", "{a} ↔ {b}"),
}


def gallery_names(concepts_per_direction: int) -> list[str]:
    """The galleries of a pair: the lowest-CMCS concept of the first class in each direction, and the
    ``concepts_per_direction`` most important low-CMCS concepts of each (config ``gallery``)."""
    return ["lowest_cmcs_class0_b_to_a", "lowest_cmcs_class0_a_to_b"] + [
        f"important_{d}_{i}" for d in ("b_to_a", "a_to_b") for i in range(concepts_per_direction)
    ]


def shard_name(class_index: int, shard_size: int) -> str:
    """The class shard (``extraction.shard_size`` classes each) of the class at ``class_index``."""
    return f"{class_index // shard_size:04d}"


@dataclass(frozen=True)
class RunPaths:
    """The files of one run: ``run(kind, **wildcards)`` is :data:`TEMPLATES` ``[kind]`` under ``outdir``
    with its wildcards filled (a value ``"{pair}"`` leaves that wildcard to a rule); the shard of a
    per-class file follows from its ``class_id`` (``classes`` in the models' output order)."""

    outdir: str
    classes: Sequence[str]
    shard_size: int

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], classes: Sequence[str] | None = None, root: str | os.PathLike | None = None
    ) -> RunPaths:
        """The run of a config (schema defaults filled); ``classes``: the class ids when ``dataset.classes``
        names a file rather than listing them; ``root``: the folder the run worked in (its ``outdir`` is
        relative to it)."""
        outdir = config["outdir"] if root is None else os.path.join(root, config["outdir"])
        return cls(
            str(outdir),
            tuple(config["dataset"]["classes"] if classes is None else classes),
            int(config["extraction"]["shard_size"]),
        )

    @cached_property
    def templates(self) -> dict[str, str]:
        """Every template with the run's folder in front."""
        return {kind: f"{self.outdir}/{template}" for kind, template in TEMPLATES.items()}

    @cached_property
    def class_index(self) -> dict[str, int]:
        """Class id -> the models' output index."""
        return {c: i for i, c in enumerate(self.classes)}

    def shard_of(self, class_id: str) -> str:
        """The shard of a class (KeyError for a class not in ``classes``)."""
        return shard_name(self.class_index[class_id], self.shard_size)

    def __call__(self, kind: str, **wildcards: str) -> str:
        if "{shard}" in TEMPLATES[kind] and "class_id" in wildcards and "shard" not in wildcards:
            wildcards["shard"] = self.shard_of(wildcards["class_id"])
        return self.templates[kind].format(**wildcards)

    def compare_inputs(self, models: Sequence[str], class_id: str, splits: Sequence[str]) -> dict[str, dict]:
        """What :func:`rsvc.compare.compare_job` reads for one class of a finished run: ``activations``
        ((model, owner, split) -> file), ``concepts`` and ``heads`` (model -> file)."""
        return {
            "activations": {
                (m, o, s): self("activations", model=m, owner=o, split=s, class_id=class_id)
                for m in models
                for o in models
                for s in splits
            },
            "concepts": {m: self("concepts", model=m, class_id=class_id) for m in models},
            "heads": {m: self("head", model=m) for m in models},
        }
