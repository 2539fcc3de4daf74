"""timm models: creation from a spec, safe checkpoints, the linear head and BatchNorm folding.

Layer names and selectors live in :mod:`rsvc.layers`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import timm
import timm.data
import torch
from timm.layers import BatchNormAct2d, Conv2dSame
from torch import nn

from rsvc.specs import PRE_LOGITS, ModelSpec  # noqa: F401 - re-exported

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


_FOLDABLE_NORMS = (nn.BatchNorm2d, BatchNormAct2d)
#: Convs whose forward is F.conv2d(x, weight, bias) (Conv2dSame pads first: TF-ported EfficientNets); never a
#: subclass that transforms its weight (e.g. weight standardisation), which a fold would break.
_FOLDABLE_CONVS = (nn.Conv2d, Conv2dSame)


class _DropAct(nn.Module):
    """What is left of a folded BatchNormAct2d: its ``drop`` and ``act`` children, under the same names, so
    that a layer ``<bn>.act`` (EfficientNet's activations) is still found and hooked after folding."""

    def __init__(self, drop: nn.Module, act: nn.Module):
        super().__init__()
        self.drop = drop
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


class _NormLeafTracer(torch.fx.Tracer):
    """Keeps timm's BatchNormAct2d (its functional batch_norm) and Conv2dSame (its shape-dependent padding) as
    one call each."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m) in (*_FOLDABLE_NORMS, Conv2dSame) or super().is_leaf_module(m, qualname)


def conv_batchnorm_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(conv, batchnorm)`` module names where a BatchNorm2d (or timm BatchNormAct2d)'s only input is a Conv2d
    output that nothing else reads (found with a ``torch.fx`` trace of ``forward``).

    Returns ``[]`` when the model cannot be traced.
    """
    try:
        graph = _NormLeafTracer().trace(model)
    except Exception:  # noqa: BLE001 - any tracing failure only means nothing is folded
        return []
    modules = dict(model.named_modules())
    calls = Counter(str(n.target) for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or type(modules.get(node.target)) not in _FOLDABLE_NORMS:
            continue
        src = node.args[0] if node.args else None
        if (
            isinstance(src, torch.fx.Node)
            and src.op == "call_module"
            and type(modules.get(src.target)) in _FOLDABLE_CONVS
            and len(src.users) == 1
            and calls[str(src.target)] == calls[str(node.target)] == 1
        ):
            pairs.append((str(src.target), str(node.target)))
    return pairs


def fold_batchnorm(model: nn.Module, keep: Iterable[str] = ()) -> int:
    """Fold each eval-mode BatchNorm2d (or timm BatchNormAct2d) into the Conv2d before it, in
    place; returns the count.

    The conv gets ``W * g / sqrt(var + eps)`` and ``(b - mean) * g / sqrt(var + eps) + beta``
    (computed in float64); a BatchNorm2d becomes ``nn.Identity`` and a BatchNormAct2d
    ``_DropAct(drop, act)`` (same child names), so forward hooks on its name and on its ``act`` still see
    the same tensor. Pairs whose conv is in ``keep`` (a layer whose own output is needed) are left alone.
    The outputs change only by float rounding.
    """
    keep = set(keep)
    modules = dict(model.named_modules())
    folded = 0
    for conv_name, bn_name in conv_batchnorm_pairs(model):
        conv, bn = modules[conv_name], modules[bn_name]
        if conv_name in keep or bn.training or not bn.track_running_stats or bn.running_var is None:
            continue
        scale = (bn.weight.double() if bn.affine else 1.0) / torch.sqrt(bn.running_var.double() + bn.eps)
        shift = (bn.bias.double() if bn.affine else 0.0) - bn.running_mean.double() * scale
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        with torch.no_grad():
            weight = conv.weight.double() * scale.reshape(-1, 1, 1, 1)
            conv.weight.copy_(weight.to(conv.weight.dtype))
            conv.bias = nn.Parameter((bias * scale + shift).to(conv.weight.dtype), requires_grad=False)
        parent_name, _, child = bn_name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        # timm's BatchNormAct2d is batch_norm -> drop -> act: keep the last two under their names
        setattr(parent, child, _DropAct(bn.drop, bn.act) if isinstance(bn, BatchNormAct2d) else nn.Identity())
        folded += 1
    return folded
