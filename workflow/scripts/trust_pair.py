"""Rule pair_trust (workflow/rules/trust.smk): residual map of an own-scan recovery, the blur estimated
on the registered overlap -> results/pairs/{pair}/trust/{pair_method}.h5."""

from resrecover.snakemake_support import script_logging, validated_config
from resrecover.trust.stages import pair_trust_from_files

with script_logging(snakemake):  # noqa: F821
    config = validated_config(snakemake)  # noqa: F821
    pair = snakemake.params.pair  # noqa: F821
    pair_trust_from_files(
        snakemake.input.recovered,  # noqa: F821
        pair["low"],
        snakemake.input.registration,  # noqa: F821
        snakemake.input.lres,  # noqa: F821
        snakemake.input.hres,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        config,
        roi=pair["roi"],
        pair=pair["name"],
        method=snakemake.wildcards.pair_method,  # noqa: F821
    )
