"""Whole-image predictions of one model for the class folders of one shard."""

from pathlib import Path

import numpy as np
import pandas as pd

from rsvc.activations import predict_images, readable_mask
from rsvc.formats import OK, SKIPPED_IMAGE, write_predictions
from rsvc.images import list_image_files
from rsvc.models import create_model
from rsvc.runtime import limit_threads, seed_everything, setup_logging
from rsvc.specs import ExtractionSettings, ModelSpec

log = setup_logging(snakemake.log[0])
limit_threads(snakemake.threads)
seed_everything(0)
p = snakemake.params
root = Path(snakemake.input.data)
split = snakemake.wildcards.split
cap = p.pool_images_per_class

rows = []
for cid in p.shard_classes:
    folder = root / split / cid
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: class folder missing for class '{cid}' (config key dataset.classes / dataset.root)"
        )
    files = list_image_files(folder)
    if cap is not None and len(files) > cap:
        files = files[:cap]
    if not files:
        log.warning("%s: class folder has no images", folder)
    rows += [(str(f.relative_to(root)), str(f), cid) for f in files]

images = pd.DataFrame(rows, columns=["image_id", "path", "label"])
settings = ExtractionSettings.from_params(p.pixels, snakemake.config["extraction"], batch_key="predict_batch_size")
model = create_model(ModelSpec(**p.spec), device="cpu")
pred, prob, skipped = predict_images(model, list(images["path"]), settings)
readable = readable_mask(list(images["path"]), skipped)
images["status"] = SKIPPED_IMAGE
images["pred_index"] = -1
images["prob"] = np.nan
images.loc[readable, "status"] = OK
images.loc[readable, "pred_index"] = pred
images.loc[readable, "prob"] = prob
classes = np.asarray(p.classes, dtype=object)
images["pred_class"] = [classes[i] if i >= 0 else "" for i in images["pred_index"]]
reasons = dict(skipped)
images["reason"] = [reasons.get(path, "") for path in images["path"]]
write_predictions(snakemake.output[0], images)
log.info("predicted %d images, skipped %d", int(readable.sum()), len(skipped))
