"""RSVC for one model pair and one class (all layer pairs, regression, replacement)."""

from rsvc.formats import Skipped, write_compare
from rsvc.jobs import compare_job
from rsvc.runtime import limit_threads, setup_logging

log = setup_logging(snakemake.log[0])
limit_threads(snakemake.threads)
p = snakemake.params
w = snakemake.wildcards
inp = snakemake.input
models = tuple(p.models)
settings = {
    "splits": p.splits,
    "shared_images": p.shared_images,
    "min_images": p.min_images,
    "min_heldout_images": p.min_heldout_images,
    "regression": p.regression,
    "replacement": p.replacement,
    "gallery_n": p.gallery_n,
    "uncertainty": p.uncertainty,
    "importance": p.importance,
    "class_index": p.class_index,
    "seed": p.seed,
}
attrs = {"pair": w.pair, "models": list(models), "class_id": w.class_id, "class_index": p.class_index, **settings}
data, job_attrs = compare_job(
    models,
    w.class_id,
    activations={tuple(key): path for key, path in zip(p.acts_keys, inp.acts)},
    concepts=dict(zip(models, (inp.concepts_a, inp.concepts_b))),
    heads=dict(zip(models, (inp.head_a, inp.head_b))),
    **settings,
)
if isinstance(data, Skipped):
    log.warning("skipping %s / %s: %s", w.pair, w.class_id, data.reason)
else:
    log.info("shared: %d images; held-out: %d images", job_attrs["n_shared_images"], job_attrs["n_heldout_images"])
    if job_attrs["note"]:
        log.warning("%s / %s: %s", w.pair, w.class_id, job_attrs["note"])
write_compare(snakemake.output[0], data, {**attrs, **job_attrs})
