# Helpers shared by all stages: config validation, target lists, input functions.
import re
import sys

from resrecover.methods.device import cuda_device_count
from resrecover.methods.registry import denoise_before_segmentation, is_network
from resrecover.config import (
    ConfigError,
    all_sigmas,
    derive_seed,
    labelled_realizations,
    realization_seeds,
    sigma_tag,
    validate_config,
)
from resrecover.snakemake_support import ensemble_member

try:
    validate_config(config)
except ConfigError as exc:
    # One line naming the key, the value and what is allowed; nothing runs.
    sys.exit(f"config error: {exc}")

# The study trains on `train` and reports on `alternate`; `validation` (a third foam) is only simulated
# for choosing settings (rule learning_curve), never for reporting. `transfer` is no foam but ellipsoidal
# voids (config `transfer:`), simulated only for rule trust_transfer (transfer.smk), never trained on.
# `labelled1`, `labelled2`, ... (config realizations.labelled) are foams simulated only to fit the
# spurious-pore classifier (trust.classifier.fit_realizations: labelled).
REALIZATIONS = ["train", "alternate"]
FOAM_REALIZATIONS = [*REALIZATIONS, "validation", *labelled_realizations(config)]
SIMULATED_REALIZATIONS = [*FOAM_REALIZATIONS, "transfer"]
TARGET_SIGMA = sigma_tag(config["scan"]["target_sigma_um"])
LRES_SIGMAS = [sigma_tag(s) for s in config["scan"]["sigmas_um"]]
ALL_SIGMAS = [sigma_tag(s) for s in all_sigmas(config)]
NETWORKS = [m for m in config["methods"] if is_network(m)]
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


# Trained networks (train.smk): one folder per network, σ and member. Member 0 is the study's model;
# members 1, 2, ... are a trust ensemble's extra networks (trust.smk), trained alike from their own seed.
MODEL_DIR = "results/models/{network}/sigma{sigma}/member{member}"
MEMBER = "0|[1-9][0-9]*"
EXTRA_MEMBER = "[1-9][0-9]*"
# an extra member's recovery, by recover_ensemble_member (trust.smk), is temporary: the ensemble rule combines them
MEMBER_RECOVERED = (
    "results/trust/members/{network}/{realization}/sigma{sigma}/member{member}.h5"
)


def network_model(wc):
    """The model a network recovery applies: its job's member (0, the study's model, when the output names none)."""
    folder = MODEL_DIR.format(
        network=wc.network, sigma=wc.sigma, member=ensemble_member(wc)
    )
    return {
        "weights": f"{folder}/model.safetensors",
        "settings": f"{folder}/model.json",
    }


def recovered(method, realization, sigma):
    return f"results/recovered/{method}/{realization}/sigma{sigma}.h5"


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
        "summary",
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


# ---- learning curves on the validation realization (workflow/rules/tuning.smk; config `tuning:`) ----
from resrecover.evaluate.learning_curve import tuning_sigmas

TUNING = {
    "networks": [n for n in config["tuning"]["networks"] if n in NETWORKS],
    "sigmas": [sigma_tag(s) for s in tuning_sigmas(config)],
    "settings": ["chosen", *config["tuning"]["compare"]],
}


# Your own scans (docs/own_scans.md; rules in pairs.smk): the `pairs:` block by name, plus the synthetic pair
# `example` when multiscale_example.enabled. The example's two scans are the pair's inputs, so they are
# written where inputs live: resources/.
from resrecover.ownscan.pairs import configured_pairs, volume_file

EXAMPLE_DIR = "resources/multiscale_example"
try:
    PAIRS = configured_pairs(config, EXAMPLE_DIR)
except ConfigError as exc:
    sys.exit(f"config error: {exc}")
PAIR_PATTERN = alternatives(list(PAIRS) or ["none"])
# the final outputs of the pairs: their recovered volumes, and the example's scores
PAIR_TARGETS = [
    f"results/pairs/{name}/recovered/{m}.h5"
    for name, pair in PAIRS.items()
    for m in pair["methods"]
]
if config["multiscale_example"]["enabled"]:
    PAIR_TARGETS += [
        "results/pairs/example/registration_error.csv",
        "results/pairs/example/recovery_metrics.csv",
    ]


def pair_inputs(wc):
    """A pair's two scans (the file of a `scan.h5:/dataset` spec) and, for the example, its stage offset."""
    pair = PAIRS[wc.pair]
    inputs = {"low": volume_file(pair["low"]), "high": volume_file(pair["high"])}
    if pair["offset_file"]:
        inputs["offset"] = pair["offset_file"]
    return inputs


# ---- trust maps without ground truth (workflow/rules/trust.smk; config `trust:`) ----
from resrecover.trust import trust_plan

try:
    TRUST = trust_plan(config)
except ConfigError as exc:
    sys.exit(f"config error: {exc}")
TRUST_METHODS = TRUST["methods"]
TRUST_NETWORKS = TRUST["networks"]
TRUST_SIGMAS = TRUST["sigmas"]
ENSEMBLE_SIGMAS = TRUST["ensemble_sigmas"]
ENSEMBLE_METHODS = TRUST["ensemble_methods"]
# fig10 sits beside fig8: the MS-SSIM map levels that have trust maps
TRUST_FIGURE_SIGMAS = [s for s in MAP_SIGMAS if s in TRUST_SIGMAS] or TRUST_SIGMAS
if TRUST["evaluate_ensembles"]:
    # trust maps at every σ: the ensembles join the study's tables like any method
    EVALUATED.extend(m for m in ENSEMBLE_METHODS if m not in EVALUATED)
# own scans, "is this pore real?" (pair_flag_pores in pairs.smk): each network recovery's per-pore
# verdicts, and on the example their scores against the phantom
if TRUST["enabled"] and TRUST["classifier"]:
    PAIR_TARGETS += [
        f"results/pairs/{name}/trust/{m}_pores.csv"
        for name, pair in PAIRS.items()
        for m in pair["methods"]
        if is_network(m)
    ]
    if "example" in PAIRS:
        PAIR_TARGETS.append("results/pairs/example/trust_metrics.csv")


def ensemble_members(wc):
    """Member 0 is the study's model's recovery; members 1..K-1 come from rule recover_ensemble_member."""
    return [
        recovered(wc.network, wc.realization, wc.sigma),
        *(
            MEMBER_RECOVERED.format(
                network=wc.network, realization=wc.realization, sigma=wc.sigma, member=k
            )
            for k in range(1, TRUST["ensemble_size"])
        ),
    ]


# The recoveries rule trust_validation checks, one per method and σ on the alternate realization. Its inputs
# are listed from these keys and the keys go along as params, so no step reads a key out of a path.
TRUST_VALIDATION_KEYS = [
    {"method": m, "realization": "alternate", "sigma": s}
    for m in TRUST_METHODS
    for s in TRUST_SIGMAS
]


def keyed_paths(pattern, keys):
    """One path per key (a dict of wildcard values), in the keys' order."""
    return [pattern.format(**key) for key in keys]


def recovered_for_trust(wc):
    return recovered(wc.method, wc.realization, wc.sigma)


def trust_ensemble_input(wc):
    """The ensemble file whose `disagreement` dataset a network's trust maps carry (none for RL)."""
    if wc.method in TRUST_NETWORKS and wc.sigma in ENSEMBLE_SIGMAS:
        return recovered(f"{wc.method}_ensemble", wc.realization, wc.sigma)
    return []


# The spurious-pore classifier (trust.smk: trust_model, flag_pores): fitted per method on the labelled
# pores of TRUST_FIT (never alternate), it scores the pores of the other trust realizations.
TRUST_FIT = TRUST["fit_realizations"]
TRUST_MODEL = "results/trust/models/{method}.json"
FLAGGED_PORES = "results/trust/flags/{method}/{realization}/sigma{sigma}.csv"


def trust_network_model(wc):
    """A network's study model (member 0), whose test-time-augmentation variance its trust maps carry."""
    if wc.method not in TRUST_NETWORKS or config["trust"]["tta_transforms"] == "none":
        return {}
    folder = MODEL_DIR.format(network=wc.method, sigma=wc.sigma, member=0)
    return {
        "weights": f"{folder}/model.safetensors",
        "settings": f"{folder}/model.json",
    }


def trust_model_training(wc):
    """The per-pore tables a method's trust model is fitted on: every trust σ of TRUST_FIT."""
    return expand(
        "results/trust/pores/{method}/{realization}/sigma{sigma}.csv",
        method=wc.method,
        realization=TRUST_FIT,
        sigma=TRUST_SIGMAS,
    )


def trust_validation_pores(key):
    """The per-pore table trust_validation reads: scored by the classifier when there is one."""
    if TRUST["classifier"]:
        return FLAGGED_PORES.format(**key)
    return "results/trust/pores/{method}/{realization}/sigma{sigma}.csv".format(**key)


# The transfer structure (transfer.smk): scanned at the trust σ levels, recovered and scored like alternate
# by the foam's models and classifier; its table sets each transfer volume beside alternate's.
TRANSFER_SIGMAS = TRUST_SIGMAS or LRES_SIGMAS
TRANSFER_KEYS = [
    {"method": m, "realization": r, "sigma": s}
    for r in ["alternate", "transfer"]
    for m in TRUST_METHODS
    for s in TRUST_SIGMAS
]


def trust_summaries():
    """Pore summaries of each network (every trust σ) and of its ensemble (ensemble σ), alternate."""
    return [
        *expand(
            "results/evaluation/{method}/alternate/sigma{sigma}/pores_summary.csv",
            method=TRUST_NETWORKS,
            sigma=TRUST_SIGMAS,
        ),
        *expand(
            "results/evaluation/{method}/alternate/sigma{sigma}/pores_summary.csv",
            method=ENSEMBLE_METHODS,
            sigma=ENSEMBLE_SIGMAS,
        ),
    ]


def trust_outputs():
    if not TRUST["enabled"]:
        return []
    return [
        *expand(
            "results/trust/{method}/{realization}/sigma{sigma}.h5",
            method=TRUST_METHODS,
            realization=TRUST["realizations"],
            sigma=TRUST_SIGMAS,
        ),
        *expand(
            "results/trust/pores/{method}/{realization}/sigma{sigma}.csv",
            method=TRUST_METHODS,
            realization=TRUST["realizations"],
            sigma=TRUST_SIGMAS,
        ),
        *expand(
            "results/recovered/{method}/{realization}/sigma{sigma}.h5",
            method=ENSEMBLE_METHODS,
            realization=TRUST["member_realizations"],
            sigma=ENSEMBLE_SIGMAS,
        ),
        *(
            expand(TRUST_MODEL, method=TRUST_METHODS)
            + expand(
                FLAGGED_PORES,
                method=TRUST_METHODS,
                realization=TRUST["flag_realizations"],
                sigma=TRUST_SIGMAS,
            )
            if TRUST["classifier"]
            else []
        ),
        "results/tables/trust_validation.csv",
        *expand("results/figures/fig10_trust_maps.{ext}", ext=["png", "pdf"]),
        # own scans (pairs.smk): the residual of each network recovery, blur estimated on the overlap
        *(
            f"results/pairs/{name}/trust/{m}.h5"
            for name, pair in PAIRS.items()
            for m in pair["methods"]
            if is_network(m)
        ),
    ]


# ---- the default target, every output of the study (the Snakefile's `all`) ----
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
        *trust_outputs(),
        *PAIR_TARGETS,
    ]
