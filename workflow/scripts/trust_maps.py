"""Rule trust_maps (workflow/rules/trust.smk): data-consistency residual, ensemble disagreement and, for a
network, test-time-augmentation variance of one recovered volume -> results/trust/{method}/{realization}/sigma{σ}.h5."""

from resrecover.methods.device import torch_runtime, torch_thread_count
from resrecover.snakemake_support import script_logging, validated_config
from resrecover.trust.stages import trust_maps_from_files

with script_logging(snakemake):  # noqa: F821
    config = validated_config(snakemake)  # noqa: F821
    wildcards = snakemake.wildcards  # noqa: F821
    inputs = snakemake.input  # noqa: F821
    # a network's ensemble file, or an empty input (RL: no ensemble)
    ensemble = inputs.ensemble
    ensemble = [ensemble] if isinstance(ensemble, str) else list(ensemble)
    # a network's study model (its TTA variance), absent for RL or trust.tta_transforms: none
    model_files = (inputs.weights, inputs.settings) if "weights" in inputs.keys() else None
    with torch_runtime(torch_thread_count(config, snakemake.threads)):  # noqa: F821
        trust_maps_from_files(
            inputs.volume,
            inputs.lres,
            snakemake.output[0],  # noqa: F821
            config,
            method=wildcards.method,
            sigma_um=float(wildcards.sigma),
            ensemble_path=ensemble[0] if ensemble else None,
            workers=snakemake.threads,  # noqa: F821
            model_files=model_files,
            realization=wildcards.realization,
        )
