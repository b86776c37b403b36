"""Rule pair_example_trust_metrics (workflow/rules/pairs.smk): the example's flag lists and p_spurious against
the phantom, outside the overlap the classifier was fitted on -> results/pairs/example/trust_metrics.csv."""

from resrecover.ownscan.example import example_trust_metrics
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):  # noqa: F821
    methods = snakemake.params.methods  # noqa: F821
    table = example_trust_metrics(
        dict(zip(methods, snakemake.input.pores)),  # noqa: F821
        dict(zip(methods, snakemake.input.labels)),  # noqa: F821
        snakemake.input.phantom,  # noqa: F821
        validated_config(snakemake),  # noqa: F821
        snakemake.output[0],  # noqa: F821
    )
    print(table.to_string(index=False))
