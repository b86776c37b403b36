"""Rule `train`: fit DeepNet or SRCNN-3D on the training realization, LRES σ -> HRES (docs/design.md#training).

Resumes from params.checkpoint_dir when a previous attempt was interrupted.
"""

from resrecover.methods.training import train_from_files
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):
    config = validated_config(snakemake)
    train_from_files(
        method=snakemake.wildcards.network,
        lres_path=snakemake.input.lres,
        hres_path=snakemake.input.hres,
        config=config,
        out_weights=snakemake.output.weights,
        out_settings=snakemake.output.settings,
        out_log=snakemake.output.train_log,
        checkpoint_dir=snakemake.params.checkpoint_dir,
        seed=int(snakemake.params.seed),
        threads=snakemake.threads,
        sigma_um=float(snakemake.wildcards.sigma),
    )
