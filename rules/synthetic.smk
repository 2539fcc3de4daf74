"""Embedded demo: planted-concept dataset and the two small models (paper A.2)."""


rule make_dataset:
    output:
        directory(f"{SYN['root']}/{{scheme}}"),
    log:
        PATHS["logs/make_dataset"],
    benchmark:
        PATHS["benchmarks/make_dataset"]
    wildcard_constraints:
        scheme="ps|nc|eval",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        **job_resources("make_dataset"),
    params:
        classes=SYN["classes"],
        n_per_split=SYN["n_per_split"],
        image_size=SYN["image_size"],
        seed=SYN["seed"],
    script:
        "../workflow_scripts/make_dataset.py"


rule train_model:
    input:
        data=train_scheme_dir,
    output:
        checkpoint=PATHS["model_checkpoint"],
        metrics=PATHS["model_metrics"],
    log:
        PATHS["logs/train_model"],
    benchmark:
        PATHS["benchmarks/train_model"]
    wildcard_constraints:
        model="|".join(TRAINED) if TRAINED else "NO_MODEL",
    conda:
        "../envs/gpu.yaml"
    threads: config["resources"]["gpu_threads"]
    resources:
        **job_resources("train_model"),
    params:
        spec=lambda wc: model_params(wc.model),
        train=lambda wc: config["models"][wc.model]["train"],
        classes=SYN["classes"],
    script:
        "../workflow_scripts/train_model.py"


rule planted_concept:
    input:
        compare=lambda wc: path("compare_shard", pair=planted_pair(), shard=shard_of(ANALYZE[0])),
        data=dataset_input,
    output:
        report(
            PATHS["planted"],
            caption="../report/planted.rst",
            category="Summary",
        ),
    log:
        PATHS["logs/planted_concept"],
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        **job_resources("planted_concept"),
    params:
        ps=lambda wc: scheme_model("ps"),
        nc=lambda wc: scheme_model("nc"),
        image_size=DATASET["image_size"],
        patch_size=DATASET["patch_size"],
        synthetic_image_size=SYN["image_size"],
        top_n=10,
        compare=lambda wc: path("compare", pair=planted_pair(), class_id=ANALYZE[0]),
    script:
        "../workflow_scripts/planted_concept.py"
