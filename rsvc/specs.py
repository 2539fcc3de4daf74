"""What defines a model and the names every stage shares: the model spec, ``pre_logits``, regression
directions, the patch grid's geometry and the layer selectors.

Pure Python (no numpy, no torch), so that the workflow's parse-time code, a dry run
and ``snakemake --lint`` work where only Snakemake is installed. :class:`ModelSpec` has one
constructor from the workflow config (the schema fills every default) and one
dictionary form used as a rule's ``params`` (``dataclasses.asdict``), from which
the job rebuilds it with ``ModelSpec(**params)``. The settings of each stage are in :mod:`rsvc.settings`.
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


#: Layer selectors of ``models.<m>.layers`` (:func:`rsvc.layers.resolve_layers`); "auto" is the default.
SELECTORS = ("auto", "activations", "relu", "blocks", "stages")
