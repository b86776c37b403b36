"""Rule pair_registration_error (workflow/rules/pairs.smk): the example's registration against its known offset."""

from resrecover.ownscan.example import registration_error_table
from resrecover.snakemake_support import script_logging

with script_logging(snakemake):  # noqa: F821
    table = registration_error_table(
        snakemake.input.registration,  # noqa: F821
        snakemake.input.truth,  # noqa: F821
        snakemake.output[0],  # noqa: F821
    )
    print(table.to_string(index=False))
