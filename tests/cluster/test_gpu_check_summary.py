"""benchmarks/gpu_check_summary.py: the projected GPU time of the paper's 1000-class run from measured rates."""

from __future__ import annotations

import json
import math
import sys

import yaml
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check_summary as gcs  # noqa: E402


def run(model: str, mode: str, batch: int, rate: float) -> dict:
    return {"model": model, "mode": mode, "batch_size": batch, "steady_patches_per_s": rate}


def test_forward_passes_come_from_the_paper_config():
    passes = gcs.forward_passes()
    cfg = yaml.safe_load(gcs.PAPER_RUN.read_text())
    assert passes["classes"] == 1000 and passes["patches_per_image"] == 16
    assert passes["models"] == {"rn18": "resnet18", "rn50": "resnet50"}
    # 300 pool + 50 held-out images predicted per class; 2 owners x (200 shared + 50 held-out) x 16 patches
    assert cfg["dataset"]["pool_images_per_class"] == 300 and passes["predict"] == 350_000
    assert passes["activations"] == 8_000_000


def test_projection_takes_the_best_rate_of_each_architecture(tmp_path):
    runs = [
        run("resnet18", "bf16+cl", 256, 10_000.0),
        run("resnet18", "bf16+cl", 1024, 12_000.0),
        run("resnet50", "bf16+cl", 256, 5_000.0),
        run("resnet50", "bf16+cl", 1024, math.nan),  # one batch: no steady rate
        run("resnet50", "bf16+cl+compile", 256, 6_000.0),
        run("resnet50", "fp32+cl", 256, 50_000.0),  # another mode: not used
    ]
    p = gcs.projection(runs)
    forwards = 8_350_000
    rn18, rn50 = p["per_model"]["rn18"], p["per_model"]["rn50"]
    assert rn18["eager"] == {"rate": 12_000.0, "batch_size": 1024, "seconds": forwards / 12_000}
    assert rn50["eager"]["seconds"] == forwards / 5_000 and rn50["compile"]["batch_size"] == 256
    assert math.isnan(rn18["compile"]["rate"]) and math.isnan(p["total_seconds"]["compile"])
    assert p["total_seconds"]["eager"] == forwards / 12_000 + forwards / 5_000

    (tmp_path / "extraction.jsonl").write_text(
        "".join(
            json.dumps({**r, "patches": 1, "seconds": 1.0, "patches_per_s": 1.0, "loop_start": 0, "loop_end": 1}) + "\n"
            for r in runs
        )
    )
    text = gcs.render(gcs.summarise(tmp_path, None, "resnet50", 1.0))
    assert "projected GPU time of experiments/imagenet_rn18_rn50.yaml (1000 classes" in text
    assert f"both models: eager {(forwards / 12_000 + forwards / 5_000) / 60:.1f} min, compile n/a min" in text
