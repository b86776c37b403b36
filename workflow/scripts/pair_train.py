"""Rule pair_train (workflow/rules/pairs.smk): train DeepNet or SRCNN-3D on a registered pair's overlap.

Resumes from params.checkpoint_dir when a previous attempt was interrupted.
"""

from pathlib import Path

from resrecover.methods.device import torch_thread_count
from resrecover.ownscan.training import train_pair
from resrecover.snakemake_support import script_logging, validated_config

with script_logging(snakemake):  # noqa: F821
    config = validated_config(snakemake)  # noqa: F821
    outputs, params = snakemake.output, snakemake.params  # noqa: F821
    train_pair(
        snakemake.wildcards.pair_method,  # noqa: F821
        snakemake.input.lres,  # noqa: F821
        snakemake.input.hres,  # noqa: F821
        config,
        out_weights=outputs.weights,
        out_settings=outputs.settings,
        out_log=outputs.train_log,
        checkpoint_dir=Path(params.checkpoint_dir),
        seed=int(params.seed),
        iterations=params.iterations,
        threads=torch_thread_count(config, snakemake.threads),  # noqa: F821
    )
