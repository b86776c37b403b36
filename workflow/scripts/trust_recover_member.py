"""Rule recover_ensemble_member (workflow/rules/trust.smk): apply ensemble member k to a whole volume."""

from resrecover.config import config_hash
from resrecover.methods.infer import recover_volume, torch_threads
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):  # noqa: F821
    config = validated_config(snakemake)  # noqa: F821
    wildcards = snakemake.wildcards  # noqa: F821
    threads = config["compute"]["torch_threads"] or snakemake.threads  # noqa: F821
    with torch_threads(threads):
        recover_volume(
            snakemake.input.weights,  # noqa: F821
            snakemake.input.settings,  # noqa: F821
            snakemake.input.volume,  # noqa: F821
            snakemake.output[0],  # noqa: F821
            config["inference"],
            max_memory_gb=config["compute"]["max_memory_gb"],
            config_hash=config_hash(config),
            seed=config["seed"],
            realization=wildcards.realization,
            sigma_um=float(wildcards.sigma),
            ensemble_member=int(wildcards.k),
        )
