"""Rule ensemble (workflow/rules/trust.smk): mean of K recovered volumes (dataset `volume`) and their
spread (dataset `disagreement`), the ensemble's recovery results/recovered/{network}_ensemble/...."""

from resrecover.config import config_hash
from resrecover.snakemake_support import script_logging, validated_config
from resrecover.trust.ensemble import ensemble_from_files, ensemble_method

with script_logging(snakemake):  # noqa: F821
    config = validated_config(snakemake)  # noqa: F821
    wildcards = snakemake.wildcards  # noqa: F821
    ensemble_from_files(
        list(snakemake.input.members),  # noqa: F821
        snakemake.output[0],  # noqa: F821
        method=ensemble_method(wildcards.network),
        realization=wildcards.realization,
        sigma_um=float(wildcards.sigma),
        config_hash=config_hash(config),
        seed=config["seed"],
    )
