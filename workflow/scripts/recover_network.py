"""Rule recover_network (workflow/rules/recover.smk): apply a trained DeepNet / SRCNN-3D to a whole volume."""

from resrecover.methods.infer import recover_volume_job
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):  # noqa: F821
    recover_volume_job(snakemake, validated_config(snakemake))  # noqa: F821
