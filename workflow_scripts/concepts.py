"""Concepts of one model for one class at every layer (NMF / Semi-NMF on own patches)."""

from rsvc.io import write_h5
from rsvc.jobs import SKIPPED_ATTR, concepts_job
from rsvc.runtime import limit_threads, setup_logging

log = setup_logging(snakemake.log[0])
limit_threads(snakemake.threads)
p = snakemake.params
cfg = p.concepts
w = snakemake.wildcards
attrs = {"model": w.model, "class_id": w.class_id, "k": cfg["k"], "seed": p.seed,
         "decomposition": p.decomposition, "max_iter": cfg["max_iter"], "tol": cfg["tol"]}
data, job_attrs, layer_attrs = concepts_job(
    snakemake.input[0], w.class_id, k=cfg["k"], min_images=cfg["min_images"], max_iter=cfg["max_iter"],
    tol=cfg["tol"], decomposition=p.decomposition, seed=p.seed,
)
if job_attrs[SKIPPED_ATTR]:
    log.warning("skipping %s / %s: %s", w.model, w.class_id, job_attrs["reason"])
for name, a in layer_attrs.items():
    log.info("%s: %s rel_error=%.4f iters=%d", name, a["method"], a["rel_error"], a["n_iter"])
write_h5(snakemake.output[0], data, attrs={**attrs, **job_attrs}, group_attrs=layer_attrs)
