"""Pretrained weights: fetched once by a local rule (login node, internet), read offline by every job.

    snakemake --cores 1 fetch_weights --configfile experiments/imagenet_rn18_rn50.yaml

Models with `pretrained: true` (and no checkpoint) get `<outdir>/weights/<model>.ok`
as an input of their GPU jobs (common.smk: checkpoint_input), as ancient(): fetching
again never reruns finished work. Compute jobs run with HF_HUB_OFFLINE=1 and, when the
cache lacks the weights, fail at once naming the model and the command above
(rsvc.weights.require_cached_weights, called by rsvc.models.create_model).
"""

import os
import re
import shlex

# The command line that runs fetch_weights for this very run (working dir, Snakefile,
# configs); --forcerun: a marker may exist while a job's cache lacks the file.
_SNAKEFILE = Path(workflow.main_snakefile).resolve()
_FETCH_COMMAND = " ".join(
    [f"cd {shlex.quote(os.getcwd())} &&", "snakemake --cores 1 fetch_weights --forcerun fetch_model_weights"]
    + ([f"--snakefile {shlex.quote(str(_SNAKEFILE))}"] if _SNAKEFILE != (Path.cwd() / "Snakefile").resolve() else [])
    + [f"--configfile {shlex.quote(str(f))}" for f in workflow.overwrite_configfiles]
)

# Inherited by every job: local ones (subprocesses of this process) and SLURM ones
# (sbatch --export=ALL; a job's own snakemake parses this file again and keeps the
# command of the main process). fetch_model_weights turns the network back on for itself.
os.environ.update(HF_HUB_OFFLINE="1")
if workflow.is_main_process or "RSVC_FETCH_WEIGHTS_COMMAND" not in os.environ:
    os.environ.update(RSVC_FETCH_WEIGHTS_COMMAND=_FETCH_COMMAND)


localrules:
    fetch_weights,
    fetch_model_weights,


rule fetch_weights:
    """Target: the weights of every `pretrained: true` model in the local cache."""
    input:
        [path("weights", model=m) for m in PRETRAINED],


rule fetch_model_weights:
    output:
        PATHS["weights"],
    log:
        PATHS["logs/fetch_weights"],
    wildcard_constraints:
        model="|".join(re.escape(m) for m in PRETRAINED) or "(?!)",  # pretrained models only
    conda:
        "../envs/gpu.yaml"
    threads: 1
    params:
        timm_name=lambda wc: config["models"][wc.model]["timm_name"],
    script:
        "../workflow_scripts/fetch_weights.py"
