"""Every figure rule (workflow/rules/figures.smk): the rule's name says which figure to draw."""

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes

from resrecover.figures import make_figure  # noqa: E402
from resrecover.snakemake_support import script_logging, validated_config  # noqa: E402

with script_logging(snakemake):  # noqa: F821
    config = validated_config(snakemake)  # noqa: F821
    make_figure(
        snakemake.rule,  # noqa: F821
        dict(snakemake.input.items()),  # noqa: F821
        snakemake.output.png,  # noqa: F821
        snakemake.output.pdf,  # noqa: F821
        config,
    )
