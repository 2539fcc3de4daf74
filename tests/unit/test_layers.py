"""Layer selectors on real timm architectures (EfficientNet, MobileNet, ConvNeXt, ViT, ResNet, RegNet).

The networks are built on the meta device (shapes only, no weights); the oracles are the module
types and names the architectures are known to have, and a hook on a real forward pass.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import timm
import torch
from torch import nn

from rsvc._features import HookedForward
from rsvc._manipulate import prepare_model
from rsvc.layers import LayerSelectionError, resolve_layers
from rsvc.settings import ExtractionSettings


def _meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, **kwargs).eval()


def _of_type(model: nn.Module, *types: type) -> list[str]:
    return [n for n, m in model.named_modules() if type(m) in types]


def test_efficientnet_lite_auto_is_every_relu6():
    model = _meta("tf_efficientnet_lite0")
    relu6 = _of_type(model, nn.ReLU6)  # the lite networks' only activation, registered in forward order
    assert len(relu6) == 33
    assert resolve_layers(model, "auto") == resolve_layers(model, "activations") == relu6


def test_efficientnet_silu_without_squeeze_excitation_insides():
    model = _meta("efficientnet_b0")
    silu = _of_type(model, nn.SiLU)
    feature_maps = [n for n in silu if ".se." not in n]  # SE's reduce activation sees a 1 x 1 map
    assert len(silu) == 49 and len(feature_maps) == 33
    assert resolve_layers(model, "auto") == feature_maps


def test_mobilenetv3_mixes_hardswish_and_relu():
    model = _meta("mobilenetv3_large_100")
    expected = [n for n in _of_type(model, nn.Hardswish, nn.ReLU) if ".se." not in n and not n.startswith("act2")]
    got = resolve_layers(model, "activations")
    assert got == expected
    assert {type(dict(model.named_modules())[n]) for n in got} == {nn.Hardswish, nn.ReLU}


def test_convnext_auto_is_every_block_and_its_channels_last_gelus_are_refused():
    model = _meta("convnext_tiny")
    depths = (3, 3, 9, 3)
    blocks = [f"stages.{s}.blocks.{b}" for s, d in enumerate(depths) for b in range(d)]
    assert resolve_layers(model, "auto") == resolve_layers(model, "blocks") == blocks
    with pytest.raises(LayerSelectionError, match=r"'activations' selects no module of model 'cx' \(ConvNeXt\)"):
        resolve_layers(model, "activations", model_name="cx")
    with pytest.raises(LayerSelectionError, match="channels-last"):
        resolve_layers(model, ["stages.0.blocks.0.mlp.act"])
    assert resolve_layers(model, "stages") == [f"stages.{s}" for s in range(4)]


def test_vit_auto_is_every_block():
    model = _meta("vit_small_patch16_224")
    assert resolve_layers(model, "auto") == [f"blocks.{i}" for i in range(12)]
    assert resolve_layers(model, "activations") == [f"blocks.{i}.mlp.act" for i in range(12)]


def test_resnet_auto_is_every_relu_and_regnet_blocks():
    resnet = _meta("resnet50")
    assert resolve_layers(resnet, "auto") == resolve_layers(resnet, "relu") == _of_type(resnet, nn.ReLU)
    assert len(resolve_layers(resnet, "auto")) == 49  # the paper's 49 ReLUs of ResNet-50
    regnet = _meta("regnety_008")
    blocks = [n for n, _ in regnet.named_modules() if re.fullmatch(r"s\d+\.b\d+", n)]
    assert resolve_layers(regnet, "blocks") == blocks and len(blocks) == 14


def test_a_selector_that_finds_nothing_names_the_model_and_candidates():
    model = _meta("tf_efficientnet_lite0")
    with pytest.raises(LayerSelectionError) as err:
        resolve_layers(model, "relu", model_name="lite0")
    msg = str(err.value)
    assert "model 'lite0' (EfficientNet)" in msg and "activations: bn1.act, blocks.0.0.bn1.act" in msg
    assert "blocks: blocks.0.0" in msg
    with pytest.raises(LayerSelectionError, match="'blocks.0.0.bn1.actt' is not a module"):
        resolve_layers(model, ["blocks.0.0.bn1.actt"])


def test_efficientnet_activations_are_hooked_after_batchnorm_folding():
    """Folding keeps a BatchNormAct2d's ``act`` under its name; the pooled activations equal the unfolded
    network's (oracle: hooks on the plain model, float64 tolerance of a fold)."""
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10).eval()
    for m in model.modules():  # non-trivial running statistics, so that folding changes the convs
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    layers = resolve_layers(model, "auto")
    x = torch.rand(2, 3, 64, 64)
    plain = HookedForward(model, layers, "cls")
    with torch.inference_mode():
        expected = {k: v.clone() for k, v in plain(x).items()}
    plain.remove()
    settings = ExtractionSettings(image_size=64, patch_size=32, channels_last=False)
    folded, n_folded = prepare_model(model, torch.device("cpu"), settings)
    assert n_folded > 30
    hooked = HookedForward(folded, layers, "cls")
    with torch.inference_mode():
        got = hooked(x)
    hooked.remove()
    for name in layers:
        np.testing.assert_allclose(got[name].numpy(), expected[name].numpy(), rtol=1e-4, atol=1e-4, err_msg=name)
