"""Rule recover_network (workflow/rules/recover.smk): apply a trained DeepNet / SRCNN-3D to a whole volume."""

from resrecover.config import config_hash
from resrecover.methods.device import torch_runtime, torch_thread_count
from resrecover.methods.infer import recover_volume
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):  # noqa: F821
    config = validated_config(snakemake)  # noqa: F821
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
            realization=snakemake.wildcards.realization,  # noqa: F821
            sigma_um=float(snakemake.wildcards.sigma),  # noqa: F821
        )
