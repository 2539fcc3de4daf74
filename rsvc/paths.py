"""Every output of a run by name, written once: the path templates, the jobs' logs and benchmark files,
the pair figures and the galleries.

Pure Python, like :mod:`rsvc.specs`: the rules (``rules/common.smk``), the tests and the benchmarks all
find a run's files here, so no path is spelt twice:

- :func:`templates` (every template under a run's folder) and :func:`fill` (one of them with its
  wildcards; the shard of a per-class file follows from its class) are what the rules use;
- :class:`RunPaths` holds both for one run, from its config (``RunPaths.from_config``);
- :func:`pattern`, :func:`files` and :func:`wildcards_of` find and name the files of a finished run
  without its config (every wildcard a ``*``).
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

#: Output path templates relative to the run's folder (``outdir``), with their wildcards.
_OUTPUTS = {
    "weights": "weights/{model}.ok",
    "predictions": "predictions/{model}/{split}/shard{shard}.tsv",
    "image_sets": "image_sets/{model}/{split}.tsv",
    "image_set_counts": "image_sets/{model}/{split}.counts.tsv",
    "head": "heads/{model}.h5",
    "activations": "activations/{model}/on_{owner}/{split}/shard{shard}.h5",
    "concepts": "concepts/{model}/{class_id}.h5",
    # importance and compare run one job per class shard: a folder per shard, one file per class inside
    "importance_shard": "importance/{model}/shard{shard}",
    "compare_shard": "compare/{pair}/shard{shard}",
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

#: Each rule's jobs by their wildcards: a job's log is ``logs/<rule>/<name>.log``, Snakemake's
#: measurement of it (``benchmark:``) ``benchmarks/<rule>/<name>.tsv``; "" for a rule of one job
#: (``logs/<rule>.log``). ``rule`` here is the rule's name in ``rules/*.smk``.
JOB_NAMES = {
    "fetch_weights": "{model}",
    "make_dataset": "{scheme}",
    "train_model": "{model}",
    "predict": "{model}/{split}/shard{shard}",
    "image_sets": "{model}/{split}",
    "export_head": "{model}",
    "activations": "{model}/on_{owner}/{split}/shard{shard}",
    "concepts": "{model}/{class_id}",
    "importance": "{model}/shard{shard}",
    "compare": "{pair}/shard{shard}",
    "aggregate_pair": "{pair}",
    "gallery": "{pair}",
    "explorer": "{pair}",
    "summary": "",
    "planted_concept": "",
}
#: Rules without a ``benchmark:`` (a download on the login node; a few seconds of tables).
NOT_BENCHMARKED = frozenset({"fetch_weights", "planted_concept"})
#: The folders of the jobs' logs and benchmark files: records of how a run went, not its results.
LOGS, BENCHMARKS = "logs", "benchmarks"


def _job_file(folder: str, rule: str, suffix: str) -> str:
    name = JOB_NAMES[rule]
    return f"{folder}/{rule}/{name}{suffix}" if name else f"{folder}/{rule}{suffix}"


#: Every path template of a run, relative to its folder: the outputs above; ``importance`` and
#: ``compare``, one file per class inside their shard folders; ``logs/<rule>`` and
#: ``benchmarks/<rule>``, the log and benchmark file of each of the rule's jobs.
TEMPLATES: dict[str, str] = {
    **_OUTPUTS,
    **{kind: f"{_OUTPUTS[f'{kind}_shard']}/{{class_id}}.h5" for kind in ("importance", "compare")},
    **{f"{LOGS}/{rule}": _job_file(LOGS, rule, ".log") for rule in JOB_NAMES},
    **{
        f"{BENCHMARKS}/{rule}": _job_file(BENCHMARKS, rule, ".tsv") for rule in JOB_NAMES if rule not in NOT_BENCHMARKED
    },
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


def templates(outdir: str | os.PathLike) -> dict[str, str]:
    """Every template of :data:`TEMPLATES` with the run's folder ``outdir`` in front."""
    return {kind: f"{outdir}/{template}" for kind, template in TEMPLATES.items()}


def fill(
    templates: Mapping[str, str], kind: str, shard_of: Callable[[str], str] | None = None, **wildcards: str
) -> str:
    """``templates[kind]`` with its wildcards filled (a value ``"{pair}"`` leaves that wildcard to a rule).
    The shard of a per-class file inside a shard folder, unless given, follows from its ``class_id``
    through ``shard_of`` (e.g. :meth:`RunPaths.shard_of`)."""
    template = templates[kind]
    if "{shard}" in template and "class_id" in wildcards and "shard" not in wildcards:
        if shard_of is None:
            raise ValueError(f"{kind}: the shard of class {wildcards['class_id']!r} needs shard_of (or shard=)")
        wildcards["shard"] = shard_of(wildcards["class_id"])
    return template.format(**wildcards)


def _fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def pattern(kind: str, **wildcards: str) -> str:
    """A glob pattern, relative to a run's folder, of the files of ``kind``: the given wildcards filled,
    every other one ``*`` (``pattern("compare", pair="a-vs-b")`` is ``compare/a-vs-b/shard*/*.h5``)."""
    template = TEMPLATES[kind]
    return template.format(**{name: wildcards.get(name, "*") for name in _fields(template)})


def files(outdir: str | os.PathLike, kind: str, **wildcards: str) -> list[Path]:
    """The files (or folders) of ``kind`` that exist under the run's folder ``outdir``, sorted; the given
    wildcards filled, the others any value (see :func:`pattern`)."""
    return sorted(Path(outdir).glob(pattern(kind, **wildcards)))


def wildcards_of(kind: str, path: str | os.PathLike, outdir: str | os.PathLike | None = None) -> dict[str, str]:
    """The wildcards of a file of ``kind`` (its path relative to the run's folder, or under ``outdir``);
    ValueError when the path is not one of ``kind``."""
    rel = Path(path) if outdir is None else Path(path).relative_to(outdir)
    regex, last = "", 0
    template = TEMPLATES[kind]
    for m in re.finditer(r"\{(\w+)\}", template):
        regex += re.escape(template[last : m.start()]) + f"(?P<{m.group(1)}>[^/]+)"
        last = m.end()
    match = re.fullmatch(regex + re.escape(template[last:]), rel.as_posix())
    if match is None:
        raise ValueError(f"{rel} is not a file of {kind} ({template})")
    return match.groupdict()


@dataclass(frozen=True)
class RunPaths:
    """The files of one run: ``run(kind, **wildcards)`` is :data:`TEMPLATES` ``[kind]`` under ``outdir``
    with its wildcards filled (:func:`fill`; a value ``"{pair}"`` leaves that wildcard to a rule); the shard
    of a per-class file follows from its ``class_id`` (``classes`` in the models' output order)."""

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
        return templates(self.outdir)

    @cached_property
    def class_index(self) -> dict[str, int]:
        """Class id -> the models' output index."""
        return {c: i for i, c in enumerate(self.classes)}

    def shard_of(self, class_id: str) -> str:
        """The shard of a class (KeyError for a class not in ``classes``)."""
        return shard_name(self.class_index[class_id], self.shard_size)

    def __call__(self, kind: str, **wildcards: str) -> str:
        return fill(self.templates, kind, self.shard_of, **wildcards)

    def files(self, kind: str, **wildcards: str) -> list[Path]:
        """The run's files of ``kind`` that exist (:func:`files`)."""
        return files(self.outdir, kind, **wildcards)

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
