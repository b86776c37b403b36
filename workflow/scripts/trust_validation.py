"""Rule trust_validation (workflow/rules/trust.smk): the trust maps against the ground truth's verdicts
(MS-SSIM maps, spurious pores) and each ensemble against its single model -> trust_validation.csv."""

from resrecover.snakemake_support import script_logging, validated_config
from resrecover.trust.stages import trust_validation_from_files

with script_logging(snakemake):  # noqa: F821
    config = validated_config(snakemake)  # noqa: F821
    trust_validation_from_files(
        list(snakemake.input.maps),  # noqa: F821
        list(snakemake.input.msssim),  # noqa: F821
        list(snakemake.input.pores),  # noqa: F821
        list(snakemake.input.summaries),  # noqa: F821
        list(snakemake.input.lres),  # noqa: F821
        snakemake.input.ground_truth,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        config,
    )
