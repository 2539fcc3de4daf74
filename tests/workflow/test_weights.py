"""Pretrained weights are read offline from the local cache; a missing file fails at once
with the model's name and the fetch command (no network here, none needed)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
import yaml
from conftest import REPO, run_snakemake, write_config
from imagenet_tree import imagenet_wnids, make_imagenet_tree

from rsvc.models import create_model
from rsvc.specs import ModelSpec
from rsvc.weights import MissingWeightsError, cached_weights_file, weights_source

RN18 = "resnet18.a2_in1k"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _put_in_hub_cache(hub: Path, repo: str, filename: str, tensors: dict[str, torch.Tensor]) -> Path:
    """The layout huggingface_hub writes: refs/main -> snapshots/<commit>/<file>."""
    root = hub / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    path = root / "snapshots" / COMMIT / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    if filename.endswith(".safetensors"):
        safetensors.torch.save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    else:
        torch.save(tensors, path)
    return path


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face hub cache for this process."""
    from huggingface_hub import constants

    hub = tmp_path / "hf" / "hub"
    hub.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    return hub


def test_source_is_the_one_timm_resolves():
    from timm.models._builder import _resolve_pretrained_source  # oracle: timm's own resolution

    for name in (RN18, "resnet18", "vit_small_patch16_224.augreg_in21k_ft_in1k"):
        kind, loc = _resolve_pretrained_source(timm.models.get_pretrained_cfg(name).to_dict())
        src = weights_source(name)
        assert (src.kind, src.location) == (kind, loc)
        assert src.filenames == ("model.safetensors", "pytorch_model.bin")
    assert weights_source("hf-hub:someone/model@v2").revision == "v2"


def test_missing_weights_fail_at_once_with_model_and_command(hub, monkeypatch):
    monkeypatch.setenv("RSVC_FETCH_WEIGHTS_COMMAND", "snakemake --cores 1 fetch_weights --configfile exp.yaml")
    spec = ModelSpec(name="rn18", timm_name=RN18, pretrained=True)
    t0 = time.monotonic()
    with pytest.raises(MissingWeightsError) as err:
        create_model(spec)
    assert time.monotonic() - t0 < 2.0  # no network attempt, no model construction
    msg = str(err.value)
    for part in (
        "model 'rn18'",
        RN18,
        "timm/resnet18.a2_in1k",
        str(hub),
        "snakemake --cores 1 fetch_weights --configfile exp.yaml",
    ):
        assert part in msg


def test_cached_weights_are_loaded_offline(hub):
    torch.manual_seed(0)
    reference = timm.create_model("resnet18", pretrained=False).state_dict()
    path = _put_in_hub_cache(hub, "timm/" + RN18, "model.safetensors", reference)
    assert cached_weights_file(RN18) == path
    model = create_model(ModelSpec(name="rn18", timm_name=RN18, pretrained=True))
    stored = safetensors.torch.load_file(str(path))  # oracle: the file itself
    loaded = model.state_dict()
    assert stored.keys() == loaded.keys()
    assert all(torch.equal(stored[k], loaded[k]) for k in stored)
    assert model.pretrained_cfg["mean"] == timm.models.get_pretrained_cfg(RN18).mean


def test_bin_file_is_found_when_no_safetensors(hub):
    path = _put_in_hub_cache(hub, "timm/" + RN18, "pytorch_model.bin", {"w": torch.zeros(2)})
    assert cached_weights_file(RN18) == path
    assert cached_weights_file("resnet50.a2_in1k") is None


@pytest.mark.workflow
def test_offline_job_fails_at_once_naming_the_fetch_command(tmp_path):
    """A GPU-side job of a pretrained model whose marker exists but whose cache is empty
    (e.g. another HF_HOME than the login node's) stops with the fix, without network retries."""
    wnids = imagenet_wnids()[:2]
    make_imagenet_tree(tmp_path / "imagenet", wnids=wnids)
    cfg = yaml.safe_load((REPO / "experiments" / "imagenet_rn18_rn50.yaml").read_text())
    cfg["dataset"].update(root=str(tmp_path / "imagenet"), classes=wnids)
    cfg["models"] = {
        "rn18": {"timm_name": RN18, "pretrained": True, "num_classes": 2, "layers": ["act1"]},
        "rand": {"timm_name": "resnet18", "num_classes": 2, "layers": ["act1"]},
    }
    cfg["outdir"] = "out"
    config = write_config(tmp_path / "exp.yaml", cfg)
    marker = tmp_path / "out" / "weights" / "rn18.ok"
    marker.parent.mkdir(parents=True)
    marker.write_text("{}\n")  # fetched once, but not into this job's cache
    proc = run_snakemake(
        "--cores",
        "1",
        "out/heads/rn18.h5",
        "--configfile",
        str(config),
        cwd=tmp_path,
        check=False,
        timeout=300,
        env={"HF_HOME": str(tmp_path / "empty_hf_home")},
    )
    assert proc.returncode != 0
    assert "fetch_model_weights" not in proc.stdout + proc.stderr  # the marker is up to date
    log = (tmp_path / "out" / "logs" / "export_head" / "rn18.log").read_text()
    assert "MissingWeightsError" in log and "model 'rn18'" in log and RN18 in log
    assert "HF_HUB_OFFLINE=1" in log
    assert (
        f"cd {tmp_path} && snakemake --cores 1 fetch_weights --forcerun fetch_model_weights "
        f"--snakefile {REPO / 'Snakefile'} --configfile {config}"
    ) in log
    assert "huggingface.co" not in log and "Retry" not in log  # failed before any network attempt
