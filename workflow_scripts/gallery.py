"""Fig. 2 galleries: top real, over-predicted and under-predicted patches of a concept."""

from rsvc import plots
from rsvc.formats import read_concept_table
from rsvc.galleries import concept_gallery, gallery_direction, nothing_to_show, pick_concept
from rsvc.io import save_figure
from rsvc.patches import patch_boxes
from rsvc.runtime import setup_logging
from rsvc.tables import is_unique

log = setup_logging(snakemake.log[0])
p = snakemake.params
models = tuple(p.models)
table = read_concept_table(snakemake.input.table)
compare_of = dict(zip(p.classes, p.compare, strict=True))  # files in the input folders
boxes = patch_boxes(p.pixels["image_size"], p.pixels["patch_size"])

for name, out in zip(p.names, snakemake.output, strict=True):
    row = pick_concept(table, name, models, p.class0, p.similarity_threshold)
    if row is None:
        save_figure(plots.plot_message(nothing_to_show(table, name, models, p.class0, p.fdr)), out)
        log.info("%s: nothing to show", name)
        continue
    src, tgt = gallery_direction(name, models)
    cid, concept = row["class_id"], int(row["concept"])
    groups = concept_gallery(compare_of[cid], src, tgt, concept, snakemake.input.data, boxes, p.pixels["image_size"])
    title = (
        f"{p.class_names.get(cid, cid)} | concept {concept} of {tgt} | {src} (predictor) -> {tgt} (target) | "
        f"CMCS {row['cmcs_pearson']:.2f} [{row['cmcs_pearson_ci_low']:.2f}, {row['cmcs_pearson_ci_high']:.2f}], "
        f"importance {row['importance']:.3g}"
        + (f" | unique (q = {row['q_unique']:.2g} <= FDR {p.fdr:g})" if is_unique([row["unique"]])[0] else "")
    )
    save_figure(plots.plot_gallery(groups, title), out)
    log.info("%s: class %s concept %d (%s -> %s)", name, cid, concept, src, tgt)
