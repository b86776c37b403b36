"""Rule `phantom_transfer` (workflow/rules/transfer.smk): the ellipsoidal-void phantom of realization
`transfer` (docs/phantom.md#the-transfer-structure)."""

from resrecover.phantom.ellipsoids import make_ellipsoid_phantom
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):  # noqa: F821
    config = validated_config(snakemake)  # noqa: F821
    make_ellipsoid_phantom(snakemake.output[0], config, seed=int(snakemake.params.seed))  # noqa: F821
