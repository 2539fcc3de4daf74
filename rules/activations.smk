"""GPU: activations of model m at all its layers on the patches of owner o's image sets.

Keyed by (model, owner): adding a model C later needs C on every owner's images
and every existing model on C's images; nothing that exists is recomputed.
"""


rule activations:
    input:
        data=dataset_input,
        image_sets=lambda wc: path("image_sets", model=wc.owner, split=wc.split),
        checkpoint=lambda wc: checkpoint_input(wc.model),
    output:
        PATHS["activations"],
    log:
        PATHS["logs/activations"],
    benchmark:
        PATHS["benchmarks/activations"]
    conda:
        "../envs/gpu.yaml"
    threads: config["resources"]["gpu_threads"]
    resources:
        **job_resources("activations"),
    params:
        spec=lambda wc: model_params(wc.model),
        layers=lambda wc: config["models"][wc.model]["layers"],
        numerics=lambda wc: activation_params(wc.model),
        classes=lambda wc: shard_classes(wc.shard, ANALYZE),
    script:
        "../workflow_scripts/activations.py"
