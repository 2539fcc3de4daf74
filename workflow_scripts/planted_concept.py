"""Demo check: the square concept of PS and its cross-model similarity from NC."""

import numpy as np
import pandas as pd

from rsvc.io import write_table
from rsvc.planted import PLANTED_COLUMNS, planted_table
from rsvc.runtime import setup_logging
from rsvc.synthetic import read_metadata

log = setup_logging(snakemake.log[0])
p = snakemake.params
table = planted_table(
    p.compare,  # class 0's file in the input folder
    read_metadata(snakemake.input.data),
    p.ps,
    p.nc,
    image_size=p.image_size,
    patch_size=p.patch_size,
    synthetic_image_size=p.synthetic_image_size,
    top_n=p.top_n,
)
if table is None:  # class 0 had too few images for one of the models: nothing to check
    log.warning("planted concept not checked: the compare job skipped class 0")
    table = pd.DataFrame(columns=PLANTED_COLUMNS)
else:
    best = int(np.flatnonzero(table["is_square_concept"])[0])
    others = table["cmcs_pearson"].drop(index=best)
    log.info(
        "square concept %d: %d/%d top patches with the square, CMCS %s->%s = %.3f; median CMCS of the others = %.3f",
        best,
        table["square_in_top"][best],
        p.top_n,
        p.nc,
        p.ps,
        table["cmcs_pearson"][best],
        float(np.nanmedian(others)),
    )
write_table(snakemake.output[0], table)
