"""Rule `train` (workflow/rules/train.smk): fit member {member} of DeepNet or SRCNN-3D at σ on the training
realization, LRES σ -> HRES (docs/design.md#training). The seed comes from the package
(resrecover.config.training_seed of the network, σ and member); resumes from params.checkpoint_dir
when a previous attempt was interrupted.
"""

from resrecover.methods.training import train_job
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):  # noqa: F821
    train_job(snakemake, validated_config(snakemake))  # noqa: F821
