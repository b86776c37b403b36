# The transfer structure (docs/phantom.md#the-transfer-structure; config `transfer:`): realization `transfer`
# holds ellipsoidal voids instead of the foam's spheres. Not part of `all`: `snakemake trust_transfer` or
# `make transfer`. Nothing is trained, fitted or chosen on it (nor on alternate): the models trained on the
# train foam recover it (recover.smk), its pores are labelled against its ground truth (evaluate.smk) and
# scored by the classifier fitted on train's pores (trust.smk: trust_maps, trust_pores, trust_model,
# flag_pores), and results/tables/trust_transfer.csv sets every volume beside alternate's.


rule phantom_transfer:
    output:
        "results/phantoms/transfer.h5",
    log:
        "logs/phantom/transfer.log",
    benchmark:
        "results/benchmarks/phantom/transfer.tsv"
    conda:
        "../../envs/simulation.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        seed=config["realizations"]["transfer"],
    script:
        "../scripts/make_transfer_phantom.py"


# as rule scan, at the trust σ levels only (no training target: nothing is trained on this structure)
rule scan_transfer:
    input:
        "results/phantoms/transfer.h5",
    output:
        scans=expand("results/recon/transfer/sigma{sigma}.h5", sigma=TRANSFER_SIGMAS),
        ground_truth="results/recon/transfer/ground_truth.h5",
    log:
        "logs/scan/transfer.log",
    benchmark:
        "results/benchmarks/scan/transfer.tsv"
    conda:
        "../../envs/simulation.yaml"
    threads: 2
    resources:
        gpu=SIM_GPU,
        mem_mb=16000,
        runtime=240,
    params:
        sigmas_um=[float(s) for s in TRANSFER_SIGMAS],
        projections_dir=(
            "results/projections/transfer"
            if config["scan"]["keep_projections"]
            else None
        ),
    script:
        "../scripts/scan_transfer.py"


# pores and summaries hold one file per entry of params.volumes, in its order (keyed_paths)
rule trust_transfer:
    input:
        pores=[trust_validation_pores(key) for key in TRANSFER_KEYS],
        summaries=keyed_paths(
            "results/evaluation/{method}/{realization}/sigma{sigma}/pores_summary.csv",
            TRANSFER_KEYS,
        ),
    output:
        "results/tables/trust_transfer.csv",
    log:
        "logs/trust/transfer.log",
    benchmark:
        "results/benchmarks/trust/transfer.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        volumes=TRANSFER_KEYS,
    script:
        "../scripts/trust_transfer.py"
