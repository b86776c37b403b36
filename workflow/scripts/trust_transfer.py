"""Rule trust_transfer (workflow/rules/transfer.smk): the foam-fitted spurious-pore classifier and the
foam-trained recoveries on the transfer structure, beside alternate -> results/tables/trust_transfer.csv.

Each volume's method, realization and σ come from the rule (params.volumes), beside its files."""

from resrecover.snakemake_support import keyed_inputs, script_logging, validated_config
from resrecover.trust.transfer import transfer_table_from_files

with script_logging(snakemake):  # noqa: F821
    inputs = snakemake.input  # noqa: F821
    transfer_table_from_files(
        keyed_inputs(snakemake.params.volumes, pores=inputs.pores, summary=inputs.summaries),  # noqa: F821
        snakemake.output[0],  # noqa: F821
        validated_config(snakemake),  # noqa: F821
    )
