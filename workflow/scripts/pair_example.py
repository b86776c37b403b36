"""Rule multiscale_example (workflow/rules/pairs.smk): a synthetic low/high-resolution pair cut from a phantom."""

from resrecover.ownscan.example import write_multiscale_example
from resrecover.snakemake_support import script_logging

with script_logging(snakemake):  # noqa: F821
    example = snakemake.params.example  # noqa: F821
    write_multiscale_example(
        snakemake.input[0],  # noqa: F821
        snakemake.output.low,  # noqa: F821
        snakemake.output.high,  # noqa: F821
        snakemake.output.truth,  # noqa: F821
        ratio=example["ratio"],
        high_extent_um=example["high_extent_um"],
        noise=example["noise"],
        stage_error_um=example["stage_error_um"],
        seed=int(snakemake.params.seed),  # noqa: F821
    )
