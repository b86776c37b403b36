# Stage 3b: recover every LRES volume of both realizations (docs/design.md#recovery).


rule recover_network:
    input:
        weights="results/models/{network}/sigma{sigma}/model.safetensors",
        settings="results/models/{network}/sigma{sigma}/model.json",
        volume="results/recon/{realization}/sigma{sigma}.h5",
    output:
        "results/recovered/{network}/{realization}/sigma{sigma}.h5",
    log:
        "logs/recover/{network}/{realization}/sigma{sigma}.log",
    benchmark:
        "results/benchmarks/recover/{network}/{realization}/sigma{sigma}.tsv"
    retries: 1
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    script:
        "../scripts/recover_network.py"


rule richardson_lucy:
    input:
        "results/recon/{realization}/sigma{sigma}.h5",
    output:
        "results/recovered/rl/{realization}/sigma{sigma}.h5",
    log:
        "logs/recover/rl/{realization}/sigma{sigma}.log",
    benchmark:
        "results/benchmarks/recover/rl/{realization}/sigma{sigma}.tsv"
    retries: 1
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=60,
    params:
        sigma_um=lambda wc: float(wc.sigma),
    script:
        "../scripts/richardson_lucy.py"
