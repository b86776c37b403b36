"""Rule richardson_lucy (workflow/rules/recover.smk): 3D Richardson-Lucy with the degradation's Gaussian PSF."""

from resrecover.config import config_hash, rl_iterations
from resrecover.methods.device import acquire_device, torch_thread_count
from resrecover.methods.rl import richardson_lucy_file
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):  # noqa: F821
    config = validated_config(snakemake)  # noqa: F821
    with acquire_device() as device:
        richardson_lucy_file(
            snakemake.input[0],  # noqa: F821
            snakemake.output[0],  # noqa: F821
            sigma_um=snakemake.params.sigma_um,  # noqa: F821
            iterations=rl_iterations(config, snakemake.params.sigma_um),  # noqa: F821
            pad_um=config["rl"]["pad_um"],
            device=device,
            workers=torch_thread_count(config, snakemake.threads),  # noqa: F821
            config_hash=config_hash(config),
            seed=config["seed"],
            realization=snakemake.wildcards.realization,  # noqa: F821
        )
