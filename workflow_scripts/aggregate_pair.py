"""Per pair: the tidy concept table, layerwise MMCS matrices and the paper's figures."""

import pandas as pd

from rsvc import plots
from rsvc.formats import read_mmcs_null, write_layerwise
from rsvc.io import save_figure, write_table
from rsvc.paths import PAIR_FIGURES
from rsvc.runtime import setup_logging
from rsvc.tables import (
    CONCEPT_COLUMNS,
    class_bootstrap_interval,
    concept_rows,
    layerwise_matrices,
    layerwise_summary,
    nan_mean,
    unique_calls,
)

log = setup_logging(snakemake.log[0])
p = snakemake.params
pair = snakemake.wildcards.pair
a, b = p.models
files = p.files  # the per-class files inside the input folders, in class order

unc = p.uncertainty
frames = [
    concept_rows(cf, {a: ia, b: ib}, pair, p.class_names.get(cid, cid))
    for cid, cf, ia, ib in zip(p.classes, files["compare"], files["importance_a"], files["importance_b"])
]
frames = [f for f in frames if len(f)]
table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*CONCEPT_COLUMNS, "has_floor"])
# every concept of the pair is gathered here: one family for the false-discovery control of `unique`
table = unique_calls(table, p.similarity_threshold, unc["fdr"], unc["fdr_method"])
write_table(snakemake.output.table, table)
n_classes = table["class_id"].nunique()
log.info(
    "%d concept rows from %d of %d classes; %d unique at FDR %g (%s)",
    len(table),
    n_classes,
    len(p.classes),
    int(table["unique"].fillna(False).sum()),
    unc["fdr"],
    unc["fdr_method"],
)

mean, count, intervals, chance, calibrated = {}, {}, {}, {}, {}
for metric in ("pearson", "spearman"):
    matrices, *layers = layerwise_matrices(files["compare"], metric)  # each compare file read once per metric
    mean[metric], count[metric], layers_a, layers_b = layerwise_summary(matrices, *layers)
    if unc["bootstrap"] and matrices:
        intervals[metric] = class_bootstrap_interval(matrices, unc["bootstrap"], p.seed, unc["level"])
    nulls = [n for n in (read_mmcs_null(f, metric) for f in files["compare"]) if n is not None]
    if nulls and len(nulls) == len(matrices):  # the chance level of every analysed class
        chance[metric] = nan_mean(nulls)[0]
        calibrated[metric] = mean[metric] - chance[metric]
write_layerwise(
    snakemake.output.layerwise,
    (a, b),
    mean,
    count,
    {a: layers_a, b: layers_b},
    attrs={"pair": pair, "classes": list(p.classes), "n_classes_analysed": n_classes, "uncertainty": unc},
    intervals=intervals,
    null=chance,
)

figures = plots.pair_figures(
    table,
    mean,
    layers_a,
    layers_b,
    a,
    b,
    n_classes,
    len(p.classes),
    p.similarity_threshold,
    fdr=unc["fdr"],
    calibrated=calibrated,
)
for name, path in zip(PAIR_FIGURES, snakemake.output.figures, strict=True):
    save_figure(figures[name](), path)
