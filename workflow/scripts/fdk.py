"""Rule fdk: degraded projections → FDK reconstruction on the phantom's grid (SPEC §4.2)."""

from resrecover.config import config_hash
from resrecover.ct import fdk_file
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):
    config = validated_config(snakemake)
    scan = config["scan"]
    # realization, sigma_um, seed and n_projections come along from the projection file
    fdk_file(
        snakemake.input[0],
        snakemake.output[0],
        backend=scan["backend"],
        hann_cutoff=scan["hann_cutoff"],
        chunk=scan["projection_chunk"],
        threads=snakemake.threads,
        config_hash=config_hash(config),
        realization=snakemake.wildcards.realization,
    )
