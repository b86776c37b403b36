"""The study's recovery methods, named once: which are networks, which are iterative, and their layouts.

Every other module asks here instead of spelling ``("deepnet", "srcnn")`` itself, so that a new
network is added in one place.
"""

from __future__ import annotations

from .. import ResrecoverError

#: trained networks, in the paper's order; value: the tiling layout of their input
NETWORK_LAYOUTS = {"deepnet": "2.5d", "srcnn": "3d"}
NETWORKS: tuple[str, ...] = tuple(NETWORK_LAYOUTS)
#: methods that need no training
ITERATIVE: tuple[str, ...] = ("rl",)
METHODS: tuple[str, ...] = (*NETWORKS, *ITERATIVE)
#: the only method whose output is denoised (non-local means) before segmentation, as in the paper
DENOISED_BEFORE_SEGMENTATION: tuple[str, ...] = ("rl",)


def is_network(method: str) -> bool:
    """True for a method that is trained (DeepNet, SRCNN-3D), False for RL and baselines."""
    return method in NETWORK_LAYOUTS


def check_network(method: str, where: str = "method", error: type[Exception] = ResrecoverError) -> str:
    """``method`` if it names a network, else ``error`` with a one-line message naming ``where``."""
    if method not in NETWORK_LAYOUTS:
        raise error(f"{where}: {method!r} is not a network; expected one of {', '.join(NETWORKS)}")
    return method


def denoise_before_segmentation(method: str, config: dict) -> bool:
    """Whether the evaluation denoises ``method``'s output first: RL only (paper §2.5), and only
    while ``evaluation.nlm_for_rl`` is on."""
    return method in DENOISED_BEFORE_SEGMENTATION and bool(config["evaluation"]["nlm_for_rl"])
