"""Checkpoint checks that read only the safetensors header, against real timm models and real files."""

from __future__ import annotations

import pytest
from safetensors.torch import save_file

from rsvc.checkpoints import compare_tensors, read_safetensors_header
from rsvc.models import create_model
from rsvc.preflight import check_model
from rsvc.specs import ModelSpec

KWARGS = {"channels": [16, 32, 64, 128], "stem_width": 16}


def _spec(**over):
    spec = {
        "timm_name": "resnet18",
        "checkpoint": None,
        "pretrained": False,
        "num_classes": 3,
        "model_kwargs": KWARGS,
        "pretrained_cfg_overlay": {},
        "layers": "relu",
        "decomposition": "auto",
        "token": "cls",
    }
    return {**spec, **over}


def _save(path, timm_name="resnet18", num_classes=3, kwargs=KWARGS, drop=None):
    model = create_model(ModelSpec("m", timm_name, num_classes=num_classes, model_kwargs=kwargs))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != drop}
    save_file(state, str(path))
    return state


def test_header_matches_the_stored_tensors(tmp_path):
    state = _save(tmp_path / "ok.safetensors")
    header = read_safetensors_header(tmp_path / "ok.safetensors")
    assert {k: s for k, (_, s) in header.items()} == {k: tuple(v.shape) for k, v in state.items()}
    assert header["fc.weight"][0] == "F32"
    assert compare_tensors({k: tuple(v.shape) for k, v in state.items()}, header) is None


def test_a_matching_checkpoint_passes(tmp_path):
    _save(tmp_path / "ok.safetensors")
    assert check_model("rn", _spec(checkpoint=str(tmp_path / "ok.safetensors")), 3) == []


@pytest.mark.parametrize(
    ("kind", "make", "expected"),
    [
        ("wrong architecture", lambda p: _save(p, "resnet34", kwargs={}), "tensor 'layer"),
        ("wrong output size", lambda p: _save(p, num_classes=10), "'fc.weight' has shape [10, 128]"),
        (
            "missing tensor",
            lambda p: _save(p, drop="layer4.1.bn2.weight"),
            "'layer4.1.bn2.weight' of the model is missing",
        ),
        ("text named .safetensors", lambda p: p.write_text("not a model\n" * 10), "not a safetensors file"),
        ("truncated", lambda p: (_save(p), p.write_bytes(p.read_bytes()[:-100])), "truncated"),
    ],
)
def test_a_mismatching_checkpoint_stops_the_preflight_naming_key_file_and_tensor(tmp_path, kind, make, expected):
    path = tmp_path / "bad.safetensors"
    make(path)
    errors = check_model("rn", _spec(checkpoint=str(path)), 3)
    assert len(errors) == 1, (kind, errors)
    assert errors[0].startswith("models.rn.checkpoint:") and str(path) in errors[0], errors
    assert expected in errors[0], (kind, errors)


def test_a_missing_checkpoint_file_is_named_unless_the_workflow_makes_it(tmp_path):
    missing = str(tmp_path / "nope.safetensors")
    (error,) = check_model("rn", _spec(checkpoint=missing), 3)
    assert "models.rn.checkpoint" in error and "does not exist" in error
    assert check_model("rn", _spec(checkpoint=missing), 3, checkpoint_made_by_workflow=True) == []


def test_the_header_check_agrees_with_loading(tmp_path):
    """A checkpoint the header check accepts loads into the model (and the mismatching one does not)."""
    _save(tmp_path / "ok.safetensors")
    _save(tmp_path / "bad.safetensors", num_classes=10)
    spec = ModelSpec("m", "resnet18", checkpoint=str(tmp_path / "ok.safetensors"), num_classes=3, model_kwargs=KWARGS)
    create_model(spec)
    with pytest.raises((RuntimeError, ValueError)):
        create_model(
            ModelSpec("m", "resnet18", checkpoint=str(tmp_path / "bad.safetensors"), num_classes=3, model_kwargs=KWARGS)
        )


def test_passed_model_checks_are_cached_until_an_input_changes(tmp_path, monkeypatch):
    import rsvc.preflight as preflight

    ckpt = tmp_path / "ok.safetensors"
    _save(ckpt)
    models = {"rn": _spec(checkpoint=str(ckpt))}
    cache = tmp_path / ".snakemake/rsvc_preflight.json"
    calls = []
    real = preflight.check_model
    monkeypatch.setattr(preflight, "check_model", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    assert preflight.check_models_cached(models, 3, [], cache) == ([], [])
    assert preflight.check_models_cached(models, 3, [], cache) == ([], [])
    assert calls == ["rn"], "the second check is served from the cache"
    assert preflight.check_models_cached(models, 4, [], cache)[0], "another class count is checked again (and fails)"
    _save(ckpt, num_classes=10)  # the file changes: checked again, and now it does not fit
    (error,) = preflight.check_models_cached(models, 3, [], cache)[0]
    assert "fc.weight" in error and calls == ["rn", "rn", "rn"]
