"""Rule trust_pores (workflow/rules/trust.smk): every pore of a volume with its mean residual,
disagreement and trust score, and the spurious-pore classifier's features
-> results/trust/pores/{method}/{realization}/sigma{σ}.csv."""

from resrecover.snakemake_support import script_logging, validated_config
from resrecover.trust.stages import pore_trust_from_files

with script_logging(snakemake):  # noqa: F821
    config = validated_config(snakemake)  # noqa: F821
    pore_trust_from_files(
        snakemake.input.maps,  # noqa: F821
        snakemake.input.labels,  # noqa: F821
        snakemake.input.pores,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        config,
        recovered_path=snakemake.input.volume,  # noqa: F821
    )
