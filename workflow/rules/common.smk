# Helpers shared by all stages: config validation, target lists, input functions.
import re
import sys

from resrecover.gpu import cuda_device_count
from resrecover.config import (
    ConfigError,
    all_sigmas,
    derive_seed,
    sigma_tag,
    validate_config,
)

try:
    validate_config(config)
except ConfigError as exc:
    # One line naming the key, the value and what is allowed; nothing runs.
    sys.exit(f"config error: {exc}")

REALIZATIONS = ["train", "alternate"]
TARGET_SIGMA = sigma_tag(config["scan"]["target_sigma_um"])
LRES_SIGMAS = [sigma_tag(s) for s in config["scan"]["sigmas_um"]]
ALL_SIGMAS = [sigma_tag(s) for s in all_sigmas(config)]
NETWORKS = [m for m in config["methods"] if m in ("deepnet", "srcnn")]
METHODS = list(config["methods"])
# every method is evaluated, and so is the un-recovered FDK input as a baseline
EVALUATED = [*METHODS, "fdk"]
MAP_SIGMAS = [
    sigma_tag(s)
    for s in config["evaluation"]["msssim_sigmas_um"]
    if sigma_tag(s) in LRES_SIGMAS
]
# Simulation jobs hold a GPU only when they will run ASTRA: backend astra, or auto on a host with CUDA.
SIM_GPU = int(
    config["scan"]["backend"] == "astra"
    or (config["scan"]["backend"] == "auto" and cuda_device_count() > 0)
)


def alternatives(values):
    return "|".join(re.escape(v) for v in values)


def projection_output(path):
    """Scan projections are bulky intermediates: temporary unless the config keeps them."""
    return path if config["scan"]["keep_projections"] else temp(path)


def recovered(method, realization, sigma):
    return f"results/recovered/{method}/{realization}/sigma{sigma}.h5"


def final_outputs():
    return [
        *expand(
            "results/recon/{realization}/sigma{sigma}.h5",
            realization=REALIZATIONS,
            sigma=ALL_SIGMAS,
        ),
        *expand(
            "results/recon/{realization}/ground_truth.h5", realization=REALIZATIONS
        ),
        *expand(
            "results/recovered/{method}/{realization}/sigma{sigma}.h5",
            method=METHODS,
            realization=REALIZATIONS,
            sigma=LRES_SIGMAS,
        ),
        *TABLES,
        *FIGURES,
    ]


def evaluated_volume(wc):
    """The volume a method produced; `fdk` is the un-recovered LRES input, evaluated as a baseline."""
    if wc.method == "fdk":
        return f"results/recon/{wc.realization}/sigma{wc.sigma}.h5"
    return recovered(wc.method, wc.realization, wc.sigma)


TABLES = expand(
    "results/tables/{table}.csv",
    table=[
        "image_metrics",
        "gaussian_fit",
        "gaussian_fit_best",
        "fsc",
        "fsc_resolution",
        "pores_summary",
        "pore_size_histogram",
    ],
)
FIGURE_NAMES = [
    "fig1_training_pairs",
    "fig2_deepnet_train_vs_alternate",
    "fig3_image_metrics",
    "fig4_slice_grid",
    "fig5_pore_recovery",
    "fig6_pore_size_histograms",
    "fig7_sphericity",
    "fig8_msssim_maps",
    "fig9_gaussian_fit",
]
FIGURES = expand("results/figures/{name}.{ext}", name=FIGURE_NAMES, ext=["png", "pdf"])


def figure_rule_outputs(name):
    return {
        "png": report(
            f"results/figures/{name}.png",
            caption=f"../report/{name}.rst",
            category="Figures",
            labels={"figure": name.split("_")[0]},
        ),
        "pdf": f"results/figures/{name}.pdf",
    }
