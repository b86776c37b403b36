"""Rule train_ensemble_member (workflow/rules/trust.smk): train ensemble member k of a network at σ.

The same training as rule `train` (same settings, same iterations), from the member's own seed
(resrecover.config.training_seed of member k: other initial weights, other random tiles, for SRCNN another split).
"""

from resrecover.methods.training import train_from_files
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):  # noqa: F821
    config = validated_config(snakemake)  # noqa: F821
    train_from_files(
        method=snakemake.wildcards.network,  # noqa: F821
        lres_path=snakemake.input.lres,  # noqa: F821
        hres_path=snakemake.input.hres,  # noqa: F821
        config=config,
        out_weights=snakemake.output.weights,  # noqa: F821
        out_settings=snakemake.output.settings,  # noqa: F821
        out_log=snakemake.output.train_log,  # noqa: F821
        checkpoint_dir=snakemake.params.checkpoint_dir,  # noqa: F821
        seed=int(snakemake.params.seed),  # noqa: F821
        threads=snakemake.threads,
        sigma_um=float(snakemake.wildcards.sigma),  # noqa: F821
    )
