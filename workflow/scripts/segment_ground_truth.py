"""Rule segment_ground_truth: the ground truth's pores, the reference of every matching (docs/design.md#evaluation)."""

from resrecover.evaluate.stages import segment_ground_truth
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):
    config = validated_config(snakemake)
    segment_ground_truth(
        snakemake.input[0],
        pores_path=snakemake.output.pores,
        labels_path=snakemake.output.labels,
        summary_path=snakemake.output.summary,
        config=config,
        realization=snakemake.wildcards.realization,
    )
