"""Rule trust_validation (workflow/rules/trust.smk): the trust maps against the ground truth's verdicts
(MS-SSIM maps, spurious pores), the spurious-pore classifier on alternate, and each ensemble against its
single model -> trust_validation.csv (+ trust_roc.csv, trust_reliability.csv for fig10).

Each recovery's method, realization and σ come from the rule (params.volumes), beside its files."""

from resrecover.snakemake_support import keyed_inputs, script_logging, validated_config
from resrecover.trust.stages import trust_validation_from_files

with script_logging(snakemake):  # noqa: F821
    config = validated_config(snakemake)  # noqa: F821
    inputs = snakemake.input  # noqa: F821
    trust_validation_from_files(
        keyed_inputs(
            snakemake.params.volumes,  # noqa: F821
            maps=inputs.maps,
            msssim=inputs.msssim,
            pores=inputs.pores,
            lres=inputs.lres,
        ),
        list(inputs.summaries),
        inputs.ground_truth,
        snakemake.output[0],  # noqa: F821
        config,
        training_pores=list(inputs.training),
        trust_models=list(inputs.models),
        roc_output=snakemake.output.roc,  # noqa: F821
        reliability_output=snakemake.output.reliability,  # noqa: F821
    )
