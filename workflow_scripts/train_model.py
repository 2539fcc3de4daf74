"""Train one small demo model from scratch and save a tensors-only checkpoint."""

import dataclasses
from pathlib import Path

from safetensors.torch import save_file

from rsvc.io import atomic_path, write_json
from rsvc.runtime import limit_threads, setup_logging
from rsvc.specs import ModelSpec
from rsvc.training import train_classifier

log = setup_logging(snakemake.log[0])
limit_threads(snakemake.threads)
p = snakemake.params
spec = dataclasses.replace(ModelSpec(**p.spec), checkpoint=None)
t = p.train
data = Path(snakemake.input.data)
state, metrics = train_classifier(
    spec,
    data / "train",
    list(p.classes),
    input_size=int(t["input_size"]),
    epochs=int(t["epochs"]),
    batch_size=int(t["batch_size"]),
    lr=float(t["lr"]),
    seed=int(t["seed"]),
    val_root=data / "val",
    num_threads=snakemake.threads,
)
log.info("metrics: %s", metrics)
with atomic_path(snakemake.output.checkpoint) as tmp:
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"timm_name": spec.timm_name})
write_json(snakemake.output.metrics, {"spec": p.spec, "train": dict(t), **metrics})
