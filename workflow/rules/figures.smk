# Stage 5: the paper's figures 1-9 (docs/design.md#figures-and-tables), each PNG + PDF and a report()
# item with a caption.
# Every plotted number is in a CSV under results/tables/ (or the per-pore tables of results/pores/).


rule fig1_training_pairs:
    input:
        volumes=expand("results/recon/train/sigma{sigma}.h5", sigma=ALL_SIGMAS),
    output:
        **figure_rule_outputs("fig1_training_pairs"),
    log:
        "logs/figures/fig1_training_pairs.log",
    benchmark:
        "results/benchmarks/figures/fig1_training_pairs.tsv"
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figure.py"


rule fig2_deepnet_train_vs_alternate:
    input:
        image_metrics="results/tables/image_metrics.csv",
        pores_summary="results/tables/pores_summary.csv",
        volumes=(
            expand(
                "results/recovered/deepnet/{realization}/sigma{sigma}.h5",
                realization=REALIZATIONS,
                sigma=LRES_SIGMAS,
            )
            if "deepnet" in METHODS
            else []
        ),
        ground_truth=expand(
            "results/recon/{realization}/ground_truth.h5", realization=REALIZATIONS
        ),
    output:
        **figure_rule_outputs("fig2_deepnet_train_vs_alternate"),
    log:
        "logs/figures/fig2_deepnet_train_vs_alternate.log",
    benchmark:
        "results/benchmarks/figures/fig2_deepnet_train_vs_alternate.tsv"
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figure.py"


rule fig3_image_metrics:
    input:
        image_metrics="results/tables/image_metrics.csv",
    output:
        **figure_rule_outputs("fig3_image_metrics"),
    log:
        "logs/figures/fig3_image_metrics.log",
    benchmark:
        "results/benchmarks/figures/fig3_image_metrics.tsv"
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figure.py"


rule fig4_slice_grid:
    input:
        inputs=expand("results/recon/alternate/sigma{sigma}.h5", sigma=LRES_SIGMAS),
        recovered=expand(
            "results/recovered/{method}/alternate/sigma{sigma}.h5",
            method=METHODS,
            sigma=LRES_SIGMAS,
        ),
        ground_truth="results/recon/alternate/ground_truth.h5",
    output:
        **figure_rule_outputs("fig4_slice_grid"),
    log:
        "logs/figures/fig4_slice_grid.log",
    benchmark:
        "results/benchmarks/figures/fig4_slice_grid.tsv"
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figure.py"


rule fig5_pore_recovery:
    input:
        pores_summary="results/tables/pores_summary.csv",
    output:
        **figure_rule_outputs("fig5_pore_recovery"),
    log:
        "logs/figures/fig5_pore_recovery.log",
    benchmark:
        "results/benchmarks/figures/fig5_pore_recovery.tsv"
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figure.py"


rule fig6_pore_size_histograms:
    input:
        histogram="results/tables/pore_size_histogram.csv",
        pores_summary="results/tables/pores_summary.csv",
    output:
        **figure_rule_outputs("fig6_pore_size_histograms"),
    log:
        "logs/figures/fig6_pore_size_histograms.log",
    benchmark:
        "results/benchmarks/figures/fig6_pore_size_histograms.tsv"
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figure.py"


rule fig7_sphericity:
    input:
        pores=expand(
            "results/pores/{method}/{realization}/sigma{sigma}.csv",
            method=METHODS,
            realization=REALIZATIONS,
            sigma=LRES_SIGMAS,
        ),
        ground_truth_pores=expand(
            "results/pores/ground_truth/{realization}.csv", realization=REALIZATIONS
        ),
        pores_summary="results/tables/pores_summary.csv",
    output:
        **figure_rule_outputs("fig7_sphericity"),
    log:
        "logs/figures/fig7_sphericity.log",
    benchmark:
        "results/benchmarks/figures/fig7_sphericity.tsv"
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figure.py"


rule fig8_msssim_maps:
    input:
        maps=expand(
            "results/maps/msssim/{method}/alternate/sigma{sigma}.h5",
            method=METHODS,
            sigma=MAP_SIGMAS,
        ),
    output:
        **figure_rule_outputs("fig8_msssim_maps"),
    log:
        "logs/figures/fig8_msssim_maps.log",
    benchmark:
        "results/benchmarks/figures/fig8_msssim_maps.tsv"
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figure.py"


rule fig9_gaussian_fit:
    input:
        gaussian_fit="results/tables/gaussian_fit.csv",
        gaussian_fit_best="results/tables/gaussian_fit_best.csv",
    output:
        **figure_rule_outputs("fig9_gaussian_fit"),
    log:
        "logs/figures/fig9_gaussian_fit.log",
    benchmark:
        "results/benchmarks/figures/fig9_gaussian_fit.tsv"
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figure.py"
