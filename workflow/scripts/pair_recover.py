"""Rule pair_recover (workflow/rules/pairs.smk): recover a pair's whole low-res FOV (or ROI) on the high-res grid."""

from resrecover.config import config_hash
from resrecover.methods.device import torch_runtime, torch_thread_count
from resrecover.ownscan.recovery import recover_large_fov
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):  # noqa: F821
    config = validated_config(snakemake)  # noqa: F821
    pair = snakemake.params.pair  # noqa: F821
    with torch_runtime(torch_thread_count(config, snakemake.threads)):  # noqa: F821
        recover_large_fov(
            snakemake.input.weights,  # noqa: F821
            snakemake.input.settings,  # noqa: F821
            pair["low"],
            snakemake.output[0],  # noqa: F821
            registration=snakemake.input.registration,  # noqa: F821
            roi=pair["roi"],
            inference_config=config["inference"],
            max_memory_gb=config["compute"]["max_memory_gb"],
            pair=pair["name"],
            config_hash=config_hash(config),
            seed=config["seed"],
        )
