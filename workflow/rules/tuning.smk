# Choosing settings on the validation realization: learning curves of each network (docs/design.md).
# Not part of `all` (each curve is a full training): `snakemake learning_curves` or `make learning-curves`.


rule learning_curve:
    input:
        lres="results/recon/train/sigma{sigma}.h5",
        hres=f"results/recon/train/sigma{TARGET_SIGMA}.h5",
        validation="results/recon/validation/sigma{sigma}.h5",
        validation_ground_truth="results/recon/validation/ground_truth.h5",
        validation_labels="results/labels/ground_truth/validation.h5",
        validation_pores="results/pores/ground_truth/validation.csv",
    output:
        "results/learning_curves/{network}/sigma{sigma}/{settings}.csv",
    log:
        "logs/learning_curve/{network}/sigma{sigma}/{settings}.log",
    benchmark:
        "results/benchmarks/learning_curve/{network}/sigma{sigma}/{settings}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=480,
    params:
        work_dir="results/learning_curves/{network}/sigma{sigma}/{settings}",
    script:
        "../scripts/learning_curve.py"


rule learning_curves_table:
    input:
        expand(
            "results/learning_curves/{network}/sigma{sigma}/{settings}.csv",
            network=TUNING["networks"],
            sigma=TUNING["sigmas"],
            settings=TUNING["settings"],
        ),
        expand(
            "results/learning_curves/rl/sigma{sigma}/chosen.csv",
            sigma=TUNING["sigmas"] if "rl" in METHODS else [],
        ),
    output:
        report(
            "results/tables/learning_curves.csv",
            caption="../report/learning_curves.rst",
            category="Tables",
            labels={"table": "learning_curves"},
        ),
    log:
        "logs/learning_curves_table.log",
    benchmark:
        "results/benchmarks/learning_curves_table.tsv"
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/learning_curves_table.py"


rule fig11_learning_curves:
    input:
        curves="results/tables/learning_curves.csv",
    output:
        **figure_rule_outputs("fig11_learning_curves"),
    log:
        "logs/figures/fig11_learning_curves.log",
    benchmark:
        "results/benchmarks/figures/fig11_learning_curves.tsv"
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figure.py"


rule learning_curves:
    input:
        "results/tables/learning_curves.csv",
        expand("results/figures/fig11_learning_curves.{ext}", ext=["png", "pdf"]),


rule rl_learning_curve:
    input:
        validation="results/recon/validation/sigma{sigma}.h5",
        validation_ground_truth="results/recon/validation/ground_truth.h5",
        validation_labels="results/labels/ground_truth/validation.h5",
        validation_pores="results/pores/ground_truth/validation.csv",
    output:
        "results/learning_curves/rl/sigma{sigma}/chosen.csv",
    log:
        "logs/learning_curve/rl/sigma{sigma}.log",
    benchmark:
        "results/benchmarks/learning_curve/rl/sigma{sigma}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    script:
        "../scripts/rl_learning_curve.py"
