"""Demo check: the square concept of PS and its cross-model similarity from NC."""

from pathlib import Path

import numpy as np
import pandas as pd

from rsvc.formats import is_skipped, read_compare_metrics, read_heldout
from rsvc.io import write_table
from rsvc.patches import patch_boxes
from rsvc.planted import overlap_fraction, square_concept, square_counts_in_top
from rsvc.runtime import setup_logging
from rsvc.specs import direction

log = setup_logging(snakemake.log[0])
p = snakemake.params
ps, nc = p.ps, p.nc
root = Path(snakemake.input.data)
meta = pd.read_csv(root / "metadata.csv", dtype={"class": str})
scale = p.image_size / p.synthetic_image_size
meta["image_id"] = meta["path"].astype(str)
meta = meta.set_index("image_id")
COLUMNS = ["concept", "square_in_top", "top_n", "cmcs_pearson", "smcs_pearson", "is_square_concept"]
boxes = patch_boxes(p.image_size, p.patch_size)

skipped, reason = is_skipped(snakemake.input.compare)
if skipped:  # class 0 had too few images for one of the models: nothing to check
    log.warning("planted concept not checked: %s", reason)
    write_table(snakemake.output[0], pd.DataFrame(columns=COLUMNS))
else:
    U, ids, pimg, pidx = read_heldout(snakemake.input.compare, ps)
    metrics = read_compare_metrics(snakemake.input.compare)["directions"][direction(nc, ps)]
    cmcs, smcs = metrics["cmcs_pearson"], metrics["smcs_pearson"]
    row_meta = meta.reindex(ids[pimg])
    row_meta["has_square"] = row_meta["has_square"].fillna(False).astype(bool)
    square = np.where(
        row_meta["has_square"].to_numpy(bool)[:, None],
        row_meta[["x0", "y0", "x1", "y1"]].to_numpy(float) * scale,
        np.nan,
    )
    contains = overlap_fraction(boxes[pidx], square) >= 0.5
    counts = square_counts_in_top(U, contains, n=p.top_n)
    best = square_concept(U, contains, n=p.top_n)
    table = pd.DataFrame(
        {
            "concept": np.arange(U.shape[1]),
            "square_in_top": counts,
            "top_n": p.top_n,
            "cmcs_pearson": cmcs,
            "smcs_pearson": smcs,
            "is_square_concept": np.arange(U.shape[1]) == best,
        }
    )
    write_table(snakemake.output[0], table)
    others = np.delete(cmcs, best)
    log.info(
        "square concept %d: %d/%d top patches with the square, CMCS %s->%s = %.3f; "
        "median CMCS of the other concepts = %.3f",
        best,
        counts[best],
        p.top_n,
        nc,
        ps,
        cmcs[best],
        float(np.nanmedian(others)),
    )
