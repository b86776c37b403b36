"""Rule collect_tables: per-volume CSVs → one results table (image_metrics, gaussian_fit or fsc; docs/results.md)."""

from resrecover.evaluate.metrics import collect_tables
from resrecover.io import atomic_write_csv
from resrecover.snakemake_support import script_logging

with script_logging(snakemake):
    table = collect_tables(list(snakemake.input.per_volume))
    atomic_write_csv(table, snakemake.output[0])
