"""Export the linear classifier of a model so CPU jobs never need the network."""

from rsvc.formats import write_head
from rsvc.models import create_model, head_parameters
from rsvc.runtime import seed_everything, setup_logging
from rsvc.specs import ModelSpec

log = setup_logging(snakemake.log[0])
spec = snakemake.params.spec
seed_everything(0)  # a random-init model must get the same weights as in predict/activations
model = create_model(ModelSpec(**spec), device="cpu")
weight, bias = head_parameters(model)
write_head(snakemake.output[0], weight, bias, attrs={"model": spec})
log.info("head of %s: weight %s", spec["name"], weight.shape)
