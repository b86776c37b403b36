# Stage 1: foam phantoms (docs/phantom.md): seeded void placement and supersampled voxelization.
# (The transfer realization is no foam: rule phantom_transfer, transfer.smk.)


rule phantom:
    output:
        "results/phantoms/{realization}.h5",
    log:
        "logs/phantom/{realization}.log",
    benchmark:
        "results/benchmarks/phantom/{realization}.tsv"
    wildcard_constraints:
        realization=alternatives(FOAM_REALIZATIONS),
    conda:
        "../../envs/simulation.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        seed=lambda wc: realization_seeds(config)[wc.realization],
    script:
        "../scripts/make_phantom.py"
