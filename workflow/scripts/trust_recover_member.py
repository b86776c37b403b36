"""Rule recover_ensemble_member (workflow/rules/trust.smk): apply ensemble member k to a whole volume."""

from resrecover.config import config_hash
from resrecover.methods.device import torch_runtime, torch_thread_count
from resrecover.methods.infer import recover_volume
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):  # noqa: F821
    config = validated_config(snakemake)  # noqa: F821
    wildcards = snakemake.wildcards  # noqa: F821
    with torch_runtime(torch_thread_count(config, snakemake.threads)):  # noqa: F821
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
