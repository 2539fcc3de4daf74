"""Concept importance: concept integrated gradients at pre_logits for the class output."""

from rsvc.formats import Skipped, write_importance
from rsvc.jobs import importance_job
from rsvc.runtime import limit_threads, setup_logging

log = setup_logging(snakemake.log[0])
limit_threads(snakemake.threads)
p = snakemake.params
w = snakemake.wildcards
attrs = {"model": w.model, "class_id": w.class_id, "class_index": p.class_index, **p.importance}
result = importance_job(snakemake.input.concepts, snakemake.input.head, p.class_index, **p.importance)
if isinstance(result, Skipped):
    log.warning("skipping %s / %s: %s", w.model, w.class_id, result.reason)
    write_importance(snakemake.output[0], result, None, attrs)
else:
    log.info("importance: %s", result[0])
    write_importance(snakemake.output[0], *result, attrs)
