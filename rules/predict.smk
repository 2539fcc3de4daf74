"""GPU: whole-image predictions per (model, split, class shard); CPU: image sets."""


rule predict:
    input:
        data=dataset_input,
        checkpoint=lambda wc: checkpoint_input(wc.model),
    output:
        f"{OUT}/predictions/{{model}}/{{split}}/shard{{shard}}.tsv",
    params:
        spec=lambda wc: model_spec(wc.model),
        pixels=pixel_params(),
        classes=CLASSES,
        shard_classes=lambda wc: shard_classes(wc.shard),
        pool_images_per_class=lambda wc: pool_cap(wc.split),
        extraction=prediction_params(),
    log:
        f"{OUT}/logs/predict/{{model}}/{{split}}/shard{{shard}}.log",
    benchmark:
        f"{OUT}/benchmarks/predict/{{model}}/{{split}}/shard{{shard}}.tsv"
    threads: config["resources"]["gpu_threads"]
    resources:
        gpu_jobs=1,
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
    conda:
        "../envs/gpu.yaml"
    script:
        "../workflow_scripts/predict.py"


rule image_sets:
    input:
        lambda wc: [predictions_path(wc.model, wc.split, s) for s in ALL_SHARDS],
    output:
        sets=f"{OUT}/image_sets/{{model}}/{{split}}.tsv",
        counts=f"{OUT}/image_sets/{{model}}/{{split}}.counts.tsv",
    params:
        classes=ANALYZE,
        max_images=lambda wc: config["concepts"][
            "concept_images" if wc.split == POOL_SPLIT else "heldout_images"
        ],
        min_images=config["concepts"]["min_images"],
        seed=config["seed"],
    log:
        f"{OUT}/logs/image_sets/{{model}}/{{split}}.log",
    benchmark:
        f"{OUT}/benchmarks/image_sets/{{model}}/{{split}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/image_sets.py"


rule export_head:
    input:
        checkpoint=lambda wc: checkpoint_input(wc.model),
    output:
        f"{OUT}/heads/{{model}}.h5",
    params:
        spec=lambda wc: model_spec(wc.model),
    log:
        f"{OUT}/logs/export_head/{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/export_head/{{model}}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=10,
    conda:
        "../envs/gpu.yaml"
    script:
        "../workflow_scripts/export_head.py"
