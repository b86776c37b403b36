"""Rule msssim_map: 3D multiscale-SSIM quality map of a volume against the ground truth (docs/design.md#evaluation, Fig. 8).

The map covers the whole volume; its score (attribute ``msssim``) is averaged inside the foam's cylinder.
"""

from resrecover.config import config_hash
from resrecover.evaluate.msssim import write_msssim_map
from resrecover.io import volume_info
from resrecover.masks import foam_mask
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):
    config = validated_config(snakemake)
    wildcards = snakemake.wildcards
    shape = volume_info(snakemake.input.volume)["shape"]
    write_msssim_map(
        snakemake.input.volume,
        snakemake.input.ground_truth,
        snakemake.output[0],
        data_range=config["evaluation"]["data_range"],
        mask=foam_mask(config, shape),
        config_hash=config_hash(config),
        method=wildcards.method,
        realization=wildcards.realization,
        sigma_um=float(wildcards.sigma),
    )
