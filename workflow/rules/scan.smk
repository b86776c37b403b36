# Stage 2: simulated cone-beam acquisition and FDK reconstruction (docs/ct_geometry.md).


rule scan:
    input:
        "results/phantoms/{realization}.h5",
    output:
        scans=expand("results/recon/{{realization}}/sigma{sigma}.h5", sigma=ALL_SIGMAS),
        ground_truth="results/recon/{realization}/ground_truth.h5",
    log:
        "logs/scan/{realization}.log",
    benchmark:
        "results/benchmarks/scan/{realization}.tsv"
    wildcard_constraints:
        realization=alternatives(FOAM_REALIZATIONS),
    conda:
        "../../envs/simulation.yaml"
    threads: 2
    resources:
        gpu=SIM_GPU,
        mem_mb=16000,
        runtime=240,
    params:
        projections_dir=lambda wc: (
            f"results/projections/{wc.realization}"
            if config["scan"]["keep_projections"]
            else None
        ),
    script:
        "../scripts/scan.py"
