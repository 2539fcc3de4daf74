"""Image sets I_m^c: images the model predicts as c, sampled (seeded) to a cap."""

from rsvc.formats import read_predictions, write_image_sets
from rsvc.jobs import image_sets_job
from rsvc.runtime import setup_logging

log = setup_logging(snakemake.log[0])
p = snakemake.params
w = snakemake.wildcards
sets, counts = image_sets_job(
    read_predictions(snakemake.input),
    list(p.classes),
    by=p.by,
    max_images=p.max_images,
    min_images=p.min_images,
    shared_images=p.shared_images,
    seed=p.seed,
    model=w.model,
    split=w.split,
)
write_image_sets(snakemake.output.sets, snakemake.output.counts, sets, counts)
log.info(
    "%d classes with images, %d skipped", int((counts["status"] == "ok").sum()), int((counts["status"] != "ok").sum())
)
