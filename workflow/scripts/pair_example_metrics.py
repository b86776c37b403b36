"""Rule pair_example_metrics (workflow/rules/pairs.smk): the example's recoveries against the phantom,
inside the training region and outside it, with the plain upsampled low-res scan as the baseline."""

from resrecover.ownscan.example import example_recovery_metrics
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):  # noqa: F821
    config = validated_config(snakemake)  # noqa: F821
    table = example_recovery_metrics(
        dict(zip(snakemake.params.methods, snakemake.input.recovered)),  # noqa: F821
        snakemake.input.phantom,  # noqa: F821
        snakemake.input.low,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        data_range=config["evaluation"]["data_range"],
        window_px=config["evaluation"]["ssim_window_px"],
    )
    print(table.to_string(index=False))
