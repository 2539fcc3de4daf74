"""Run summary: skipped classes and images, NaN counts, cross-pair table, model matrix."""

from rsvc import plots
from rsvc.io import save_figure, write_table
from rsvc.runtime import setup_logging
from rsvc.summary import concept_table, pair_summary, run_status

log = setup_logging(snakemake.log[0])
inp = snakemake.input
p = snakemake.params
table = concept_table(inp.tables)
status, skipped = run_status(
    table, p.pairs, inp.counts, p.compare, inp.predictions, p.prediction_splits, inp.acts, fdr=p.fdr
)
write_table(snakemake.output.skipped, skipped)
write_table(snakemake.output.pairs, pair_summary(table))
write_table(snakemake.output.summary, status)
save_figure(plots.plot_model_matrix(table, "cmcs_pearson"), snakemake.output.matrix)
log.info("summary: %d status rows, %d skipped images", len(status), len(skipped))
