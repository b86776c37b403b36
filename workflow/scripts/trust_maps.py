"""Rule trust_maps (workflow/rules/trust.smk): data-consistency residual and ensemble disagreement of
one recovered volume -> results/trust/{method}/{realization}/sigma{σ}.h5."""

from resrecover.snakemake_support import script_logging, validated_config
from resrecover.trust.stages import trust_maps_from_files

with script_logging(snakemake):  # noqa: F821
    config = validated_config(snakemake)  # noqa: F821
    wildcards = snakemake.wildcards  # noqa: F821
    # a network's ensemble file, or an empty input (RL: no ensemble)
    ensemble = snakemake.input.ensemble  # noqa: F821
    ensemble = [ensemble] if isinstance(ensemble, str) else list(ensemble)
    trust_maps_from_files(
        snakemake.input.volume,  # noqa: F821
        snakemake.input.lres,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        config,
        method=wildcards.method,
        sigma_um=float(wildcards.sigma),
        ensemble_path=ensemble[0] if ensemble else None,
        workers=snakemake.threads,  # noqa: F821
        realization=wildcards.realization,
    )
