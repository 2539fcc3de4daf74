"""CPU, per (model, class): concepts at every layer, and concept importance."""


rule concepts:
    input:
        lambda wc: activations_path(wc.model, wc.model, POOL_SPLIT, shard_of(wc.class_id)),
    output:
        f"{OUT}/concepts/{{model}}/{{class_id}}.h5",
    params:
        concepts={
            key: config["concepts"][key] for key in ("k", "min_images", "max_iter", "tol")
        },
        decomposition=lambda wc: analysis_spec(wc.model)["decomposition"],
        seed=config["seed"],
    log:
        f"{OUT}/logs/concepts/{{model}}/{{class_id}}.log",
    benchmark:
        f"{OUT}/benchmarks/concepts/{{model}}/{{class_id}}.tsv"
    group:
        "analysis"
    threads: config["resources"]["cpu_threads"]
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 20 * attempt,
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/concepts.py"


rule importance:
    input:
        concepts=lambda wc: concepts_path(wc.model, wc.class_id),
        head=lambda wc: head_path(wc.model),
    output:
        f"{OUT}/importance/{{model}}/{{class_id}}.h5",
    params:
        importance=config["importance"],
        class_index=lambda wc: CLASS_INDEX[wc.class_id],
    log:
        f"{OUT}/logs/importance/{{model}}/{{class_id}}.log",
    benchmark:
        f"{OUT}/benchmarks/importance/{{model}}/{{class_id}}.tsv"
    group:
        "analysis"
    threads: config["resources"]["cpu_threads"]
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/importance.py"
