"""Forward hooks that pool every requested layer in one forward pass (no feature map is kept).

4-D outputs ``(N, C, H, W)`` are averaged over space, 3-D token sequences ``(N, T, D)`` give the class
token or the mean of the non-prefix tokens; ``pre_logits`` is
``model.forward_head(model.forward_features(x), pre_logits=True)``, the input of the linear classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from rsvc.specs import PRE_LOGITS


def pool_output(out: Any, token: str, num_prefix_tokens: int, has_cls: bool) -> torch.Tensor:
    """Pool one layer output to ``(N, d)`` float32 (never keeps the feature map).

    4-D outputs are taken as ``(N, C, H, W)``; 3-D as ``(N, T, D)`` token sequences.
    """
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.ndim == 4:
        return spatial_mean(out)
    if out.ndim == 3:
        if token == "cls":
            if not has_cls:
                raise ValueError("token='cls' but the model has no class token; use token='mean'")
            return out[:, 0].float()
        return out[:, num_prefix_tokens:].mean(dim=1, dtype=torch.float32)
    if out.ndim == 2:
        return out.float()
    raise ValueError(f"cannot pool a layer output of shape {tuple(out.shape)}")


def spatial_mean(x: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C)`` float32 mean, accumulated in float32.

    bf16/fp16 maps on CPU are summed ``rows`` pixels at a time: torch's CPU
    reduction with ``dtype=float32`` converts the whole map first, which costs
    more than the convolution that made it.
    """
    if x.dtype == torch.float32 or x.device.type != "cpu":
        return x.mean(dim=(2, 3), dtype=torch.float32)
    n, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last):
        pixels, dim = x.permute(0, 2, 3, 1).reshape(n, h * w, c), 1  # a view: (N, HW, C)
    else:
        pixels, dim = x.reshape(n, c, h * w), 2
    total = torch.zeros((n, c), dtype=torch.float32, device=x.device)
    for start in range(0, h * w, rows):
        total += pixels.narrow(dim, start, min(rows, h * w - start)).float().sum(dim)
    return total / (h * w)


class HookedForward:
    """All requested layers pooled in one forward pass: ``self(x) -> {layer: (N, d) float32}``."""

    def __init__(self, model: nn.Module, layers: Sequence[str], token: str):
        self.model = model
        self.layers = list(layers)
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
        self.has_cls = getattr(model, "cls_token", None) is not None
        self.token = token
        self.out: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        self.handles = [
            modules[name].register_forward_hook(self._hook(name)) for name in self.layers if name != PRE_LOGITS
        ]

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            self.out[name] = pool_output(output, self.token, self.num_prefix_tokens, self.has_cls)

        return hook

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.out = {}
        features = self.model.forward_features(x)
        pre = self.model.forward_head(features, pre_logits=True)
        if PRE_LOGITS in self.layers:
            self.out[PRE_LOGITS] = pre.float()
        missing = [n for n in self.layers if n not in self.out]
        if missing:
            raise RuntimeError(f"layers not run by forward_features/forward_head(pre_logits=True): {missing}")
        return {n: self.out[n] for n in self.layers}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
