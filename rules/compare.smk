"""CPU, per (pair, class): NNLS on the shared set, layerwise MCS, lasso, replacement."""


rule compare:
    input:
        unpack(compare_inputs),
    output:
        PATHS["compare"],
    log:
        f"{OUT}/logs/compare/{{pair}}/{{class_id}}.log",
    benchmark:
        f"{OUT}/benchmarks/compare/{{pair}}/{{class_id}}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: config["resources"]["cpu_threads"]
    resources:
        mem_mb=6000,
        runtime=30,
    params:
        models=lambda wc: list(pair_models(wc.pair)),
        acts_keys=compare_acts_keys,
        splits={"pool": POOL_SPLIT, "heldout": HELDOUT_SPLIT},
        class_index=lambda wc: CLASS_INDEX[wc.class_id],
        shared_images=config["concepts"]["shared_images"],
        min_images=config["concepts"]["min_images"],
        min_heldout_images=config["concepts"]["min_heldout_images"],
        regression=config["regression"],
        replacement=config["replacement"],
        gallery_n=config["gallery"]["n"],
        uncertainty=config["uncertainty"],
        importance=importance_settings() if config["importance"]["images"] == "shared" else None,
        seed=config["seed"],
    script:
        "../workflow_scripts/compare.py"
