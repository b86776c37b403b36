"""Rule flag_pores (workflow/rules/trust.smk): p_spurious, conformal p-value and the Benjamini-Hochberg
flag of every pore of one volume -> results/trust/flags/{method}/{realization}/sigma{σ}.csv."""

from resrecover.snakemake_support import script_logging, validated_config
from resrecover.trust.spurious import flag_pores_from_files

with script_logging(snakemake):  # noqa: F821
    inputs = snakemake.input  # noqa: F821
    flag_pores_from_files(
        inputs.pores,
        inputs.model,
        inputs.calibration[0],
        snakemake.output[0],  # noqa: F821
        validated_config(snakemake),  # noqa: F821
    )
