# Stage 3a: train DeepNet and SRCNN-3D on the training realization, LRES input -> HRES target (docs/design.md#training).
# Member 0 is the study's model; members 1, 2, ... are a trust ensemble's extra networks (trust.smk), trained
# alike from their own seed (resrecover.config.training_seed, computed in the package from the wildcards).


rule train:
    input:
        lres="results/recon/train/sigma{sigma}.h5",
        hres=f"results/recon/train/sigma{TARGET_SIGMA}.h5",
    output:
        weights=f"{MODEL_DIR}/model.safetensors",
        settings=f"{MODEL_DIR}/model.json",
        train_log=f"{MODEL_DIR}/train_log.csv",
    log:
        "logs/train/{network}/sigma{sigma}/member{member}.log",
    benchmark:
        "results/benchmarks/train/{network}/sigma{sigma}/member{member}.tsv"
    retries: 1
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    params:
        checkpoint_dir=f"{MODEL_DIR}/checkpoints",
    script:
        "../scripts/train.py"
