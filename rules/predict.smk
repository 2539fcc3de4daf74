"""GPU: whole-image predictions per (model, split, class shard); CPU: image sets."""


rule predict:
    input:
        data=dataset_input,
        checkpoint=lambda wc: checkpoint_input(wc.model),
    output:
        PATHS["predictions"],
    log:
        PATHS["logs/predict"],
    benchmark:
        PATHS["benchmarks/predict"]
    conda:
        "../envs/gpu.yaml"
    threads: config["resources"]["gpu_threads"]
    resources:
        **job_resources("predict"),
    params:
        spec=lambda wc: model_params(wc.model),
        pixels=lambda wc: prediction_params(wc.model),
        classes=CLASSES,
        shard_classes=lambda wc: shard_classes(wc.shard),
        pool_images_per_class=lambda wc: pool_cap(wc.split),
    script:
        "../workflow_scripts/predict.py"


rule image_sets:
    input:
        lambda wc: [path("predictions", model=wc.model, split=wc.split, shard=s) for s in ALL_SHARDS],
    output:
        sets=PATHS["image_sets"],
        counts=PATHS["image_set_counts"],
    log:
        PATHS["logs/image_sets"],
    benchmark:
        PATHS["benchmarks/image_sets"]
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        **job_resources("image_sets"),
    params:
        classes=ANALYZE,
        sets=lambda wc: ImageSetSettings.from_config(config, wc.split).params(),
    script:
        "../workflow_scripts/image_sets.py"


rule export_head:
    input:
        checkpoint=lambda wc: checkpoint_input(wc.model),
    output:
        PATHS["head"],
    log:
        PATHS["logs/export_head"],
    benchmark:
        PATHS["benchmarks/export_head"]
    conda:
        "../envs/gpu.yaml"
    threads: 1
    resources:
        **job_resources("export_head"),
    params:
        spec=lambda wc: model_params(wc.model),
    script:
        "../workflow_scripts/export_head.py"
