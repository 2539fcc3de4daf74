"""What defines a model's numbers and how its inputs are made: plain, import-light specs.

Pure Python (no numpy, no torch), so that the workflow's parse-time code, a dry run
and ``snakemake --lint`` work where only Snakemake is installed. Each spec has one
constructor from the workflow config (the schema fills every default) and one
dictionary form used as a rule's ``params`` (``dataclasses.asdict``), from which
the job rebuilds it with ``Spec(**params)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PRE_LOGITS = "pre_logits"
"""Name of the penultimate representation (input of the linear head), always the last layer."""


def direction(source: str, target: str) -> str:
    """Name of a regression map: ``source`` activations predict ``target`` concepts."""
    return f"{source}->{target}"


def patch_stride(patch_size: int) -> int:
    """CRAFT stride: ``int(0.8 * patch_size)``."""
    return int(0.8 * patch_size)


def n_patches(image_size: int, patch_size: int) -> int:
    """Patches of the CRAFT grid on the canonical square (:func:`rsvc.patches.patch_boxes`)."""
    per_side = len(range(0, image_size - patch_size + 1, patch_stride(patch_size)))
    return per_side * per_side


AUTOCAST_MODES = ("bf16", "fp16")
STORAGE_DTYPES = ("float32", "float16")
TOKEN_POOLING = ("cls", "mean")


@dataclass(frozen=True)
class ModelSpec:
    """Everything that defines a model's numbers.

    ``checkpoint`` is a local ``.safetensors`` (preferred) or ``.pth`` file
    holding a state dict of tensors only; with it, timm loads the file itself
    (``pretrained_cfg_overlay=dict(file=checkpoint)``). ``pretrained`` uses
    timm's pretrained weights (offline, from a local Hugging Face cache) and is
    ignored when ``checkpoint`` is given.
    """

    name: str
    timm_name: str
    checkpoint: str | None = None
    pretrained: bool = False
    num_classes: int | None = None
    model_kwargs: dict = field(default_factory=dict)
    pretrained_cfg_overlay: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, name: str, model: Mapping[str, Any]) -> ModelSpec:
        """The spec of ``config["models"][name]`` (validated by the schema, defaults filled)."""
        return cls(
            name=name,
            timm_name=model["timm_name"],
            checkpoint=model["checkpoint"],
            pretrained=bool(model["pretrained"]),
            num_classes=model["num_classes"],
            model_kwargs=dict(model["model_kwargs"]),
            pretrained_cfg_overlay=dict(model["pretrained_cfg_overlay"]),
        )

    def params(self) -> dict[str, Any]:
        """The dictionary form (rule params, file attributes); ``ModelSpec(**spec.params())`` is ``spec``."""
        return dataclasses.asdict(self)


#: How whole images become a model's input for predictions (``dataset.preprocess``); "auto" is resolved per
#: model by :func:`prediction_preprocess`.
PREPROCESS = ("canonical", "timm_eval")
PREPROCESS_CHOICES = ("auto", *PREPROCESS)

#: Layer selectors of ``models.<m>.layers`` (:func:`rsvc.layers.resolve_layers`); "auto" is the default.
SELECTORS = ("auto", "activations", "relu", "blocks", "stages")


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
    least one image), whole images in :func:`rsvc.activations.predict_images`
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
    fold_batchnorm: bool = True  # eval BatchNorm folded into the conv before it (rsvc.models.fold_batchnorm)
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
