"""One settings object per network: the config's ``deepnet:`` / ``srcnn:`` block resolved for one σ.

:func:`training_settings` applies the block's ``sigma_overrides`` (e.g. more iterations at 9 µm than
at 3 µm) so that every trained model records exactly what it was trained with (``model.json``'s
``training``). :func:`learning_rate_at` is the schedule as a pure function of the iteration: a
resumed run computes the same rate without any scheduler state in its checkpoint.
"""

from __future__ import annotations

import math

from ... import ResrecoverError
from ...config import sigma_settings
from ..registry import check_network


class TrainingError(ResrecoverError):
    """Training cannot start with these inputs or settings."""


def training_settings(config: dict, method: str, sigma_um: float | None = None) -> dict:
    """The ``method`` block of ``config`` with the overrides of ``sigma_um`` applied (a copy).

    Parameters
    ----------
    config : validated config (defaults filled).
    method : 'deepnet' or 'srcnn'.
    sigma_um : the LRES blur the model is trained for; ``None`` (a user's own pair) applies no
        override.

    Returns
    -------
    dict of the block's settings without ``sigma_overrides``, plus ``sigma_um`` when given.
    """
    check_network(method, error=TrainingError)
    block = sigma_settings(config[method], sigma_um)
    if sigma_um is not None:
        block["sigma_um"] = float(sigma_um)
    return block


def network_architecture(method: str, config: dict, sigma_um: float | None = None) -> dict:
    """Constructor arguments of ``method``'s network: its config block resolved for ``sigma_um``."""
    block = training_settings(config, method, sigma_um)
    if method == "deepnet":
        return {
            "n_slices": int(block["n_slices"]),
            "base_channels": int(block["base_channels"]),
            "depth": int(block["depth"]),
            "extra_convs": int(block["extra_convs"]),
            "batch_norm": True,
        }
    return {"kernels": list(block["kernels"]), "filters": list(block["filters"]), "residual": True}


def learning_rate_at(iteration: int, settings: dict) -> float:
    """Adam's step size at ``iteration`` (1-based) under the settings' schedule.

    ``schedule: constant`` keeps ``learning_rate`` after a linear warm-up of ``warmup_iterations``;
    ``cosine`` decays it from there to ``final_learning_rate_fraction × learning_rate`` at the last
    iteration along half a cosine (Loshchilov & Hutter, SGDR, 2017). The warm-up keeps the first
    Adam steps (whose second-moment estimate rests on a handful of gradients) small.
    """
    base = float(settings["learning_rate"])
    warmup = int(settings.get("warmup_iterations", 0))
    if warmup and iteration <= warmup:
        return base * iteration / warmup
    if settings.get("schedule", "constant") == "constant":
        return base
    total = int(settings["iterations"])
    final = base * float(settings.get("final_learning_rate_fraction", 0.0))
    progress = min(max((iteration - warmup) / max(total - warmup, 1), 0.0), 1.0)
    return final + (base - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def schedule_depends_on_length(settings: dict) -> bool:
    """Whether the step sizes depend on the total iterations (then a run cannot be extended)."""
    return settings.get("schedule", "constant") != "constant"
