"""Rule learning_curve: train a network on `train` under named settings; score its snapshots on `validation`."""

from resrecover.evaluate.learning_curve import default_snapshots, learning_curve, settings_variant, validation_set
from resrecover.methods.device import acquire_device, torch_thread_count
from resrecover.methods.training import training_settings
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):  # noqa: F821
    base = validated_config(snakemake)  # noqa: F821
    wildcards = snakemake.wildcards  # noqa: F821
    config = settings_variant(base, wildcards.settings)
    sigma_um = float(wildcards.sigma)
    iterations = int(training_settings(config, wildcards.network, sigma_um)["iterations"])
    with acquire_device() as device:
        learning_curve(
            wildcards.network,
            snakemake.input.lres,  # noqa: F821
            snakemake.input.hres,  # noqa: F821
            validation_set(snakemake.input),  # noqa: F821
            config,
            sigma_um,
            work_dir=snakemake.params.work_dir,  # noqa: F821
            settings_label=wildcards.settings,
            snapshots=default_snapshots(iterations, config["tuning"]["snapshots"]),
            threads=torch_thread_count(config, snakemake.threads),  # noqa: F821
            device=device,
            out_csv=snakemake.output[0],  # noqa: F821
        )
