"""Rule pair_register (workflow/rules/pairs.smk): place the high-res interior scan in the low-res large-FOV scan."""

from resrecover.ownscan.registration import register_configured_pair
from resrecover.snakemake_support import script_logging

with script_logging(snakemake):  # noqa: F821
    register_configured_pair(
        snakemake.params.pair,  # noqa: F821
        snakemake.input.low,  # noqa: F821
        snakemake.input.high,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        offset_file=snakemake.input.get("offset"),  # noqa: F821
    )
