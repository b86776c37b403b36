# Stage 4: evaluation against the ground truth (docs/design.md#evaluation): image metrics, Gaussian-fit resolution,
# FSC, one segmentation recipe for every volume, pore tables with one-to-one matching, MS-SSIM maps.


rule segment_ground_truth:
    input:
        "results/recon/{realization}/ground_truth.h5",
    output:
        pores="results/pores/ground_truth/{realization}.csv",
        labels="results/labels/ground_truth/{realization}.h5",
        summary="results/evaluation/ground_truth/{realization}/pores_summary.csv",
    log:
        "logs/segment_ground_truth/{realization}.log",
    benchmark:
        "results/benchmarks/segment_ground_truth/{realization}.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    script:
        "../scripts/segment_ground_truth.py"


rule evaluate_volume:
    input:
        volume=evaluated_volume,
        ground_truth="results/recon/{realization}/ground_truth.h5",
        ground_truth_labels="results/labels/ground_truth/{realization}.h5",
        ground_truth_pores="results/pores/ground_truth/{realization}.csv",
    output:
        pores="results/pores/{method}/{realization}/sigma{sigma}.csv",
        labels="results/labels/{method}/{realization}/sigma{sigma}.h5",
        metrics="results/evaluation/{method}/{realization}/sigma{sigma}/image_metrics.csv",
        gaussian_fit="results/evaluation/{method}/{realization}/sigma{sigma}/gaussian_fit.csv",
        fsc="results/evaluation/{method}/{realization}/sigma{sigma}/fsc.csv",
        pores_summary="results/evaluation/{method}/{realization}/sigma{sigma}/pores_summary.csv",
    log:
        "logs/evaluate/{method}/{realization}/sigma{sigma}.log",
    benchmark:
        "results/benchmarks/evaluate/{method}/{realization}/sigma{sigma}.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        denoise=lambda wc: denoise_before_segmentation(wc.method, config),
    script:
        "../scripts/evaluate_volume.py"


rule msssim_map:
    input:
        volume=evaluated_volume,
        ground_truth="results/recon/{realization}/ground_truth.h5",
    output:
        "results/maps/msssim/{method}/{realization}/sigma{sigma}.h5",
    log:
        "logs/msssim_map/{method}/{realization}/sigma{sigma}.log",
    benchmark:
        "results/benchmarks/msssim_map/{method}/{realization}/sigma{sigma}.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    script:
        "../scripts/msssim_map.py"


rule collect_tables:
    input:
        per_volume=expand(
            "results/evaluation/{method}/{realization}/sigma{sigma}/{{table}}.csv",
            method=EVALUATED,
            realization=REALIZATIONS,
            sigma=LRES_SIGMAS,
        ),
    output:
        "results/tables/{table}.csv",
    log:
        "logs/collect_tables/{table}.log",
    benchmark:
        "results/benchmarks/tables/{table}.tsv"
    wildcard_constraints:
        table="image_metrics|gaussian_fit|fsc",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/collect_tables.py"


rule collect_pore_tables:
    input:
        per_volume=expand(
            "results/evaluation/{method}/{realization}/sigma{sigma}/pores_summary.csv",
            method=EVALUATED,
            realization=REALIZATIONS,
            sigma=LRES_SIGMAS,
        ),
        ground_truth=expand(
            "results/evaluation/ground_truth/{realization}/pores_summary.csv",
            realization=REALIZATIONS,
        ),
        pores=expand(
            "results/pores/{method}/{realization}/sigma{sigma}.csv",
            method=EVALUATED,
            realization=REALIZATIONS,
            sigma=LRES_SIGMAS,
        ),
        ground_truth_pores=expand(
            "results/pores/ground_truth/{realization}.csv", realization=REALIZATIONS
        ),
        gaussian_fit="results/tables/gaussian_fit.csv",
        fsc="results/tables/fsc.csv",
    output:
        pores_summary="results/tables/pores_summary.csv",
        histogram="results/tables/pore_size_histogram.csv",
        gaussian_fit_best="results/tables/gaussian_fit_best.csv",
        fsc_resolution="results/tables/fsc_resolution.csv",
    log:
        "logs/collect_pore_tables.log",
    benchmark:
        "results/benchmarks/tables/pores_summary.tsv"
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        bin_um=config["evaluation"]["histogram_bin_um"],
    script:
        "../scripts/collect_pore_tables.py"


rule summary_table:
    input:
        image_metrics="results/tables/image_metrics.csv",
        pores_summary="results/tables/pores_summary.csv",
        gaussian_fit_best="results/tables/gaussian_fit_best.csv",
        fsc_resolution="results/tables/fsc_resolution.csv",
    output:
        csv=report(
            "results/tables/summary.csv",
            caption="../report/summary_table.rst",
            category="Tables",
            labels={"table": "summary"},
        ),
        markdown="results/tables/summary.md",
    log:
        "logs/summary_table.log",
    benchmark:
        "results/benchmarks/tables/summary.tsv"
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        realization="alternate",
    script:
        "../scripts/summary_table.py"
