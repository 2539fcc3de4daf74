"""Config validation, the class/shard/pair bookkeeping and path helpers."""

import itertools
import sys
from pathlib import Path

from snakemake.utils import validate


validate(config, "../schemas/config.schema.yaml")

# rsvc is importable from the workflow's own checkout (also without installing it).
sys.path.insert(0, str(Path(workflow.main_snakefile).parent))


OUT = config["outdir"]
DATASET = config["dataset"]
POOL_SPLIT = DATASET["pool_split"]
HELDOUT_SPLIT = DATASET["heldout_split"]
SPLITS = [POOL_SPLIT, HELDOUT_SPLIT]
MODELS = list(config["models"])


def _read_classes(spec):
    """Class ids in the models' output order, and readable names."""
    if isinstance(spec, list):
        return list(spec), {}
    ids, names = [], {}
    for line in Path(spec).read_text().splitlines():
        if not line.strip():
            continue
        cid, _, name = line.partition("\t")
        ids.append(cid.strip())
        if name.strip():
            names[cid.strip()] = name.strip()
    return ids, names


CLASSES, _CLASS_NAMES_FROM_FILE = _read_classes(DATASET["classes"])
CLASS_NAMES = {**_CLASS_NAMES_FROM_FILE, **DATASET.get("class_names", {})}
ANALYZE = DATASET.get("analyze_classes") or CLASSES
SHARD_SIZE = config["extraction"]["shard_size"]
CLASS_INDEX = {c: i for i, c in enumerate(CLASSES)}


def shard_of(class_id):
    return f"{CLASS_INDEX[class_id] // SHARD_SIZE:04d}"


ALL_SHARDS = sorted({f"{i // SHARD_SIZE:04d}" for i in range(len(CLASSES))})
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


# ------------------------------------------------------------------ paths
def dataset_input(wildcards=None):
    """The dataset root: a workflow output in the demo, an existing folder otherwise."""
    return DATASET["root"]


PRETRAINED = [m for m, spec in config["models"].items() if spec.get("pretrained") and not spec.get("checkpoint")]


def weights_path(model):
    """Marker of a `pretrained: true` model's weights in the local cache (rules/weights.smk)."""
    return f"{OUT}/weights/{model}.ok"


def checkpoint_input(model):
    """The model's weights: its checkpoint, or the fetch marker of pretrained weights
    (ancient: fetching again does not rerun finished jobs)."""
    ckpt = config["models"][model].get("checkpoint")
    if ckpt:
        return [ckpt]
    return [ancient(weights_path(model))] if model in PRETRAINED else []


def model_spec(model):
    """Everything about a model that changes its numbers (used as rule params)."""
    m = config["models"][model]
    return {
        "name": model,
        "timm_name": m["timm_name"],
        "checkpoint": m.get("checkpoint"),
        "pretrained": m.get("pretrained", False),
        "num_classes": m.get("num_classes"),
        "model_kwargs": m.get("model_kwargs", {}),
        "pretrained_cfg_overlay": m.get("pretrained_cfg_overlay", {}),
    }


def analysis_spec(model):
    m = config["models"][model]
    return {
        "layers": m.get("layers", "relu"),
        "decomposition": m.get("decomposition", "auto"),
        "token": m.get("token", "cls"),
    }


def pixel_params():
    return {
        "image_size": DATASET["image_size"],
        "patch_size": DATASET["patch_size"],
    }


def prediction_params():
    """Extraction settings that predictions use: always full precision, so
    autocast and storage_dtype (activation-only speed settings) never change
    which images are classified correctly."""
    ex = config["extraction"]
    return {k: ex[k] for k in ("batch_size", "num_workers", "device")}


def pool_cap(split):
    """pool_images_per_class applies to the concept pool split only."""
    return DATASET["pool_images_per_class"] if split == POOL_SPLIT else None


def predictions_path(model, split, shard):
    return f"{OUT}/predictions/{model}/{split}/shard{shard}.tsv"


def image_sets_path(model, split):
    return f"{OUT}/image_sets/{model}/{split}.tsv"


def head_path(model):
    return f"{OUT}/heads/{model}.h5"


def activations_path(model, owner, split, shard):
    return f"{OUT}/activations/{model}/on_{owner}/{split}/shard{shard}.h5"


def concepts_path(model, class_id):
    return f"{OUT}/concepts/{model}/{class_id}.h5"


def importance_path(model, class_id):
    return f"{OUT}/importance/{model}/{class_id}.h5"


def compare_path(pair, class_id):
    return f"{OUT}/compare/{pair}/{class_id}.h5"


def pair_dir(pair):
    return f"{OUT}/pairs/{pair}"


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
def compare_inputs(wc):
    a, b = pair_models(wc.pair)
    return {
        "concepts_a": concepts_path(a, wc.class_id),
        "concepts_b": concepts_path(b, wc.class_id),
        "head_a": head_path(a),
        "head_b": head_path(b),
        "acts": [activations_path(m, o, split, shard_of(wc.class_id)) for m, o, split in compare_acts_keys(wc)],
    }


def compare_acts_keys(wc):
    """(model, owner, split) of each file in compare's ``input.acts``, in that order."""
    a, b = pair_models(wc.pair)
    return [[m, o, split] for split in SPLITS for m in (a, b) for o in (a, b)]


def pair_class_inputs(wc):
    a, b = pair_models(wc.pair)
    return {
        "compare": [compare_path(wc.pair, c) for c in ANALYZE],
        "importance_a": [importance_path(a, c) for c in ANALYZE],
        "importance_b": [importance_path(b, c) for c in ANALYZE],
    }


wildcard_constraints:
    model="[A-Za-z0-9_.]+",
    owner="[A-Za-z0-9_.]+",
    pair="[A-Za-z0-9_.]+-vs-[A-Za-z0-9_.]+",
    shard="[0-9]+",
    split="[^/]+",
    class_id="[^/]+",


PAIR_FIGURES = {
    "layerwise_mmcs_pearson": "layerwise_mmcs.rst",
    "layerwise_mmcs_spearman": "layerwise_mmcs.rst",
    "cmcs_importance_b_to_a": "similarity_importance.rst",
    "cmcs_importance_a_to_b": "similarity_importance.rst",
    "smcs_importance_a": "smcs_importance.rst",
    "smcs_importance_b": "smcs_importance.rst",
    "replacement_b_to_a": "replacement.rst",
    "replacement_a_to_b": "replacement.rst",
    "mcs_cmcs": "mcs_cmcs.rst",
}
GALLERIES = ["lowest_cmcs_class0_b_to_a", "lowest_cmcs_class0_a_to_b"] + [
    f"important_{d}_{i}"
    for d in ("b_to_a", "a_to_b")
    for i in range(config["gallery"]["concepts_per_direction"])
]


# Labels of the pair outputs in the HTML report: what each shows and for which models
# ("X → Y": the concepts of Y predicted from the activations of X); a, b = pair_models.
REPORT_LABELS = {
    "concepts": ("per-concept table", "{a} ↔ {b}"),
    "layerwise_mmcs_pearson": ("layerwise MMCS (Pearson)", "{a} rows, {b} columns"),
    "layerwise_mmcs_spearman": ("layerwise MMCS (Spearman)", "{a} rows, {b} columns"),
    "cmcs_importance_b_to_a": ("CMCS vs importance", "{b} → {a}"),
    "cmcs_importance_a_to_b": ("CMCS vs importance", "{a} → {b}"),
    "smcs_importance_a": ("SMCS vs importance", "{a} → {a}"),
    "smcs_importance_b": ("SMCS vs importance", "{b} → {b}"),
    "replacement_b_to_a": ("replacement test", "{b} → {a}"),
    "replacement_a_to_b": ("replacement test", "{a} → {b}"),
    "mcs_cmcs": ("MCS vs CMCS", "{a} ↔ {b}"),
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
    outs = [f"{OUT}/summary/run_summary.tsv", f"{OUT}/summary/pairs.csv"]
    for pair in PAIR_NAMES:
        outs.append(f"{pair_dir(pair)}/concepts.csv")
        outs += [f"{pair_dir(pair)}/{name}.png" for name in PAIR_FIGURES]
        outs += [f"{pair_dir(pair)}/galleries/{name}.png" for name in GALLERIES]
    if "synthetic" in config:
        outs.append(f"{OUT}/summary/planted_concept.csv")
    return outs


# ------------------------------------------------------------------ preflight
# Semantic checks before any job runs (the schema covers keys and types).
# Only in the main process: jobs on cluster nodes re-read this file.
if workflow.is_main_process:
    from rsvc import preflight

    _errors = preflight.check_structure(config, CLASSES, ANALYZE, PAIRS)
    _errors += preflight.check_dataset(
        DATASET["root"],
        SPLITS,
        CLASSES,
        produced_by_workflow="synthetic" in config
        and Path(DATASET["root"]).parent == Path(SYN["root"]),
    )
    for _m, _spec in config["models"].items():
        _errors += preflight.check_model(_m, _spec, len(CLASSES))
    preflight.raise_if(_errors)
