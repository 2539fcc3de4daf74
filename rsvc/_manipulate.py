"""Module surgery: eval BatchNorm folded into the conv before it, and a model made ready for inference."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable, Sequence

import torch
from timm.layers import BatchNormAct2d, Conv2dSame
from torch import nn

from rsvc.settings import ExtractionSettings

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


def prepare_model(
    model: nn.Module, device: torch.device, settings: ExtractionSettings, keep: Sequence[str] = ()
) -> tuple[nn.Module, int]:
    """-> (the model ready for inference, number of BatchNorms folded).

    Folding works on a copy, so the caller's model keeps its modules; convs named
    in ``keep`` (requested layers) are not folded.
    """
    model = model.eval()
    folded = 0
    if settings.fold_batchnorm and any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        model = copy.deepcopy(model)
        folded = fold_batchnorm(model, keep)
    model = model.to(device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, folded
