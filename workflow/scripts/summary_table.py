"""Rule summary_table: the study in one table (every method and σ on the comparison realization)."""

from resrecover.evaluate.summary import write_summary
from resrecover.snakemake_support import script_logging

with script_logging(snakemake):
    write_summary(
        snakemake.input.image_metrics,
        snakemake.input.pores_summary,
        snakemake.input.gaussian_fit_best,
        snakemake.input.fsc_resolution,
        realization=snakemake.params.realization,
        csv_out=snakemake.output.csv,
        markdown_out=snakemake.output.markdown,
    )
