"""CPU, per (pair, class shard): NNLS on the shared set, layerwise MCS, lasso, replacement.

One job per shard of extraction.shard_size classes, one file per class in its folder:
a 1000-class pair is 20 jobs instead of 1000 (Snakemake's own cost is per job, and a
10-model study would otherwise be 45,000 compare jobs); the job reads the shard's
activation files, which are per shard anyway."""


rule compare:
    input:
        unpack(compare_inputs),
    output:
        directory(PATHS["compare_shard"]),
    log:
        PATHS["logs/compare"],
    benchmark:
        PATHS["benchmarks/compare"]
    conda:
        "../envs/cpu.yaml"
    threads: config["resources"]["cpu_threads"]
    resources:
        **job_resources("compare"),
    params:
        models=lambda wc: list(pair_models(wc.pair)),
        acts_keys=compare_acts_keys,
        classes=analysed_in_shard,
        class_index=analysed_in_shard_indices,
        files=lambda wc: class_files("compare", analysed_in_shard(wc), pair=wc.pair),
        compare=COMPARE_SETTINGS.params(),
    script:
        "../workflow_scripts/compare.py"
