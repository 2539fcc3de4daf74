"""Which modules of a timm model RSVC reads: layer selectors resolved to module names.

A model's ``layers`` config is a selector or a list of module names; ``pre_logits`` (the input of the
linear classifier) is always added by the jobs. Selectors work for any timm architecture:

- ``"activations"``: every activation module of any kind (ReLU, ReLU6, SiLU/Swish, GELU, Hardswish,
  Mish, ...) whose output is a feature map ``(N, C, H, W)`` or a token sequence ``(N, T, D)``, in
  forward order. Gates (Sigmoid, Hardsigmoid, Tanh) and activations on ``1 x 1`` maps (the inside of
  squeeze-excitation modules, a head after global pooling) are not feature maps and are left out,
  and so are channels-last ``(N, H, W, C)`` outputs (ConvNeXt's MLP), which cannot be pooled as
  ``(N, C, H, W)``;
- ``"relu"``: the :class:`torch.nn.ReLU` modules only (ResNets; the paper's choice);
- ``"blocks"``: every block output: the children of each ``blocks`` container (ViT ``blocks.i``,
  EfficientNet/MobileNet ``blocks.s.b``, ConvNeXt ``stages.s.blocks.b``, Swin ``layers.s.blocks.b``),
  of ResNet ``layerN`` stages and of RegNet ``sN`` stages;
- ``"stages"``: the stage outputs timm itself lists in ``model.feature_info``;
- ``"auto"`` (the default): ``"blocks"`` for a transformer (``model.blocks`` with token outputs),
  else ``"activations"``, else ``"blocks"`` when a network has no poolable activation.

Every selector and every listed name is checked with one dummy forward pass (on the meta device
in the preflight: no weights, no memory): a module must run exactly once per forward pass and give
an output that can be pooled. A selector that finds nothing is an error that names the model and
lists candidate layers.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rsvc.specs import PRE_LOGITS, SELECTORS

#: Activation classes by name (torch's and timm's own), so that a timm release adding or renaming
#: one of its classes needs no change here; gates (Sigmoid, Hardsigmoid, Tanh) are not listed.
ACTIVATION_CLASS_NAMES = frozenset(
    {
        "ReLU",
        "ReLU6",
        "LeakyReLU",
        "PReLU",
        "RReLU",
        "ELU",
        "CELU",
        "SELU",
        "SiLU",
        "Swish",
        "SwishAuto",
        "GELU",
        "GELUTanh",
        "QuickGELU",
        "Hardswish",
        "HardSwish",
        "HardSwishAuto",
        "Mish",
        "MishAuto",
        "HardMish",
        "Softplus",
        "StarReLU",
    }
)


class LayerSelectionError(ValueError):
    """A layer selector or name that gives nothing usable; the message names the model and the candidates."""


@dataclass(frozen=True)
class _Trace:
    calls: dict[str, int]  # module name -> calls per forward pass
    shapes: dict[str, tuple[int, ...]]  # module name -> output shape of its first call
    order: list[str]  # names in the order of their first call


def _input_size(model: nn.Module) -> tuple[int, int, int]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = tuple(cfg.get("input_size") or (3, 224, 224))
    return int(size[0]), int(size[1]), int(size[2])


def _trace(model: nn.Module, names: Sequence[str], hw: tuple[int, int] | None = None) -> _Trace:
    """One dummy forward (``forward_features`` then ``forward_head(pre_logits=True)``, what extraction runs)."""
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    order: list[str] = []

    def hook(name: str):
        def record(module: nn.Module, inputs, output) -> None:
            if name not in calls:
                order.append(name)
                out = output[0] if isinstance(output, (tuple, list)) else output
                shapes[name] = tuple(out.shape) if torch.is_tensor(out) else ()
            calls[name] = calls.get(name, 0) + 1

        return record

    handles = [modules[n].register_forward_hook(hook(n)) for n in names if n in modules]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    c, h, w = _input_size(model)
    if hw is not None:
        h, w = hw
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros((1, c, h, w), device=device)
        with torch.inference_mode():
            if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
                model.forward_head(model.forward_features(x), pre_logits=True)
            else:  # a plain nn.Module
                model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return _Trace(calls, shapes, order)


def _channels_last_outputs(model: nn.Module, names: Sequence[str], square: _Trace) -> set[str]:
    """Names whose 4-D output is ``(N, H, W, C)``: a second dummy forward on a wider input tells which axis is
    the width. A network that takes one input size only (most ViTs) is left as it is."""
    four_d = [n for n in names if len(square.shapes.get(n, ())) == 4]
    if not four_d:
        return set()
    _, h, w = _input_size(model)
    try:
        wide = _trace(model, four_d, (h, w + 64))
    except Exception:  # noqa: BLE001 - a fixed input size: no second shape to compare with
        return set()
    found = set()
    for n in four_d:
        a, b = square.shapes[n], wide.shapes.get(n)
        if b is not None and a[3] == b[3] and a[2] != b[2]:
            found.add(n)
    return found


def _poolable(shape: tuple[int, ...]) -> bool:
    """A feature map with more than one position, or a token sequence."""
    if len(shape) == 4:
        return shape[2] * shape[3] > 1
    return len(shape) == 3


def activation_layer_names(model: nn.Module) -> list[str]:
    """Every activation module (:data:`ACTIVATION_CLASS_NAMES`) that runs once per forward pass and gives a
    poolable ``(N, C, H, W)`` map or token sequence, in forward order."""
    names = [n for n, m in model.named_modules() if n and type(m).__name__ in ACTIVATION_CLASS_NAMES]
    if not names:
        return []
    trace = _trace(model, names)
    nhwc = _channels_last_outputs(model, trace.order, trace)
    return [n for n in trace.order if trace.calls[n] == 1 and n not in nhwc and _poolable(trace.shapes[n])]


def relu_layer_names(model: nn.Module) -> list[str]:
    """Every :class:`torch.nn.ReLU` module in forward order (resnet18: 17 names ``act1, layer1.0.act1, ...``).

    The order comes from one dummy forward pass. A ReLU module called more than once per forward
    (shared, e.g. torchvision's ``Bottleneck.relu``) has no single output and is refused.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    if not names:
        return []
    trace = _trace(model, names)
    repeated = [n for n in trace.order if trace.calls[n] > 1]
    if repeated:
        raise LayerSelectionError(f"ReLU modules called more than once per forward (ambiguous outputs): {repeated}")
    return list(trace.order)


_BLOCK_CONTAINER = re.compile(r"(^|\.)(blocks|layer\d+)$")  # ViT/EfficientNet/ConvNeXt/Swin blocks, ResNet stages
_REGNET_STAGE = re.compile(r"(^|\.)s\d+$")  # RegNet stages, whose blocks are b1, b2, ...


def block_layer_names(model: nn.Module) -> list[str]:
    """Every block output: the children of each ``blocks`` container (a child that is itself a plain
    ``Sequential``/``ModuleList``, as EfficientNet's stages, is replaced by its children), of ResNet
    ``layerN`` and of RegNet ``sN`` stages, in forward order."""
    containers = (nn.Sequential, nn.ModuleList)
    candidates = []
    for name, module in model.named_modules():
        if _REGNET_STAGE.search(name):
            children = [(f"{name}.{c}", m) for c, m in module.named_children() if re.fullmatch(r"b\d+", c)]
        elif _BLOCK_CONTAINER.search(name) and isinstance(module, containers):
            children = [(f"{name}.{c}", m) for c, m in module.named_children()]
        else:
            continue
        for child_name, child in children:
            if type(child) in containers:
                candidates += [f"{child_name}.{c}" for c, _ in child.named_children()]
            else:
                candidates.append(child_name)
    candidates = list(dict.fromkeys(candidates))
    if not candidates:
        return []
    trace = _trace(model, candidates)
    return [n for n in trace.order if trace.calls[n] == 1]


def stage_layer_names(model: nn.Module) -> list[str]:
    """The stage outputs of timm's ``model.feature_info`` (resnet: ``act1, layer1, ..., layer4``)."""
    info = getattr(model, "feature_info", None) or []
    modules = dict(model.named_modules())
    return [d["module"] for d in info if isinstance(d, dict) and d.get("module") in modules]


def _is_transformer(model: nn.Module) -> bool:
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, (nn.Sequential, nn.ModuleList)) or not len(blocks):
        return False
    trace = _trace(model, ["blocks.0"])
    return len(trace.shapes.get("blocks.0", ())) == 3


def candidate_layers(model: nn.Module, n: int = 12) -> str:
    """A short list of layers a user could pick, per selector (for error messages)."""
    parts = []
    for selector, find in (
        ("activations", activation_layer_names),
        ("blocks", block_layer_names),
        ("stages", stage_layer_names),
    ):
        try:
            names = find(model)
        except Exception:  # noqa: BLE001 - a message helper never fails itself
            names = []
        if names:
            more = f", ... ({len(names)} in all)" if len(names) > n else ""
            parts.append(f"{selector}: {', '.join(names[:n])}{more}")
    return "; ".join(parts) or "none found; list module names (model.named_modules())"


def resolve_layers(model: nn.Module, layers: str | Sequence[str], model_name: str = "") -> list[str]:
    """A selector (:data:`rsvc.specs.SELECTORS`) or explicit module names -> module names in forward order
    (``"pre_logits"`` allowed in a list; the jobs always add it last).

    Raises :class:`LayerSelectionError` naming the model when a selector finds nothing, a name is not a
    module (with the closest names), a module does not run exactly once per forward pass, or its output
    is channels-last.
    """
    who = f"model {model_name!r} ({type(model).__name__})" if model_name else type(model).__name__
    if isinstance(layers, str) and layers in SELECTORS:
        if layers == "auto":
            found = block_layer_names(model) if _is_transformer(model) else activation_layer_names(model)
            found = found or block_layer_names(model)
        else:
            found = {
                "activations": activation_layer_names,
                "relu": relu_layer_names,
                "blocks": block_layer_names,
                "stages": stage_layer_names,
            }[layers](model)
        if not found:
            raise LayerSelectionError(f"{layers!r} selects no module of {who}. Candidates: {candidate_layers(model)}")
        return found
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    valid = [n for n, _ in model.named_modules() if n] + [PRE_LOGITS]
    valid_set = set(valid)
    unknown = [n for n in layers if n not in valid_set]
    if unknown:
        hints = {n: difflib.get_close_matches(n, valid, n=5, cutoff=0.4) for n in unknown}
        msg = "; ".join(
            f"{n!r} is not a module of {who} (closest: {', '.join(h) if h else 'none'})" for n, h in hints.items()
        )
        raise LayerSelectionError(msg)
    if len(set(layers)) != len(layers):
        raise LayerSelectionError(f"duplicate layer names for {who}: {layers}")
    modules = [n for n in layers if n != PRE_LOGITS]
    if modules:
        trace = _trace(model, modules)
        not_once = {n: trace.calls.get(n, 0) for n in modules if trace.calls.get(n, 0) != 1}
        if not_once:
            raise LayerSelectionError(
                f"layers of {who} must run exactly once per forward pass (forward_features, then "
                f"forward_head(pre_logits=True)); calls: {not_once}"
            )
        nhwc = _channels_last_outputs(model, modules, trace)
        if nhwc:
            raise LayerSelectionError(
                f"layers of {who} with channels-last (N, H, W, C) outputs cannot be pooled: {sorted(nhwc)}; "
                f"pick the enclosing blocks instead. Candidates: {candidate_layers(model)}"
            )
    return layers
