# RSVC: Representational Similarity via interpretable Visual Concepts.
# Entry point of the workflow; see README.md and DESIGN notes in the rules.
# The library is importable in every job (local, conda or SLURM) through
# workflow_scripts/rsvc, a link to ../rsvc next to the scripts.

from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


# The embedded demo is the default; `--configfile X` replaces it (not merges).
if not workflow.overwrite_configfiles:
    import sys

    import yaml

    try:  # Snakemake's own message does not say where a YAML error is
        yaml.safe_load(open(Path(workflow.basedir) / "config.yaml"))
    except yaml.YAMLError as _exc:
        _mark = getattr(_exc, "problem_mark", None)
        _where = f", line {_mark.line + 1}, column {_mark.column + 1}" if _mark else ""
        print(
            f"config.yaml{_where}: not valid YAML ({getattr(_exc, 'problem', _exc)}); "
            "indent with spaces only, never tabs",
            file=sys.stderr,
        )
        sys.exit(1)

    configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/weights.smk"


if "synthetic" in config:

    include: "rules/synthetic.smk"


include: "rules/predict.smk"
include: "rules/activations.smk"
include: "rules/concepts.smk"
include: "rules/compare.smk"
include: "rules/aggregate.smk"
include: "rules/explorer.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_outputs(),


# Pending scheduler timers would delay the exit (see _cancel_scheduler_timers).
onsuccess:
    _cancel_scheduler_timers()


onerror:
    _cancel_scheduler_timers()
