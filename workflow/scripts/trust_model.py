"""Rule trust_model (workflow/rules/trust.smk): fit one method's spurious-pore classifier on the labelled
pores of the fitting realization -> results/trust/models/{method}.json."""

from resrecover.snakemake_support import script_logging, validated_config
from resrecover.trust.spurious import fit_trust_model_from_files

with script_logging(snakemake):  # noqa: F821
    fit_trust_model_from_files(
        list(snakemake.input),  # noqa: F821
        snakemake.output[0],  # noqa: F821
        validated_config(snakemake),  # noqa: F821
    )
