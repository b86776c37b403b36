# resrecover: deep-learning resolution recovery for 3D X-ray microscopy, re-run from scratch.
# Stages, parameters and outputs: README.md and docs/ (design.md, results.md).
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    realization=alternatives(SIMULATED_REALIZATIONS),
    sigma=alternatives(ALL_SIGMAS),
    method=alternatives([*EVALUATED, *ENSEMBLE_METHODS]),
    network=alternatives(NETWORKS or ["none"]),
    member=MEMBER,
    settings=alternatives(TUNING["settings"]),


include: "workflow/rules/phantom.smk"
include: "workflow/rules/scan.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/tuning.smk"
include: "workflow/rules/recover.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/trust.smk"
include: "workflow/rules/pairs.smk"
include: "workflow/rules/transfer.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
