"""Rule pair_training_data (workflow/rules/pairs.smk): the overlap of a registered pair on the high-res voxels."""

from resrecover.config import config_hash
from resrecover.ownscan.training import write_training_pair
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):  # noqa: F821
    config = validated_config(snakemake)  # noqa: F821
    pair = snakemake.params.pair  # noqa: F821
    write_training_pair(
        pair["low"],
        pair["high"],
        snakemake.input.registration,  # noqa: F821
        snakemake.output.lres,  # noqa: F821
        snakemake.output.hres,  # noqa: F821
        pair=pair["name"],
        config_hash=config_hash(config),
    )
