"""Activations of one model at all its layers on the patches of an owner's image sets."""

from rsvc.activations import extract_to_h5
from rsvc.formats import read_image_sets
from rsvc.layers import resolve_layers
from rsvc.models import create_model
from rsvc.runtime import limit_threads, seed_everything, setup_logging
from rsvc.settings import ExtractionSettings
from rsvc.specs import PRE_LOGITS, ModelSpec

log = setup_logging(snakemake.log[0])
limit_threads(snakemake.threads)
seed_everything(0)
p = snakemake.params
w = snakemake.wildcards
settings = ExtractionSettings.from_params(p.numerics, snakemake.config["extraction"])
model = create_model(ModelSpec(**p.spec), device="cpu")
layers = resolve_layers(model, p.layers, model_name=w.model)
layers += [PRE_LOGITS] if PRE_LOGITS not in layers else []  # regression/importance layer, always last
items = read_image_sets(snakemake.input.image_sets, classes=list(p.classes))
log.info("%s on %s's %s images: %d classes, %d layers", w.model, w.owner, w.split, len(items), len(layers))
extract_to_h5(
    model,
    layers,
    items,
    snakemake.output[0],
    settings,
    attrs={"model": p.spec, "owner": w.owner, "split": w.split, "shard": w.shard},
)
