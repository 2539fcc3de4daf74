"""Settings of each stage as frozen objects, built once from the workflow config.

Pure Python (no numpy, no torch), like :mod:`rsvc.specs`: the workflow's parse-time code builds
them. Each has one constructor from the config (``from_config``; the schema has filled every
default) and one dictionary form, :meth:`params`, which is what a rule passes as ``params`` (Snakemake
compares params by their ``repr``, so each object carries exactly what changes its stage's numbers)
and from which the job rebuilds the object (``from_params``). Tests and benchmarks build them the
same way from a config dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The config schema of a checkout (the workflow validates with its own copy, rules/common.smk).
SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


def with_defaults(config: Mapping[str, Any], schema: str | Path = SCHEMA) -> dict[str, Any]:
    """A copy of ``config`` validated against the schema with every default filled in, as the workflow
    sees it (Snakemake's ``validate(config, schema)``): what ``from_config`` expects, for tests, benchmarks
    and scripts that build settings outside the workflow. Raises ``jsonschema.ValidationError``."""
    import copy

    import jsonschema
    import yaml

    def fill(validator, properties, instance, schema):
        for name, sub in properties.items():
            if isinstance(instance, dict) and "default" in sub:
                instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from jsonschema.Draft202012Validator.VALIDATORS["properties"](validator, properties, instance, schema)

    filling = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"properties": fill})
    config = copy.deepcopy(dict(config))
    filling(yaml.safe_load(Path(schema).read_text())).validate(config)
    return config


class _Params:
    """``params()``: the dictionary form; ``from_params(d)``: the object again (nested settings too)."""

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]):
        return cls(**params)


AUTOCAST_MODES = ("bf16", "fp16")


STORAGE_DTYPES = ("float32", "float16")


TOKEN_POOLING = ("cls", "mean")


#: How whole images become a model's input for predictions (``dataset.preprocess``); "auto" is resolved per
#: model by :func:`prediction_preprocess`.
PREPROCESS = ("canonical", "timm_eval")


PREPROCESS_CHOICES = ("auto", *PREPROCESS)


def prediction_preprocess(preprocess: str, model: Mapping[str, Any]) -> str:
    """The whole-image transform of one model's predictions (which decide its image sets).

    ``"auto"``: ``"timm_eval"`` (the model's own timm evaluation transform: its input size, crop margin
    ``crop_pct`` and interpolation, what pretrained weights were validated with) for every model the
    workflow does not train; ``"canonical"`` for a model trained by the workflow (``train:``), which was
    trained on canonical squares resized to its input size. ``"canonical"``/``"timm_eval"``: for every model.
    """
    if preprocess not in PREPROCESS_CHOICES:
        raise ValueError(f"dataset.preprocess must be one of {list(PREPROCESS_CHOICES)}, got {preprocess!r}")
    if preprocess == "auto":
        return "canonical" if model.get("train") else "timm_eval"
    return preprocess


@dataclass(frozen=True)
class ExtractionSettings:
    """How images become model inputs and how activations are stored.

    ``batch_size`` is the number of model inputs per forward pass: patches in
    :func:`rsvc.activations.extract_to_h5` (rounded down to whole images, at
    least one image), whole images in :func:`rsvc.predictions.predict_images`
    (config keys ``extraction.batch_size`` and ``extraction.predict_batch_size``).
    ``batch_size``, ``num_workers``, ``device`` and ``compile`` change speed only
    (``compile``: ``torch.compile`` of the forward pass; like the device and the batch
    size it can change the last float digit of a pooled activation, as reductions may be
    summed in another order); ``autocast`` and ``storage_dtype`` change the stored numbers.
    """

    image_size: int | None = None  # the canonical square (None: timm_eval predictions, which do not use it)
    patch_size: int | None = None  # None: whole images only (predictions)
    batch_size: int = 256
    num_workers: int = 2
    device: str = "auto"  # "auto" -> cuda if available else cpu
    autocast: str | None = None  # None | "bf16" | "fp16"
    storage_dtype: str = "float32"  # or "float16"
    token: str = "cls"  # 3-D token outputs: "cls" (class token) or "mean" (of the non-prefix tokens)
    channels_last: bool = True
    fold_batchnorm: bool = True  # eval BatchNorm folded into the conv before it (rsvc._manipulate.fold_batchnorm)
    preprocess: str = "canonical"  # whole-image predictions: "canonical" or "timm_eval" (the model's own transform)
    compile: bool = False  # torch.compile the forward pass (extraction and predictions)

    def __post_init__(self) -> None:
        if self.autocast not in (None, *AUTOCAST_MODES):
            raise ValueError(f"autocast must be None, 'bf16' or 'fp16', got {self.autocast!r}")
        if self.storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage_dtype must be one of {list(STORAGE_DTYPES)}, got {self.storage_dtype!r}")
        if self.token not in TOKEN_POOLING:
            raise ValueError(f"token must be 'cls' or 'mean', got {self.token!r}")
        if self.preprocess not in PREPROCESS:
            raise ValueError(f"preprocess must be one of {list(PREPROCESS)}, got {self.preprocess!r}")
        if self.image_size is None and (self.patch_size is not None or self.preprocess == "canonical"):
            raise ValueError("image_size is needed for patches and canonical predictions")
        if self.batch_size < 1 or self.num_workers < 0:
            raise ValueError("batch_size must be >= 1 and num_workers >= 0")

    @classmethod
    def from_config(cls, config: Mapping[str, Any], model: str, *, predictions: bool = False) -> ExtractionSettings:
        """The settings of ``model``'s activation jobs (or, with ``predictions``, its prediction jobs) as the
        workflow builds them: the numbers from :func:`numeric_params` (:func:`prediction_numeric_params`),
        the speed from ``config["extraction"]``."""
        spec = config["models"][model]
        if predictions:
            numbers = prediction_numeric_params(config["dataset"], spec)
            return cls.from_params(numbers, config["extraction"], batch_key="predict_batch_size")
        return cls.from_params(numeric_params(config["dataset"], config["extraction"], spec), config["extraction"])

    @classmethod
    def from_params(cls, numbers: Mapping[str, Any], speed: Mapping[str, Any], *, batch_key: str = "batch_size"):
        """Settings from a rule's ``params`` (``numbers``: what changes the stored numbers, see
        :func:`numeric_params`) and the config's ``extraction`` section (``speed``: batch size,
        workers, device and compile, which are not rule params so that changing them reruns nothing)."""
        return cls(
            **numbers,
            batch_size=int(speed[batch_key]),
            num_workers=int(speed["num_workers"]),
            device=str(speed["device"]),
            compile=bool(speed["compile"]),
        )


def numeric_params(dataset: Mapping[str, Any], extraction: Mapping[str, Any], model: Mapping[str, Any]):
    """The extraction settings that change the stored patch activations of ``model`` (its ``token`` pooling)."""
    return {
        "image_size": int(dataset["image_size"]),
        "patch_size": int(dataset["patch_size"]),
        "autocast": extraction["autocast"],
        "storage_dtype": extraction["storage_dtype"],
        "token": model["token"],
    }


def prediction_numeric_params(dataset: Mapping[str, Any], model: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that change ``model``'s whole-image predictions (and so its image sets).

    Always full precision (autocast, storage_dtype, patch size and token pooling are activation
    settings and never change which images a model predicts as c). The canonical image size counts
    only for ``"canonical"`` predictions: the timm evaluation transform does not use it.
    """
    preprocess = prediction_preprocess(dataset["preprocess"], model)
    if preprocess == "timm_eval":
        return {"preprocess": preprocess}
    return {"image_size": int(dataset["image_size"]), "preprocess": preprocess}


@dataclass(frozen=True)
class ImageSetSettings(_Params):
    """How one split's image sets are drawn (:func:`rsvc.image_sets.image_sets_job`).

    ``by``: "predicted" (the images a model predicts as c, the paper) or "labels" (folder c);
    ``max_images``: the seeded concept sample per class; ``shared_images``: the shared set's candidates
    from its own ranking (the pool split; None for the held-out split); ``min_images``: classes with fewer
    images are skipped (the pool split; None: keep all).
    """

    by: str
    max_images: int | None
    min_images: int | None
    seed: int
    shared_images: int | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], split: str) -> ImageSetSettings:
        """The pool split holds the concept images (and skips classes with too few for a model's own
        concepts); the held-out split is capped only."""
        c, dataset = config["concepts"], config["dataset"]
        by, seed = dataset["image_sets"], config["seed"]
        if split == dataset["pool_split"]:
            return cls(by, c["concept_images"], c["min_images_per_model"], seed, shared_images=c["shared_images"])
        return cls(by, c["heldout_images"], None, seed)


@dataclass(frozen=True)
class ConceptSettings(_Params):
    """The factorisation of one model's concepts (:func:`rsvc.concepts.concepts_job`).

    ``k`` concepts per layer; classes with fewer than ``min_images`` images are skipped; ``max_iter``,
    ``tol``: the solver; ``decomposition``: the model's ("auto", "nmf", "semi-nmf"); ``restarts``: refits of
    the pre_logits factorisation that measure concept stability; ``concept_images``: the seeded sample
    the concepts are fitted on (None: every stored image); ``seed``: the factorisation's start and the
    sample's ranking; ``init``: the start of the main factorisation.
    """

    k: int
    min_images: int
    max_iter: int
    tol: float
    decomposition: str
    seed: int
    restarts: int = 0
    concept_images: int | None = None
    init: str = "nndsvd"

    @classmethod
    def from_config(cls, config: Mapping[str, Any], model: str) -> ConceptSettings:
        c = config["concepts"]
        return cls(
            k=c["k"],
            min_images=c["min_images_per_model"],
            max_iter=c["max_iter"],
            tol=c["tol"],
            decomposition=config["models"][model]["decomposition"],
            seed=config["seed"],
            restarts=c["restarts"],
            concept_images=c["concept_images"],
        )


@dataclass(frozen=True)
class ImportanceSettings(_Params):
    """Concept integrated gradients at pre_logits (:func:`rsvc.importance.importance_job`): the class
    output's ``target`` ("probability" or "logit") and the integration ``steps``."""

    target: str
    steps: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ImportanceSettings:
        return cls(target=config["importance"]["target"], steps=config["importance"]["steps"])


@dataclass(frozen=True)
class UncertaintySettings(_Params):
    """Per-class uncertainty in the compare job (:mod:`rsvc.uncertainty`): ``level``, the coverage of the
    image-jackknife intervals; ``permutations``, draws of the permutation null of MCS (0: none);
    ``mmcs_permutations``, draws of the chance level of the layerwise MMCS matrix (0: none)."""

    level: float = 0.95
    permutations: int = 0
    mmcs_permutations: int = 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> UncertaintySettings:
        u = config["uncertainty"]
        return cls(level=u["level"], permutations=u["permutations"], mmcs_permutations=u["mmcs_permutations"])


@dataclass(frozen=True)
class CompareSettings(_Params):
    """Everything that changes the numbers of one pair's compare job (:func:`rsvc.compare.compare_job`).

    ``pool_split``/``heldout_split``: where the shared set and the held-out set come from;
    ``shared_images``: the cap of the shared set (None: the whole union); ``min_images``: a class is
    compared when the union of both models' pool sets has that many images (the paper's rule);
    ``min_heldout_images``: fewer held-out images leave CMCS, SMCS and the replacement test NaN;
    ``alpha``, ``folds``, ``tol``, ``max_iter``: the lasso regression; ``mix``: the replacement test;
    ``n_views``: dissimilarity views per concept; ``importance``: concept importance also on the shared set
    (config ``importance.images: shared``), None otherwise.
    """

    pool_split: str
    heldout_split: str
    shared_images: int | None
    min_images: int
    min_heldout_images: int
    alpha: float
    folds: int
    tol: float
    max_iter: int
    mix: float
    n_views: int
    seed: int
    uncertainty: UncertaintySettings = UncertaintySettings()
    importance: ImportanceSettings | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CompareSettings:
        c, r, d = config["concepts"], config["regression"], config["dataset"]
        shared = config["importance"]["images"] == "shared"
        return cls(
            pool_split=d["pool_split"],
            heldout_split=d["heldout_split"],
            shared_images=c["shared_images"],
            min_images=c["min_images"],
            min_heldout_images=c["min_heldout_images"],
            alpha=r["alpha"],
            folds=r["folds"],
            tol=r["tol"],
            max_iter=r["max_iter"],
            mix=config["replacement"]["mix"],
            n_views=config["gallery"]["n"],
            seed=config["seed"],
            uncertainty=UncertaintySettings.from_config(config),
            importance=ImportanceSettings.from_config(config) if shared else None,
        )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> CompareSettings:
        params = dict(params)
        importance = params.pop("importance")
        return cls(
            **params
            | {
                "uncertainty": UncertaintySettings(**params["uncertainty"]),
                "importance": None if importance is None else ImportanceSettings(**importance),
            }
        )
