"""Whole-image predictions of one model for the class folders of one shard."""

from rsvc.formats import OK, write_predictions
from rsvc.jobs import predictions_job, shard_images
from rsvc.models import create_model
from rsvc.runtime import limit_threads, seed_everything, setup_logging
from rsvc.specs import ExtractionSettings, ModelSpec

log = setup_logging(snakemake.log[0])
limit_threads(snakemake.threads)
seed_everything(0)
p = snakemake.params
images = shard_images(snakemake.input.data, snakemake.wildcards.split, list(p.shard_classes), p.pool_images_per_class)
for cid in sorted(set(p.shard_classes) - set(images["label"])):
    log.warning("class %s: its folder has no images", cid)
settings = ExtractionSettings.from_params(p.pixels, snakemake.config["extraction"], batch_key="predict_batch_size")
model = create_model(ModelSpec(**p.spec), device="cpu")
table = predictions_job(model, images, list(p.classes), settings)
write_predictions(snakemake.output[0], table)
log.info("predicted %d images, skipped %d", int((table["status"] == OK).sum()), int((table["status"] != OK).sum()))
