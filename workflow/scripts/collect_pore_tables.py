"""Rule collect_pore_tables: pore summary, size histograms, best Gaussian fits, FSC resolutions (docs/results.md)."""

from resrecover.evaluate.stages import collect_pore_tables
from resrecover.snakemake_support import script_logging

with script_logging(snakemake):
    collect_pore_tables(
        summary_paths=snakemake.input.per_volume,
        ground_truth_summary_paths=snakemake.input.ground_truth,
        pore_paths=snakemake.input.pores,
        ground_truth_pore_paths=snakemake.input.ground_truth_pores,
        gaussian_fit_path=snakemake.input.gaussian_fit,
        fsc_path=snakemake.input.fsc,
        pores_summary_out=snakemake.output.pores_summary,
        histogram_out=snakemake.output.histogram,
        gaussian_fit_best_out=snakemake.output.gaussian_fit_best,
        fsc_resolution_out=snakemake.output.fsc_resolution,
        bin_um=snakemake.params.bin_um,
    )
