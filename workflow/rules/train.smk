# Stage 3a: train DeepNet and SRCNN-3D on the training realization, LRES input -> HRES target (docs/design.md#training).


rule train:
    input:
        lres="results/recon/train/sigma{sigma}.h5",
        hres=f"results/recon/train/sigma{TARGET_SIGMA}.h5",
    output:
        weights="results/models/{network}/sigma{sigma}/model.safetensors",
        settings="results/models/{network}/sigma{sigma}/model.json",
        train_log="results/models/{network}/sigma{sigma}/train_log.csv",
    log:
        "logs/train/{network}/sigma{sigma}.log",
    benchmark:
        "results/benchmarks/train/{network}/sigma{sigma}.tsv"
    retries: 1
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    params:
        checkpoint_dir="results/models/{network}/sigma{sigma}/checkpoints",
        seed=lambda wc: training_seed(config["seed"], wc.network, float(wc.sigma)),
    script:
        "../scripts/train.py"
