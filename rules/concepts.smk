"""CPU: concepts at every layer, per (model, class); concept importance, per (model, class shard)."""


rule concepts:
    input:
        lambda wc: path(
            "activations",
            model=wc.model,
            owner=wc.model,
            split=POOL_SPLIT,
            shard=shard_of(wc.class_id),
        ),
    output:
        PATHS["concepts"],
    log:
        PATHS["logs/concepts"],
    benchmark:
        PATHS["benchmarks/concepts"]
    conda:
        "../envs/cpu.yaml"
    threads: config["resources"]["cpu_threads"]
    resources:
        **job_resources("concepts"),
    params:
        concepts=lambda wc: ConceptSettings.from_config(config, wc.model).params(),
    script:
        "../workflow_scripts/concepts.py"


rule importance:
    input:
        unpack(importance_inputs),
    output:
        directory(PATHS["importance_shard"]),
    log:
        PATHS["logs/importance"],
    benchmark:
        PATHS["benchmarks/importance"]
    conda:
        "../envs/cpu.yaml"
    threads: config["resources"]["cpu_threads"]
    resources:
        **job_resources("importance"),
    params:
        importance=ImportanceSettings.from_config(config).params(),
        classes=analysed_in_shard,
        class_index=analysed_in_shard_indices,
        files=lambda wc: class_files("importance", analysed_in_shard(wc), model=wc.model),
    script:
        "../workflow_scripts/importance.py"
