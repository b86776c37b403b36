"""Rule evaluate_volume: image metrics, Gaussian-fit resolution, FSC and pores of one volume (docs/design.md#evaluation)."""

from resrecover.evaluate.stages import evaluate_volume
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):
    config = validated_config(snakemake)
    evaluate_volume(
        snakemake.input.volume,
        snakemake.input.ground_truth,
        snakemake.input.ground_truth_labels,
        snakemake.input.ground_truth_pores,
        config=config,
        method=snakemake.wildcards.method,
        realization=snakemake.wildcards.realization,
        sigma_um=float(snakemake.wildcards.sigma),
        denoise=bool(snakemake.params.denoise),
        pores_path=snakemake.output.pores,
        labels_path=snakemake.output.labels,
        metrics_path=snakemake.output.metrics,
        gaussian_fit_path=snakemake.output.gaussian_fit,
        fsc_path=snakemake.output.fsc,
        pores_summary_path=snakemake.output.pores_summary,
        workers=snakemake.threads,
    )
