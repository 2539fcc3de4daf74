"""Config validation, the class/shard/pair bookkeeping and path helpers."""

import hashlib
import itertools
import os
import shutil
import sys
import tempfile
from pathlib import Path

from snakemake.utils import validate


# ------------------------------------------------------------------ the workflow's own files
# The workflow may come from a checkout or, used as a module (`module rsvc: snakefile:
# github(..., tag=...)`, docs/deploy.md), from a git tag: its files are then read through
# Snakemake's source cache, never as paths next to workflow.basedir (which is the folder of
# the *user's* Snakefile there).
def workflow_file(rel):
    """A local path to the file ``rel`` (relative to the repository root) of this workflow's
    own source: in a checkout the file, from a tag a cached copy."""
    return str(workflow.source_path(f"../{rel}"))


SCHEMA_SOURCE = "schemas/config.schema.yaml"


def _read_yaml(rel):
    """A YAML file of this workflow's own source (``rel`` from the repository root)."""
    import yaml

    return yaml.safe_load(Path(workflow_file(rel)).read_text())


def _read_schema():
    return _read_yaml(SCHEMA_SOURCE)


def _schema_problems(cfg):
    """Every schema violation as one sentence naming the config key (instead of Snakemake's schema dump)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(_read_schema())
    lines = []
    for err in sorted(validator.iter_errors(cfg), key=lambda e: [str(p) for p in e.absolute_path]):
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        about = err.schema.get("description", "") if isinstance(err.schema, dict) else ""
        about = f" ({' '.join(about.split())})" if about else ""
        lines.append(f"{key}: {err.message}{about}")
    if not lines:
        return None
    return (
        "configuration problems:\n  - "
        + "\n  - ".join(lines)
        + f"\n(the keys, their types and defaults: {SCHEMA_SOURCE} of the workflow)"
    )


_problems = _schema_problems(config)
if _problems:
    print(_problems, file=sys.stderr)
    sys.exit(1)
validate(config, "../schemas/config.schema.yaml")  # fills in the defaults


def _sorted_keys(value):
    """``value`` with every mapping's keys in sorted order (lists keep theirs)."""
    if isinstance(value, dict):
        return {key: _sorted_keys(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


# Snakemake compares params by their repr, in which a dict's key order shows: with the keys
# sorted, writing the config's keys in another order reruns nothing. The order of the
# models stays the user's (it names the pairs of `pairs: all`).
for _key in list(config):
    config[_key] = (
        {m: _sorted_keys(spec) for m, spec in config[_key].items()} if _key == "models" else _sorted_keys(config[_key])
    )


# ------------------------------------------------------------------ the library
# rsvc is importable at parse time and in every job (local, conda, SLURM) from the workflow's
# own source, whatever else is installed: the checkout itself, or, when the workflow comes from
# a git tag, a copy of that tag's rsvc/ (the files listed in rsvc/FILES) under
# .snakemake/rsvc/<digest>/. PYTHONPATH carries it to the jobs, ahead of site-packages: local
# jobs are subprocesses of this process, SLURM jobs inherit it (sbatch --export=ALL) and their
# own snakemake parses this file again.
RSVC_MANIFEST = "rsvc/FILES"


def rsvc_root():
    """The folder that holds this workflow's rsvc package (see above)."""
    checkout = Path(str(workflow.current_basedir)).parent
    if (checkout / "rsvc" / "__init__.py").is_file():
        return checkout
    names = Path(workflow_file(RSVC_MANIFEST)).read_text().split()
    files = {name: Path(workflow_file(f"rsvc/{name}")).read_bytes() for name in names}
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{len(files[name])}\0".encode())
        digest.update(files[name])
    root = Path(".snakemake", "rsvc", digest.hexdigest()[:16]).resolve()
    if not (root / "rsvc" / "__init__.py").is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
        for name, content in files.items():
            (tmp / "rsvc" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / "rsvc" / name).write_bytes(content)
        try:
            os.rename(tmp, root)  # atomic: jobs that parse at the same time see all or nothing
        except OSError:  # another process was first
            shutil.rmtree(tmp, ignore_errors=True)
    return root


RSVC_ROOT = str(rsvc_root())
if sys.path[0] != RSVC_ROOT:
    sys.path.insert(0, RSVC_ROOT)
_PYTHONPATH = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
if _PYTHONPATH[:1] != [RSVC_ROOT]:
    os.environ.update(PYTHONPATH=os.pathsep.join([RSVC_ROOT] + _PYTHONPATH))

from rsvc import preflight  # noqa: E402 - pure Python, like rsvc.specs: parsing needs no numpy or torch
from rsvc.settings import (  # noqa: E402
    CompareSettings,
    ConceptSettings,
    ImageSetSettings,
    ImportanceSettings,
    numeric_params,
    prediction_numeric_params,
)
from rsvc.paths import PAIR_FIGURES, RunPaths, gallery_names, shard_name  # noqa: E402
from rsvc.specs import ModelSpec  # noqa: E402

OUT = config["outdir"]
DATASET = config["dataset"]
POOL_SPLIT = DATASET["pool_split"]
HELDOUT_SPLIT = DATASET["heldout_split"]
SPLITS = [POOL_SPLIT, HELDOUT_SPLIT]
MODELS = list(config["models"])


def _stop(error):
    """Stop parsing with the preflight's sentences alone (no traceback); exit status 1."""
    print(error, file=sys.stderr)
    sys.exit(1)


def _read_classes(spec):
    """Class ids in the models' output order, and readable names."""
    if isinstance(spec, list):
        return list(spec), {}
    try:
        return preflight.read_class_list(spec)
    except preflight.ConfigError as exc:
        _stop(exc)


CLASSES, _CLASS_NAMES_FROM_FILE = _read_classes(DATASET["classes"])
CLASS_NAMES = {**_CLASS_NAMES_FROM_FILE, **DATASET.get("class_names", {})}
ANALYZE = DATASET.get("analyze_classes") or CLASSES
SHARD_SIZE = config["extraction"]["shard_size"]
# Every output path template is written once, in rsvc/paths.py (TEMPLATES); RUN_PATHS fills them for
# this run (the shard of a class from its index) and holds the class index.
RUN_PATHS = RunPaths(OUT, tuple(CLASSES), SHARD_SIZE)
CLASS_INDEX = RUN_PATHS.class_index
shard_of = RUN_PATHS.shard_of


ALL_SHARDS = sorted({shard_name(i, SHARD_SIZE) for i in range(len(CLASSES))})
ANALYZE_SHARDS = sorted({shard_of(c) for c in ANALYZE if c in CLASS_INDEX})


def shard_classes(shard, classes=None):
    """Class ids of a shard (restricted to ``classes`` when given)."""
    start = int(shard) * SHARD_SIZE
    members = CLASSES[start : start + SHARD_SIZE]
    if classes is not None:
        keep = set(classes)
        members = [c for c in members if c in keep]
    return members


if config["pairs"] == "all":
    PAIRS = list(itertools.combinations(MODELS, 2))
else:
    PAIRS = [tuple(p) for p in config["pairs"]]
PAIR_NAMES = [f"{a}-vs-{b}" for a, b in PAIRS]


def pair_models(pair):
    a, _, b = pair.partition("-vs-")
    return a, b


# ------------------------------------------------------------------ resources
RESOURCES_SOURCE = "rules/resources.yaml"


RESOURCES = _read_yaml(RESOURCES_SOURCE)


SCALED_RESOURCES = ("mem_mb", "runtime")  # grow with each retry


def _scaled(base):
    return lambda wildcards, attempt: base * attempt


def job_resources(name):
    """Resources of the rule named `name`, from rules/resources.yaml (mem_mb and runtime times the
    attempt number, the others, gpu_jobs, as they are)."""
    if name not in RESOURCES:
        raise KeyError(f"{RESOURCES_SOURCE} has no line for {name}")
    return {key: _scaled(value) if key in SCALED_RESOURCES else value for key, value in RESOURCES[name].items()}


# ------------------------------------------------------------------ paths
# Rules use the templates in `output:`, input functions fill them with path(kind, **wildcards).
PATHS = RUN_PATHS.templates


def path(kind, **wildcards):
    """The path of one output: PATHS[kind] with its wildcards filled (a value
    "{pair}" leaves that wildcard to the rule); the shard of a per-class file
    inside a shard folder follows from its class_id (rsvc.paths.RunPaths)."""
    return RUN_PATHS(kind, **wildcards)


def class_files(kind, classes=None, **wildcards):
    """The per-class files of `kind` ("compare", "importance") for `classes` (default: every
    analysed class), in that order: what a job reads from the shard folders it takes as input."""
    return [path(kind, class_id=c, **wildcards) for c in (ANALYZE if classes is None else classes)]


def shard_folders(kind, **wildcards):
    """The shard folders of `kind` that hold the analysed classes (the inputs behind class_files)."""
    return [path(f"{kind}_shard", shard=sh, **wildcards) for sh in ANALYZE_SHARDS]


def dataset_input(wildcards=None):
    """The dataset root: a workflow output in the demo, an existing folder otherwise."""
    return DATASET["root"]


PRETRAINED = [m for m, spec in config["models"].items() if spec["pretrained"] and not spec["checkpoint"]]


def checkpoint_input(model):
    """The model's weights: its checkpoint, or the fetch marker of pretrained weights
    (ancient: fetching again does not rerun finished jobs)."""
    ckpt = config["models"][model]["checkpoint"]
    if ckpt:
        return [ckpt]
    return [ancient(path("weights", model=model))] if model in PRETRAINED else []


# ------------------------------------------------------------------ params
# Each rule's params carry exactly the settings its numbers depend on, so that
# Snakemake's params trigger reruns what a change touches and nothing else. Speed
# settings (extraction.batch_size, predict_batch_size, num_workers, device, compile) are no
# params: jobs read them from the config, and changing them reruns nothing.
def model_params(model):
    """The model's ModelSpec as a dict (rsvc.specs.ModelSpec(**params) rebuilds it)."""
    return ModelSpec.from_config(model, config["models"][model]).params()


def activation_params(model):
    """Extraction settings that change the stored activations of `model`."""
    return numeric_params(DATASET, config["extraction"], config["models"][model])


def prediction_params(model):
    """Settings that change `model`'s predictions: its whole-image transform (dataset.preprocess,
    resolved per model) and, for canonical squares, their size."""
    return prediction_numeric_params(DATASET, config["models"][model])


def pool_cap(split):
    """pool_images_per_class applies to the concept pool split only."""
    return DATASET["pool_images_per_class"] if split == POOL_SPLIT else None


COMPARE_SETTINGS = CompareSettings.from_config(config)


# ------------------------------------------------------------------ demo (synthetic)
SYN = config.get("synthetic", {})
TRAINED = [m for m, spec in config["models"].items() if "train" in spec]


def train_scheme_dir(wildcards):
    scheme = config["models"][wildcards.model]["train"]["scheme"]
    return f"{SYN['root']}/{scheme}"


def scheme_model(scheme):
    return next(m for m in TRAINED if config["models"][m]["train"]["scheme"] == scheme)


def planted_pair():
    ps, nc = scheme_model("ps"), scheme_model("nc")
    return f"{ps}-vs-{nc}" if (ps, nc) in PAIRS else f"{nc}-vs-{ps}"


# ------------------------------------------------------------------ rule inputs
def analysed_in_shard(wc):
    """The analysed classes of the job's shard, in class order."""
    return shard_classes(wc.shard, ANALYZE)


def analysed_in_shard_indices(wc):
    """The models' output index of each of analysed_in_shard's classes."""
    return [CLASS_INDEX[c] for c in analysed_in_shard(wc)]


def compare_inputs(wc):
    a, b = pair_models(wc.pair)
    classes = analysed_in_shard(wc)
    return {
        "concepts_a": [path("concepts", model=a, class_id=c) for c in classes],
        "concepts_b": [path("concepts", model=b, class_id=c) for c in classes],
        "head_a": path("head", model=a),
        "head_b": path("head", model=b),
        "sets_a": path("image_sets", model=a, split=POOL_SPLIT),  # full predicted sets: n_union_images
        "sets_b": path("image_sets", model=b, split=POOL_SPLIT),
        "acts": [
            path("activations", model=m, owner=o, split=split, shard=wc.shard) for m, o, split in compare_acts_keys(wc)
        ],
    }


def compare_acts_keys(wc):
    """(model, owner, split) of each file in compare's ``input.acts``, in that order."""
    a, b = pair_models(wc.pair)
    return [[m, o, split] for split in SPLITS for m in (a, b) for o in (a, b)]


def importance_inputs(wc):
    return {
        "concepts": [path("concepts", model=wc.model, class_id=c) for c in analysed_in_shard(wc)],
        "head": path("head", model=wc.model),
    }


def pair_class_inputs(wc):
    a, b = pair_models(wc.pair)
    return {
        "compare": shard_folders("compare", pair=wc.pair),
        "importance_a": shard_folders("importance", model=a),
        "importance_b": shard_folders("importance", model=b),
    }


def pair_class_files(wc):
    """The per-class files inside pair_class_inputs' folders, one per analysed class, in class order."""
    a, b = pair_models(wc.pair)
    return {
        "compare": class_files("compare", pair=wc.pair),
        "importance_a": class_files("importance", model=a),
        "importance_b": class_files("importance", model=b),
    }


# A model name, as the schema allows it (models.propertyNames: a plain file name, never "." or "..").
MODEL_NAME = _read_schema()["properties"]["models"]["propertyNames"]["pattern"].removeprefix("^").removesuffix("$")


wildcard_constraints:
    model=MODEL_NAME,
    owner=MODEL_NAME,
    pair=f"{MODEL_NAME}-vs-{MODEL_NAME}",
    shard="[0-9]+",
    split="[^/]+",
    class_id="[^/]+",


GALLERIES = gallery_names(config["gallery"]["concepts_per_direction"])


# Labels of the pair outputs in the HTML report: what each shows and for which models
# ("X → Y": the concepts of Y predicted from the activations of X); a, b = pair_models.
REPORT_LABELS = {
    "concepts": ("per-concept table", "{a} ↔ {b}"),
    **{name: (what, models) for name, (_, what, models) in PAIR_FIGURES.items()},
    "explorer": ("concept explorer (every class and concept)", "{a} ↔ {b}"),
}


def report_labels(name):
    """report(labels=...) of a pair output named as in REPORT_LABELS or GALLERIES."""

    def labels(wildcards, params):
        a, b = pair_models(wildcards.pair)
        if name in REPORT_LABELS:
            what, models = REPORT_LABELS[name]
        else:
            models = "{b} → {a}" if "b_to_a" in name else "{a} → {b}"
            if name.startswith("lowest_cmcs_class0"):
                what = f"lowest CMCS, class {params.class_names.get(params.class0, params.class0)}"
            else:
                what = f"important, low CMCS, #{int(name.rsplit('_', 1)[1]) + 1}"
        return {"figure": what, "models": models.format(a=a, b=b)}

    return labels


def all_outputs():
    outs = [path("run_summary"), path("pairs_summary")]
    for pair in PAIR_NAMES:
        outs.append(path("pair_table", pair=pair))
        outs += [path("pair_figure", pair=pair, figure=name) for name in PAIR_FIGURES]
        outs += [path("gallery", pair=pair, gallery=name) for name in GALLERIES]
        outs += [path("explorer", pair=pair), path("explorer_link", pair=pair)]
    if "synthetic" in config:
        outs.append(path("planted"))
    return outs


# ------------------------------------------------------------------ preflight
# Semantic checks before any job runs (the schema covers keys and types).
# Only in the main process: jobs on cluster nodes re-read this file.
def _runs_locally():
    try:
        return workflow.local_exec
    except AttributeError:
        return True


if workflow.is_main_process:
    _errors = preflight.check_structure(config, CLASSES, ANALYZE, PAIRS)
    _dataset_errors, _dataset_notes = preflight.check_dataset(
        DATASET["root"],
        SPLITS,
        CLASSES,
        produced_by_workflow="synthetic" in config and Path(DATASET["root"]).parent == Path(SYN["root"]),
        analyze=ANALYZE,
        image_sets=DATASET["image_sets"],
    )
    _errors += _dataset_errors
    _model_errors, _notes = preflight.check_models_cached(
        config["models"], len(CLASSES), made_by_workflow=TRAINED, cache=Path(".snakemake/rsvc_preflight.json")
    )
    _notes = _dataset_notes + _notes
    _errors += _model_errors
    _device_errors, _notes_device = preflight.check_device(config["extraction"]["device"], _runs_locally())
    _errors += _device_errors
    for _note in _notes + [f"warning: {w}" for w in _notes_device]:
        print(_note, file=sys.stderr)
    if _errors:
        _stop(preflight.message(_errors))


# Snakemake's job rate limiter starts a non-daemon threading.Timer of one timespan after
# every scheduling pass; with the long timespan of profiles/local (see there) the process
# would wait up to that long after the last job before it exits. The scheduler is done when
# these hooks run, so its pending timers are cancelled.
def _cancel_scheduler_timers():
    import threading

    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()
