"""CPU, per pair: the concept explorer, a static site to browse every class and concept."""


rule explorer:
    input:
        table=PATHS["pair_table"],
        compare=lambda wc: shard_folders("compare", pair=wc.pair),
        data=dataset_input,
    output:
        site=directory(PATHS["explorer"]),
        link=report(
            PATHS["explorer_link"],
            caption="../report/explorer.rst",
            category="Explorer",
            subcategory="{pair}",
            labels=report_labels("explorer"),
        ),
    log:
        PATHS["logs/explorer"],
    benchmark:
        PATHS["benchmarks/explorer"]
    conda:
        "../envs/cpu.yaml"
    threads: config["explorer"]["threads"]
    resources:
        **job_resources("explorer"),
    params:
        models=lambda wc: list(pair_models(wc.pair)),
        classes=ANALYZE,
        compare=lambda wc: class_files("compare", pair=wc.pair),
        class_names=CLASS_NAMES,
        pixels={key: DATASET[key] for key in ("image_size", "patch_size")},
        thumb_size=config["explorer"]["thumb_size"],
        similarity_threshold=config["gallery"]["similarity_threshold"],
        uncertainty={k: config["uncertainty"][k] for k in ("fdr", "fdr_method")},
    script:
        "../workflow_scripts/explorer.py"
