"""Rule recover_ensemble_member (workflow/rules/trust.smk): apply ensemble member k to a whole volume."""

from resrecover.methods.infer import recover_volume_job
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):  # noqa: F821
    recover_volume_job(snakemake, validated_config(snakemake), ensemble_member=int(snakemake.wildcards.k))  # noqa: F821
