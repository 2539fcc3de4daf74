"""The concept explorer of one pair: a static site (index, a page per class, patch sprites)."""

from rsvc.explorer import build_explorer, launcher_html
from rsvc.formats import read_concept_table
from rsvc.io import atomic_path
from rsvc.patches import patch_boxes
from rsvc.runtime import setup_logging

log = setup_logging(snakemake.log[0])
p = snakemake.params
index = build_explorer(
    snakemake.output.site,
    read_concept_table(snakemake.input.table),
    dict(zip(p.classes, p.compare, strict=True)),  # the class files in the input folders
    p.class_names,
    tuple(p.models),
    snakemake.input.data,
    patch_boxes(p.pixels["image_size"], p.pixels["patch_size"]),
    p.pixels["image_size"],
    thumb_size=p.thumb_size,
    similarity_threshold=p.similarity_threshold,
    fdr=p.uncertainty["fdr"],
    fdr_method=p.uncertainty["fdr_method"],
    threads=snakemake.threads,
)
with atomic_path(snakemake.output.link) as tmp:
    tmp.write_text(launcher_html(snakemake.output.site, index["pair"]))
n_skipped = sum(c["status"] == "skipped" for c in index["classes"])
log.info("explorer of %s: %d classes, %d skipped", index["pair"], len(index["classes"]) - n_skipped, n_skipped)
