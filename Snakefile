# Entry point in a checkout (`snakemake` here, or --snakefile <checkout>/Snakefile): the
# workflow itself is workflow/Snakefile, the file a module from a git tag names (docs/deploy.md).


include: "workflow/Snakefile"


# An `include` leaves the including file's default target as it was (none): the workflow's `all`.
workflow.default_target = "all"
