"""Rule evaluate_volume: image metrics, Gaussian-fit resolution, FSC and pores of one volume (docs/design.md#evaluation)."""

from resrecover.evaluate.stages import evaluate_volume
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):
    config = validated_config(snakemake)
    inputs, wildcards = snakemake.input, snakemake.wildcards
    outputs = ("pores", "labels", "metrics", "gaussian_fit", "fsc", "pores_summary")
    evaluate_volume(
        inputs.volume,
        inputs.ground_truth,
        inputs.ground_truth_labels,
        inputs.ground_truth_pores,
        config=config,
        method=wildcards.method,
        realization=wildcards.realization,
        sigma_um=float(wildcards.sigma),
        denoise=bool(snakemake.params.denoise),
        **{f"{name}_path": getattr(snakemake.output, name) for name in outputs},  # pores_path=output.pores, ...
        workers=snakemake.threads,
    )
