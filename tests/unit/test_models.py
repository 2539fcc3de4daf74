"""timm model creation, safe checkpoints, layer names and the linear head, on real random-init models."""

from __future__ import annotations

import argparse
import copy
import os

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from rsvc._manipulate import fold_batchnorm
from rsvc.layers import block_layer_names, relu_layer_names, resolve_layers
from rsvc.models import create_model, head_parameters, load_state_dict_safely, model_data_config
from rsvc.specs import ModelSpec

RESNET = ModelSpec(
    "r",
    "resnet18",
    num_classes=7,
    model_kwargs={"channels": (16, 32, 64, 128), "stem_width": 16},
    pretrained_cfg_overlay={"input_size": (3, 48, 48)},
)
VIT = ModelSpec(
    "v", "test_vit", num_classes=5, model_kwargs={"img_size": 32}, pretrained_cfg_overlay={"input_size": (3, 32, 32)}
)


def _x(model, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *model_data_config(model)["input_size"]), generator=g)


@pytest.mark.parametrize("name", ["resnet", "vit"])
def test_head_parameters_reproduce_logits(name, request):
    model = request.getfixturevalue(name)
    x = _x(model)
    with torch.no_grad():
        logits = model(x).double().numpy()
        pre = model.forward_head(model.forward_features(x), pre_logits=True).double().numpy()
    w, b = head_parameters(model)
    assert w.shape == (logits.shape[1], pre.shape[1]) and b.shape == (logits.shape[1],)
    np.testing.assert_allclose(pre @ w.T + b, logits, rtol=1e-5, atol=1e-5)


def test_data_config_uses_overlay(resnet, vit):
    cfg = model_data_config(resnet)
    assert tuple(cfg["input_size"]) == (3, 48, 48)
    assert np.allclose(cfg["mean"], (0.485, 0.456, 0.406))
    assert tuple(model_data_config(vit)["input_size"]) == (3, 32, 32)


def test_relu_layer_names_resnet18(resnet):
    names = relu_layer_names(resnet)
    assert len(names) == 17
    assert names[:3] == ["act1", "layer1.0.act1", "layer1.0.act2"] and names[-1] == "layer4.1.act2"
    # oracle: the order in which the ReLUs actually run
    order = []
    hooks = [
        m.register_forward_hook(lambda m, i, o, n=n: order.append(n))
        for n, m in resnet.named_modules()
        if isinstance(m, nn.ReLU)
    ]
    with torch.no_grad():
        resnet(_x(resnet, 1))
    for h in hooks:
        h.remove()
    assert names == order


def test_shared_relu_is_refused():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.conv(self.relu(x)))

    model = Shared()
    model.pretrained_cfg = {"input_size": (3, 8, 8)}
    with pytest.raises(ValueError, match="more than once"):
        relu_layer_names(model)


def test_block_names_and_resolve(resnet, vit):
    assert block_layer_names(vit) == [f"blocks.{i}" for i in range(len(vit.blocks))]
    assert resolve_layers(vit, "blocks") == block_layer_names(vit)
    assert resolve_layers(resnet, "relu") == relu_layer_names(resnet)
    assert resolve_layers(resnet, ["layer2.1.act2", "pre_logits"]) == ["layer2.1.act2", "pre_logits"]
    with pytest.raises(ValueError, match="layer1.0.act1"):
        resolve_layers(resnet, ["layer1.0.act", "pre_logits"])
    # a ResNet's blocks are the children of its layerN stages
    assert block_layer_names(resnet) == [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_checkpoint_roundtrip_keeps_classifier(tmp_path, resnet, suffix):
    torch.manual_seed(1)
    trained = create_model(RESNET)  # other random weights than the fixture
    state = {k: v.contiguous() for k, v in trained.state_dict().items()}
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        safetensors.torch.save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    loaded = create_model(ModelSpec(**{**RESNET.__dict__, "checkpoint": str(path)}))
    x = _x(resnet)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained(x), rtol=0, atol=0)
        assert not torch.allclose(resnet(x), trained(x))
    assert load_state_dict_safely(path).keys() == state.keys()


class _Payload:
    """Pickles to a call that writes a marker file if it is ever unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_objects_are_refused(tmp_path, resnet):
    marker = tmp_path / "executed"
    state = resnet.state_dict()
    cases = {
        "code.pth": {"state_dict": state, "payload": _Payload(str(marker))},
        "namespace.pth": {"state_dict": state, "args": argparse.Namespace(lr=0.1)},
        "numbers.pth": {"weight": torch.zeros(2), "epoch": 3},
        "array.pth": {"weight": np.zeros(2)},
    }
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(ValueError, match=rf"{name}.*safetensors"):
            load_state_dict_safely(tmp_path / name)
        with pytest.raises(ValueError, match=name):
            create_model(ModelSpec(**{**RESNET.__dict__, "checkpoint": str(tmp_path / name)}))
    assert not os.path.exists(marker)


def randomised_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """float64 copy whose BatchNorms have non-trivial statistics and affine parameters."""
    model = copy.deepcopy(model).double().eval()
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g, dtype=torch.float64) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g, dtype=torch.float64) - 0.5)
    return model


MOBILENET = ModelSpec("m", "mobilenetv3_small_050", num_classes=5, pretrained_cfg_overlay={"input_size": (3, 32, 32)})


@pytest.mark.parametrize("spec", [RESNET, MOBILENET], ids=["resnet18 (BatchNorm2d)", "mobilenetv3 (BatchNormAct2d)"])
def test_fold_batchnorm_is_exact_in_float64(spec):
    torch.manual_seed(0)
    model = randomised_batchnorm(create_model(spec))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) == n_bn > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        np.testing.assert_allclose(folded(x).numpy(), model(x).numpy(), rtol=1e-9, atol=1e-11)
    assert fold_batchnorm(folded) == 0  # idempotent


class _ConvUsedTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.bn_a = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.b, self.bn_b = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.c, self.bn_c = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        a = self.a(x)
        return self.bn_a(a) + a + self.bn_b(self.b(x)) + self.bn_c(self.c(x))


def test_fold_batchnorm_leaves_shared_and_kept_convs():
    model = randomised_batchnorm(_ConvUsedTwice())
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded, keep=["c"]) == 1  # a's output is also read by the sum; c is kept
    assert isinstance(folded.bn_a, nn.BatchNorm2d) and isinstance(folded.bn_c, nn.BatchNorm2d)
    assert isinstance(folded.bn_b, nn.Identity)
    with torch.no_grad():
        np.testing.assert_allclose(folded(x).numpy(), model(x).numpy(), rtol=1e-9, atol=1e-11)
