"""Concept importance of the analysed classes of one shard: concept integrated gradients at pre_logits
for each class's output."""

from pathlib import Path

from rsvc.formats import Skipped, write_importance
from rsvc.importance import importance_job
from rsvc.runtime import limit_threads, setup_logging
from rsvc.settings import ImportanceSettings

log = setup_logging(snakemake.log[0])
limit_threads(snakemake.threads)
p = snakemake.params
w = snakemake.wildcards
settings = ImportanceSettings.from_params(p.importance)
Path(snakemake.output[0]).mkdir(parents=True, exist_ok=True)
for class_id, class_index, concepts, out in zip(
    p.classes, p.class_index, snakemake.input.concepts, p.files, strict=True
):
    attrs = {"model": w.model, "class_id": class_id, "class_index": class_index, **settings.params()}
    result = importance_job(concepts, snakemake.input.head, class_index, settings)
    if isinstance(result, Skipped):
        log.warning("skipping %s / %s: %s", w.model, class_id, result.reason)
        write_importance(out, result, None, attrs)
    else:
        log.info("%s importance: %s", class_id, result[0])
        write_importance(out, *result, attrs)
