# Helpers shared by every rule file: config validation, wildcard constraints, target lists.
import re
import sys

from resrecover.config import ConfigError, all_sigmas, derive_seed, sigma_tag, validate_config

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
    sigma_tag(s) for s in config["evaluation"]["msssim_sigmas_um"] if sigma_tag(s) in LRES_SIGMAS
]
# ASTRA jobs hold a GPU; RTK jobs run on the CPU.
SIM_GPU = 0 if config["scan"]["backend"] == "rtk" else 1


def alternatives(values):
    return "|".join(re.escape(v) for v in values)


wildcard_constraints:
    realization=alternatives(REALIZATIONS),
    sigma=alternatives(ALL_SIGMAS),
    method=alternatives(EVALUATED),
    network=alternatives(NETWORKS or ["none"]),


def projection_output(path):
    """Scan projections are bulky intermediates: temporary unless the config keeps them."""
    return path if config["scan"]["keep_projections"] else temp(path)


def recovered(method, realization, sigma):
    return f"results/recovered/{method}/{realization}/sigma{sigma}.h5"


def final_outputs():
    return [
        *expand("results/recon/{realization}/sigma{sigma}.h5", realization=REALIZATIONS, sigma=ALL_SIGMAS),
        *expand("results/recon/{realization}/ground_truth.h5", realization=REALIZATIONS),
        *expand(
            "results/recovered/{method}/{realization}/sigma{sigma}.h5",
            method=METHODS,
            realization=REALIZATIONS,
            sigma=LRES_SIGMAS,
        ),
        *TABLES,
        *FIGURES,
    ]
