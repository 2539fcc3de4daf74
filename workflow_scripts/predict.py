"""Whole-image predictions of one model for the class folders of one shard."""

from rsvc.formats import OK, write_predictions
from rsvc.models import create_model
from rsvc.predictions import predictions_job, shard_images
from rsvc.runtime import limit_threads, seed_everything, setup_logging
from rsvc.settings import ExtractionSettings
from rsvc.specs import ModelSpec

log = setup_logging(snakemake.log[0])
limit_threads(snakemake.threads)
seed_everything(0)
p = snakemake.params
images = shard_images(snakemake.input.data, snakemake.wildcards.split, list(p.shard_classes), p.pool_images_per_class)
no_images = [cid for cid in p.shard_classes if cid not in set(images["label"])]
if no_images:
    log.info(
        "%d of %d classes of this shard have no images of their own (folder missing or empty), e.g. %s",
        len(no_images),
        len(p.shard_classes),
        ", ".join(no_images[:5]),
    )
settings = ExtractionSettings.from_params(p.pixels, snakemake.config["extraction"], batch_key="predict_batch_size")
model = create_model(ModelSpec(**p.spec), device="cpu")
table = predictions_job(model, images, list(p.classes), settings)
write_predictions(snakemake.output[0], table)
log.info("predicted %d images, skipped %d", int((table["status"] == OK).sum()), int((table["status"] != OK).sum()))
