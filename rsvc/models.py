"""timm models: creation from a spec (checkpoints checked before they are loaded), the data config and the
linear head.

Layer names and selectors live in :mod:`rsvc.layers`, BatchNorm folding in :mod:`rsvc._manipulate`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import timm
import timm.data
import torch
from torch import nn

from rsvc.specs import ModelSpec

_NESTED_KEYS = ("state_dict", "model")


def _resave_hint(path: str | os.PathLike) -> str:
    return (
        f"Re-save it as a plain state dict of tensors, e.g. in a trusted Python session: "
        f"sd = torch.load({str(path)!r}, weights_only=False); sd = sd.get('state_dict', sd); "
        f"safetensors.torch.save_file({{k: v.contiguous() for k, v in sd.items()}}, "
        f"{str(Path(path).with_suffix('.safetensors'))!r})"
    )


def load_state_dict_safely(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict without unpickling arbitrary objects.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``. A ``{"state_dict": ...}`` or
    ``{"model": ...}`` wrapper is unwrapped. A file carrying pickled non-tensor
    objects is refused with a ``ValueError`` naming the file and saying how to
    re-save it as safetensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        import safetensors.torch

        return dict(safetensors.torch.load_file(str(path), device="cpu"))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError and friends
        raise ValueError(
            f"refusing checkpoint {path}: it is not a plain state dict of tensors "
            f"(torch.load(weights_only=True) failed: {type(exc).__name__}: {str(exc).splitlines()[0]}). "
            + _resave_hint(path)
        ) from exc
    if isinstance(obj, dict):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        bad = (
            type(obj).__name__
            if not isinstance(obj, dict)
            else next(
                f"{k!r}: {type(v).__name__}" for k, v in obj.items() if not (isinstance(k, str) and torch.is_tensor(v))
            )
        )
        raise ValueError(
            f"refusing checkpoint {path}: it holds non-tensor objects ({bad}); "
            "only a state dict of tensors is accepted. " + _resave_hint(path)
        )
    return obj


def create_model(spec: ModelSpec, device: str | torch.device = "cpu") -> nn.Module:
    """The timm model of ``spec`` in eval mode on ``device``.

    One code path for every model: ``timm.create_model``. A checkpoint is first
    checked with :func:`load_state_dict_safely` (refusing pickled objects) and
    then loaded by timm from the file, with the checkpoint's ``num_classes``
    declared so that timm never drops the classifier. ``pretrained`` weights
    are loaded the same way, from the file in the local cache
    (:func:`rsvc.weights.require_cached_weights`): never downloaded, and a
    missing file raises :class:`rsvc.weights.MissingWeightsError` at once with
    the command that fetches it.
    """
    kwargs = dict(spec.model_kwargs)
    if spec.num_classes is not None:
        kwargs["num_classes"] = spec.num_classes
    overlay = dict(spec.pretrained_cfg_overlay)
    pretrained = spec.pretrained
    if spec.checkpoint:
        load_state_dict_safely(spec.checkpoint)  # refuse unsafe files before timm opens them
        overlay.update(file=str(spec.checkpoint), source=None)
        if spec.num_classes is not None:
            overlay["num_classes"] = spec.num_classes
        pretrained = True
    elif pretrained:
        from rsvc.weights import require_cached_weights

        weights = require_cached_weights(spec.timm_name, model=spec.name)
        overlay.update(file=str(weights), source=None)  # timm reads it with weights_only=True
    model = timm.create_model(spec.timm_name, pretrained=pretrained, pretrained_cfg_overlay=overlay or None, **kwargs)
    return model.to(device).eval()


def model_data_config(model: nn.Module) -> dict:
    """timm data config: ``input_size`` (3, H, W), ``mean``, ``std``, ``interpolation``, ..."""
    return timm.data.resolve_model_data_config(model)


def head_parameters(model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Linear classifier applied to ``pre_logits``: weight ``(C, d)`` and bias ``(C,)``, float64.

    ``logits = pre_logits @ W.T + b``.
    """
    head = model.get_classifier()
    if not isinstance(head, nn.Linear):
        raise TypeError(f"the classifier of {type(model).__name__} is {type(head).__name__}, not nn.Linear")
    weight = head.weight.detach().double().cpu().numpy()
    if head.bias is None:
        bias = np.zeros(weight.shape[0])
    else:
        bias = head.bias.detach().double().cpu().numpy()
    return weight, bias
