"""Rule project_phantom: phantom → clean line integrals at scan.n_projections views (SPEC §4.2)."""

from resrecover.config import config_hash
from resrecover.ct import project_phantom_file
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):
    config = validated_config(snakemake)
    realization = snakemake.wildcards.realization
    project_phantom_file(
        snakemake.input[0],
        snakemake.output[0],
        config,
        backend=config["scan"]["backend"],
        threads=snakemake.threads,
        config_hash=config_hash(config),
        realization=realization,
        phantom_seed=config["realizations"][realization],
    )
