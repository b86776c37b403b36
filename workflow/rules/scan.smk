# Stage 2: simulated cone-beam acquisition and FDK reconstruction (SPEC §4.2, CT_CONVENTIONS.md).


rule project_phantom:
    input:
        "results/phantoms/{realization}.h5",
    output:
        projection_output("results/projections/{realization}/clean.h5"),
    log:
        "logs/project_phantom/{realization}.log",
    benchmark:
        "results/benchmarks/project_phantom/{realization}.tsv"
    conda:
        "../../envs/simulation.yaml"
    threads: 2
    resources:
        gpu=SIM_GPU,
        mem_mb=8000,
        runtime=60,
    script:
        "../scripts/project_phantom.py"


rule degrade_scan:
    input:
        "results/projections/{realization}/clean.h5",
    output:
        projection_output("results/projections/{realization}/sigma{sigma}.h5"),
    log:
        "logs/degrade_scan/{realization}/sigma{sigma}.log",
    benchmark:
        "results/benchmarks/degrade_scan/{realization}/sigma{sigma}.tsv"
    conda:
        "../../envs/simulation.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        sigma_um=lambda wc: float(wc.sigma),
    script:
        "../scripts/degrade_scan.py"


rule fdk:
    input:
        "results/projections/{realization}/sigma{sigma}.h5",
    output:
        "results/recon/{realization}/sigma{sigma}.h5",
    log:
        "logs/fdk/{realization}/sigma{sigma}.log",
    benchmark:
        "results/benchmarks/fdk/{realization}/sigma{sigma}.tsv"
    conda:
        "../../envs/simulation.yaml"
    threads: 2
    resources:
        gpu=SIM_GPU,
        mem_mb=8000,
        runtime=60,
    script:
        "../scripts/fdk.py"


rule ground_truth:
    input:
        "results/phantoms/{realization}.h5",
    output:
        "results/recon/{realization}/ground_truth.h5",
    log:
        "logs/ground_truth/{realization}.log",
    benchmark:
        "results/benchmarks/ground_truth/{realization}.tsv"
    conda:
        "../../envs/simulation.yaml"
    threads: 2
    resources:
        gpu=SIM_GPU,
        mem_mb=16000,
        runtime=240,
    script:
        "../scripts/ground_truth.py"
