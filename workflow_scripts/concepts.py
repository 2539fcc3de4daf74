"""Concepts of one model for one class at every layer (NMF / Semi-NMF on own patches)."""

from rsvc.concepts import concepts_job
from rsvc.formats import Skipped, write_concepts
from rsvc.runtime import limit_threads, setup_logging
from rsvc.settings import ConceptSettings

log = setup_logging(snakemake.log[0])
limit_threads(snakemake.threads)
p = snakemake.params
w = snakemake.wildcards
settings = ConceptSettings.from_params(p.concepts)
attrs = {"model": w.model, "class_id": w.class_id, **settings.params()}
result = concepts_job(snakemake.input[0], w.class_id, settings)
if isinstance(result, Skipped):
    log.warning("skipping %s / %s: %s", w.model, w.class_id, result.reason)
else:
    for name, fit in result.fit.items():
        log.info("%s: %s rel_error=%.4f iters=%d", name, fit["method"], fit["rel_error"], fit["n_iter"])
write_concepts(snakemake.output[0], result, attrs)
