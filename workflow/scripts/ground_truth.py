"""Rule ground_truth: phantom → FDK of a noiseless, unblurred scan at scan.n_projections_ground_truth views."""

from resrecover.config import config_hash
from resrecover.ct import ground_truth_file
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):
    config = validated_config(snakemake)
    realization = snakemake.wildcards.realization
    ground_truth_file(
        snakemake.input[0],
        snakemake.output[0],
        config,
        backend=config["scan"]["backend"],
        threads=snakemake.threads,
        config_hash=config_hash(config),
        realization=realization,
        seed=config["realizations"][realization],
    )
