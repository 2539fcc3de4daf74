"""CPU, per pair: tables, layerwise matrices, figures and galleries; then the run summary."""


rule aggregate_pair:
    input:
        unpack(pair_class_inputs),
    output:
        table=report(
            PATHS["pair_table"],
            caption="../report/concept_table.rst",
            category="Tables",
            subcategory="{pair}",
            labels=report_labels("concepts"),
        ),
        layerwise=PATHS["pair_layerwise"],
        figures=[
            report(
                path("pair_figure", pair="{pair}", figure=name),
                caption=f"../report/{caption}",
                category="Figures",
                subcategory="{pair}",
                labels=report_labels(name),
            )
            for name, (caption, _, _) in PAIR_FIGURES.items()
        ],
    log:
        PATHS["logs/aggregate_pair"],
    benchmark:
        PATHS["benchmarks/aggregate_pair"]
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        **job_resources("aggregate_pair"),
    params:
        models=lambda wc: list(pair_models(wc.pair)),
        classes=ANALYZE,
        files=pair_class_files,
        class_names=CLASS_NAMES,
        similarity_threshold=config["gallery"]["similarity_threshold"],
        uncertainty=config["uncertainty"],
        seed=config["seed"],
    script:
        "../workflow_scripts/aggregate_pair.py"


rule gallery:
    input:
        table=PATHS["pair_table"],
        compare=lambda wc: shard_folders("compare", pair=wc.pair),
        data=dataset_input,
    output:
        [
            report(
                path("gallery", pair="{pair}", gallery=name),
                caption="../report/gallery.rst",
                category="Galleries",
                subcategory="{pair}",
                labels=report_labels(name),
            )
            for name in GALLERIES
        ],
    log:
        PATHS["logs/gallery"],
    benchmark:
        PATHS["benchmarks/gallery"]
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        **job_resources("gallery"),
    params:
        models=lambda wc: list(pair_models(wc.pair)),
        names=GALLERIES,
        class0=ANALYZE[0],
        classes=ANALYZE,
        compare=lambda wc: class_files("compare", pair=wc.pair),
        class_names=CLASS_NAMES,
        pixels={key: DATASET[key] for key in ("image_size", "patch_size")},
        similarity_threshold=config["gallery"]["similarity_threshold"],
        fdr=config["uncertainty"]["fdr"],
    script:
        "../workflow_scripts/gallery.py"


rule summary:
    input:
        tables=[path("pair_table", pair=p) for p in PAIR_NAMES],
        counts=[path("image_set_counts", model=m, split=s) for m in MODELS for s in SPLITS],
        compare=[f for p in PAIR_NAMES for f in shard_folders("compare", pair=p)],
        acts=sorted(
            {
                path("activations", model=m, owner=o, split=s, shard=sh)
                for pair in PAIRS
                for m in pair
                for o in pair
                for s in SPLITS
                for sh in ANALYZE_SHARDS
            }
        ),
        predictions=[
            path("predictions", model=m, split=s, shard=sh) for m in MODELS for s in SPLITS for sh in ALL_SHARDS
        ],
    output:
        summary=report(
            PATHS["run_summary"],
            caption="../report/run_summary.rst",
            category="Summary",
        ),
        pairs=report(
            PATHS["pairs_summary"],
            caption="../report/pairs_summary.rst",
            category="Summary",
        ),
        skipped=PATHS["skipped_images"],
        matrix=report(
            PATHS["model_matrix"],
            caption="../report/model_matrix.rst",
            category="Summary",
        ),
    log:
        PATHS["logs/summary"],
    benchmark:
        PATHS["benchmarks/summary"]
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        **job_resources("summary"),
    params:
        pairs=PAIR_NAMES,
        compare=[f for p in PAIR_NAMES for f in class_files("compare", pair=p)],
        prediction_splits=[s for m in MODELS for s in SPLITS for sh in ALL_SHARDS],
        fdr=config["uncertainty"]["fdr"],
    script:
        "../workflow_scripts/summary.py"
