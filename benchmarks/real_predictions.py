"""Top-1 of real ImageNet weights through the workflow's prediction path, per dataset.preprocess, against
timm's own evaluation (docs/real_models.md). Needs ../shared/data/imagenet-samples and the weight packages.

    python benchmarks/real_predictions.py [--models lite0 lite2] [--n 1000]

Prints one line per (model, preprocess): top-1 of the workflow, top-1 of timm, and how many of the n
predictions differ from timm's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "real")]  # conftest.py, test_real.py

from test_real import SAMPLES, _package, _timm_reference  # noqa: E402

from rsvc.convert import convert_file  # noqa: E402
from rsvc.models import create_model  # noqa: E402
from rsvc.predictions import predictions_job  # noqa: E402
from rsvc.settings import ExtractionSettings  # noqa: E402
from rsvc.specs import ModelSpec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["lite0", "lite2"])
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    classes = [line.split("\t")[0] for line in (REPO / "experiments" / "imagenet_classes.txt").read_text().splitlines()]
    paths = sorted(SAMPLES.glob("*.JPEG"))[: args.n]
    truth = np.array([classes.index(p.name.split("_")[0]) for p in paths])
    images = pd.DataFrame({"image_id": [p.name for p in paths], "path": [str(p) for p in paths], "label": ""})
    with tempfile.TemporaryDirectory() as tmp:
        for lite in args.models:
            ckpt = Path(tmp, f"{lite}.safetensors")
            convert_file(f"package:{_package(lite)}", f"tf_efficientnet_{lite}", ckpt, num_classes=1000)
            model = create_model(ModelSpec(lite, f"tf_efficientnet_{lite}", checkpoint=str(ckpt), num_classes=1000))
            ref = _timm_reference(model, paths).argmax(1)
            for preprocess in ("timm_eval", "canonical"):
                t0 = time.perf_counter()
                numbers = {"preprocess": preprocess} | ({"image_size": 224} if preprocess == "canonical" else {})
                settings = ExtractionSettings(**numbers, batch_size=50, num_workers=2)
                ours = predictions_job(model, images, classes, settings)["pred_index"].to_numpy()
                print(
                    f"{lite:6s} {preprocess:9s}  top-1 {np.mean(ours == truth):.3f}  timm {np.mean(ref == truth):.3f}  "
                    f"differ from timm {int((ours != ref).sum())}/{len(paths)}  ({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
