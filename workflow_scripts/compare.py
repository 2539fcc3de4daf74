"""RSVC for one model pair and the analysed classes of one shard (all layer pairs, regression, replacement)."""

from pathlib import Path

from rsvc.compare import compare_job
from rsvc.formats import Skipped, read_image_sets, write_compare
from rsvc.runtime import limit_threads, setup_logging
from rsvc.settings import CompareSettings

log = setup_logging(snakemake.log[0])
limit_threads(snakemake.threads)
p = snakemake.params
w = snakemake.wildcards
inp = snakemake.input
models = tuple(p.models)
settings = CompareSettings.from_params(p.compare)
activations = {tuple(key): path for key, path in zip(p.acts_keys, inp.acts, strict=True)}
heads = dict(zip(models, (inp.head_a, inp.head_b)))
Path(snakemake.output[0]).mkdir(parents=True, exist_ok=True)
predicted = {  # every pool image each model predicts as the class: the union rule counts these
    m: read_image_sets(sets, list(p.classes), sampled_only=False) for m, sets in zip(models, (inp.sets_a, inp.sets_b))
}
per_class = zip(p.classes, p.class_index, inp.concepts_a, inp.concepts_b, p.files, strict=True)
for class_id, class_index, concepts_a, concepts_b, out in per_class:
    result, job_attrs = compare_job(
        models,
        class_id,
        activations=activations,
        concepts=dict(zip(models, (concepts_a, concepts_b))),
        heads=heads,
        settings=settings,
        class_index=class_index,
        predicted={m: [i for i, _ in predicted[m].get(class_id, [])] for m in models},
    )
    if isinstance(result, Skipped):
        log.warning("skipping %s / %s: %s", w.pair, class_id, result.reason)
    else:
        log.info(
            "%s: shared %d images, held-out %d images",
            class_id,
            job_attrs["n_shared_images"],
            job_attrs["n_heldout_images"],
        )
        if job_attrs["note"]:
            log.warning("%s / %s: %s", w.pair, class_id, job_attrs["note"])
    attrs = {"pair": w.pair, "models": list(models), "class_id": class_id, "class_index": class_index}
    write_compare(out, result, {**attrs, **settings.params(), **job_attrs})
