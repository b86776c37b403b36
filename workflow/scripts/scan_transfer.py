"""Rule `scan_transfer` (workflow/rules/transfer.smk): the transfer phantom's FDK volumes at the trust σ
levels (params.sigmas_um, in the order of output.scans) and its ground truth, as rule `scan` makes them."""

from resrecover.ct.realization import scan_realization
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):  # noqa: F821
    config = validated_config(snakemake)  # noqa: F821
    scan_realization(
        snakemake.input[0],  # noqa: F821
        config,
        "transfer",
        recon_paths=dict(zip(snakemake.params.sigmas_um, snakemake.output.scans, strict=True)),  # noqa: F821
        ground_truth_path=snakemake.output.ground_truth,  # noqa: F821
        projections_dir=snakemake.params.projections_dir,  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
    )
