"""CPU, per (model, class): concepts at every layer, and concept importance."""


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
        f"{OUT}/logs/concepts/{{model}}/{{class_id}}.log",
    benchmark:
        f"{OUT}/benchmarks/concepts/{{model}}/{{class_id}}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: config["resources"]["cpu_threads"]
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        concepts=lambda wc: concepts_params(wc.model),
        seed=config["seed"],
    script:
        "../workflow_scripts/concepts.py"


rule importance:
    input:
        unpack(importance_inputs),
    output:
        PATHS["importance"],
    log:
        f"{OUT}/logs/importance/{{model}}/{{class_id}}.log",
    benchmark:
        f"{OUT}/benchmarks/importance/{{model}}/{{class_id}}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: config["resources"]["cpu_threads"]
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        importance=importance_settings(),
        class_index=lambda wc: CLASS_INDEX[wc.class_id],
    script:
        "../workflow_scripts/importance.py"
