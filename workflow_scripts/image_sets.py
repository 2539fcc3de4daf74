"""Image sets I_m^c: images the model predicts as c, sampled (seeded) to a cap."""

from rsvc.formats import read_predictions, write_image_sets
from rsvc.image_sets import image_sets_job
from rsvc.runtime import setup_logging
from rsvc.settings import ImageSetSettings

log = setup_logging(snakemake.log[0])
p = snakemake.params
w = snakemake.wildcards
settings = ImageSetSettings.from_params(p.sets)
sets, counts = image_sets_job(
    read_predictions(snakemake.input), list(p.classes), settings, model=w.model, split=w.split
)
write_image_sets(snakemake.output.sets, snakemake.output.counts, sets, counts)
log.info(
    "%d classes with images, %d skipped", int((counts["status"] == "ok").sum()), int((counts["status"] != "ok").sum())
)
