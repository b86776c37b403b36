"""Rule learning_curves_table: every learning curve in one table (results/tables/learning_curves.csv)."""

from resrecover.evaluate.learning_curve import collect_learning_curves
from resrecover.io import atomic_write_csv
from resrecover.snakemake_support import script_logging

with script_logging(snakemake):  # noqa: F821
    atomic_write_csv(collect_learning_curves(snakemake.input), snakemake.output[0])  # noqa: F821
