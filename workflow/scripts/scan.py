"""Rule scan: one phantom → its FDK volume at every σ (target and LRES levels) and its ground truth."""

from resrecover.config import all_sigmas
from resrecover.ct.realization import scan_realization
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):  # noqa: F821
    config = validated_config(snakemake)  # noqa: F821
    scan_realization(
        snakemake.input[0],  # noqa: F821
        config,
        snakemake.wildcards.realization,  # noqa: F821
        recon_paths=dict(zip(all_sigmas(config), snakemake.output.scans, strict=True)),  # noqa: F821
        ground_truth_path=snakemake.output.ground_truth,  # noqa: F821
        projections_dir=snakemake.params.projections_dir,  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
    )
