"""The outputs a preset must produce (docs/results.md), listed from its config, for the workflow tests."""

from pathlib import Path

from resrecover.config import load_config, sigma_tag

TABLES = ["image_metrics", "gaussian_fit", "gaussian_fit_best", "fsc", "fsc_resolution", "pores_summary",
          "pore_size_histogram", "summary"]
FIGURES = ["fig1_training_pairs", "fig2_deepnet_train_vs_alternate", "fig3_image_metrics", "fig4_slice_grid",
           "fig5_pore_recovery", "fig6_pore_size_histograms", "fig7_sphericity", "fig8_msssim_maps",
           "fig9_gaussian_fit"]


def expected_outputs(config_path: Path) -> list[str]:
    c = load_config(config_path)
    lres = [sigma_tag(s) for s in c["scan"]["sigmas_um"]]
    target = sigma_tag(c["scan"]["target_sigma_um"])
    out = []
    for r in ("train", "alternate"):
        out.append(f"results/phantoms/{r}.h5")
        out.append(f"results/recon/{r}/ground_truth.h5")
        out.append(f"results/pores/ground_truth/{r}.csv")
        out += [f"results/recon/{r}/sigma{s}.h5" for s in [target, *lres]]
        for m in c["methods"]:
            out += [f"results/recovered/{m}/{r}/sigma{s}.h5" for s in lres]
            out += [f"results/pores/{m}/{r}/sigma{s}.csv" for s in lres]
    for m in c["methods"]:
        if m in ("deepnet", "srcnn"):
            for s in lres:
                # member 0: the study's model (members 1, 2, ... are a trust ensemble's extra networks)
                out += [f"results/models/{m}/sigma{s}/member0/{f}"
                        for f in ("model.safetensors", "model.json", "train_log.csv")]
    # own scans (workflow/rules/pairs.smk): each configured pair's recoveries; the example's scores
    for pair in c["pairs"]:
        out += [f"results/pairs/{pair['name']}/recovered/{m}.h5" for m in pair["methods"]]
    example = c["multiscale_example"]
    if example["enabled"]:
        out += [f"results/pairs/example/recovered/{m}.h5" for m in example["methods"]]
        out += ["results/pairs/example/registration_error.csv", "results/pairs/example/recovery_metrics.csv"]
    # "is this pore real?" on each pair (rule pair_flag_pores), and its scores on the example
    if c["trust"]["enabled"] and c["trust"]["classifier"]["enabled"]:
        pairs = [(p["name"], p["methods"]) for p in c["pairs"]]
        pairs += [("example", example["methods"])] if example["enabled"] else []
        out += [f"results/pairs/{name}/trust/{m}_{f}" for name, methods in pairs for m in methods
                for f in ("pores.csv", "model.json", "labels.h5")]
        out += ["results/pairs/example/trust_metrics.csv"] if example["enabled"] else []
    out += [f"results/tables/{t}.csv" for t in TABLES]
    out += [f"results/figures/{f}.{e}" for f in FIGURES for e in ("png", "pdf")]
    return out
