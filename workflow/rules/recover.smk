# Stage 3b: recover every LRES volume of both realizations (docs/design.md#recovery).


# One rule applies every trained network: the study's model (member 0) here; a trust ensemble's extra
# members (1, 2, ...) through `use rule recover_network as recover_ensemble_member` (trust.smk), which only
# moves the output to a temporary file (an output's temp() flag cannot depend on a wildcard).
rule recover_network:
    input:
        unpack(network_model),
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
