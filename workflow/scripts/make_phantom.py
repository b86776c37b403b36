"""Rule `phantom` (workflow/rules/phantom.smk): one seeded foam realization (docs/phantom.md)."""

from resrecover.phantom import make_phantom
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):
    config = validated_config(snakemake)
    make_phantom(snakemake.output[0], config, seed=int(snakemake.params.seed))
