"""Rule rl_learning_curve: Richardson-Lucy on `validation` at several iteration counts, each scored."""

from resrecover.evaluate.learning_curve import rl_learning_curve, validation_set
from resrecover.methods.device import acquire_device, torch_thread_count
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):  # noqa: F821
    config = validated_config(snakemake)  # noqa: F821
    with acquire_device() as device:
        rl_learning_curve(
            validation_set(snakemake.input),  # noqa: F821
            config,
            float(snakemake.wildcards.sigma),  # noqa: F821
            workers=torch_thread_count(config, snakemake.threads),  # noqa: F821
            device=device,
            out_csv=snakemake.output[0],  # noqa: F821
        )
