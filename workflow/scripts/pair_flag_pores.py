"""Rule pair_flag_pores (workflow/rules/pairs.smk): the recovery's pores labelled on the overlap by the high-res
scan, the spurious-pore classifier fitted and calibrated there, and its verdict on every pore of the field of
view -> results/pairs/{pair}/trust/{pair_method}_pores.csv, _model.json, _labels.h5."""

from resrecover.ownscan.pore_flags import pair_flag_pores_from_files
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):  # noqa: F821
    inputs, outputs = snakemake.input, snakemake.output  # noqa: F821
    pair_flag_pores_from_files(
        inputs.recovered,
        inputs.trust,
        inputs.hres,
        outputs.pores,
        outputs.model,
        outputs.labels,
        validated_config(snakemake),  # noqa: F821
        seed=int(snakemake.params.seed),  # noqa: F821
        pair=snakemake.wildcards.pair,  # noqa: F821
        method=snakemake.wildcards.pair_method,  # noqa: F821
    )
