"""Is a volume like the one a network was trained on? The out-of-distribution check of a recovery.

A network maps intensities it has seen to intensities it has learned; given a volume in other units
(a uint16 scan of values up to 65,535 where it was trained on material fraction), another voxel
size or another blur, it still writes numbers, and they mean nothing. Before a recovery,
:func:`intensity_statistics` samples the input inside the inscribed disc of its slices (a CT
reconstruction's field of view) and :func:`check_domain` compares it with what the model stores
(:func:`check_input` does both and warns): the training input's mean and standard deviation inside its field of view (the normalization of
:mod:`resrecover.methods.modelio`), its voxel size and blur where recorded. Beyond the limits below
the recovery logs one warning line naming the numbers, records the check in the output's attributes
(``domain_check``), and the trust stage marks the volume's per-pore scores as not calibrated.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np

from ..masks import disc_mask

log = logging.getLogger(__name__)

#: The input's mean may sit this many training standard deviations from the training mean.
MEAN_SHIFT_LIMIT = 1.0
#: The input's standard deviation may be this many times larger or smaller than the training's.
STD_RATIO_LIMIT = 3.0
#: The input's voxel size (and blur, where both are known) may differ by this factor.
VOXEL_RATIO_LIMIT = 1.25
SIGMA_RATIO_LIMIT = 1.5
#: Share of a slice's half-width covered by the sampling disc (inside a reconstruction's FOV).
DISC_FRACTION = 0.9


def intensity_statistics(volume, max_slices: int = 16, max_voxels: int = 2**20) -> dict:
    """Mean, standard deviation and 1st/50th/99th percentiles of ``volume`` inside its slices' disc.

    Parameters
    ----------
    volume : sliceable (nz, ny, nx) volume (ndarray, HDF5 dataset, lazy reader); at most
        ``max_slices`` evenly spaced slices are read, one at a time.
    max_slices : slices sampled along z.
    max_voxels : at most about this many voxels are kept (every k-th of each slice's disc): the
        statistics need no more, and a recovery's RAM budget must not pay for them (16 whole
        1024² slices in float64 took 210 MB, more than the out-of-core benchmark's budget).

    Returns
    -------
    dict with ``mean``, ``std``, ``p1``, ``p50``, ``p99`` (float) and ``n_voxels`` (int).
    """
    nz, ny, nx = (int(n) for n in volume.shape)
    disc = disc_mask((ny, nx), DISC_FRACTION * min(ny, nx) / 2)
    if not disc.any():
        disc = np.ones((ny, nx), bool)
    slices = np.unique(np.linspace(0, nz - 1, max_slices).round()).astype(int)
    step = max(1, -(-int(disc.sum()) * len(slices) // int(max_voxels)))  # ceil
    values = np.concatenate(
        [np.asarray(volume[z : z + 1], dtype=np.float32)[0][disc][::step].astype(np.float64) for z in slices]
    )
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "p1": float("nan"), "p50": float("nan"),
                "p99": float("nan"), "n_voxels": 0}
    p1, p50, p99 = np.percentile(values, [1, 50, 99])
    return {"mean": float(values.mean()), "std": float(values.std()), "p1": float(p1), "p50": float(p50),
            "p99": float(p99), "n_voxels": int(values.size)}


@dataclasses.dataclass(frozen=True)
class DomainCheck:
    """The outcome of :func:`check_domain`: ``inside`` the training domain or not, and why."""

    inside: bool
    reasons: tuple[str, ...]
    input: dict
    training: dict

    def summary(self) -> str:
        """One line: 'inside the training domain' or the reasons, joined."""
        if self.inside:
            return "inside the model's training domain"
        return "unlike the model's training input: " + "; ".join(self.reasons)

    def to_json(self) -> str:
        """The check as JSON (the output attribute ``domain_check``)."""
        return json.dumps(
            {"inside": self.inside, "reasons": list(self.reasons), "input": self.input, "training": self.training,
             "limits": {"mean_shift_std": MEAN_SHIFT_LIMIT, "std_ratio": STD_RATIO_LIMIT,
                        "voxel_ratio": VOXEL_RATIO_LIMIT, "sigma_ratio": SIGMA_RATIO_LIMIT}}
        )


def _ratio(a: float, b: float) -> float:
    return max(a / b, b / a) if a > 0 and b > 0 else float("inf")


def check_domain(settings: dict, statistics: dict, voxel_size_um: float | None = None,
                 sigma_um: float | None = None) -> DomainCheck:
    """Compare an input's :func:`intensity_statistics` (and voxel size, blur) with a model's training input.

    Parameters
    ----------
    settings : the model's settings (``model.json``): ``normalization`` (``offset`` = training mean,
        ``scale`` = training standard deviation, inside the FOV), and where recorded
        ``voxel_size_um`` and ``sigma_um`` of the training input.
    statistics : the input's :func:`intensity_statistics`.
    voxel_size_um, sigma_um : the input's voxel size and blur (µm), where known; a side that does
        not know one is not compared.

    Returns
    -------
    :class:`DomainCheck`; out of the domain when the mean moved by more than
    :data:`MEAN_SHIFT_LIMIT` training standard deviations, the standard deviation by more than a
    factor :data:`STD_RATIO_LIMIT`, the voxel size by more than :data:`VOXEL_RATIO_LIMIT` or the
    blur by more than :data:`SIGMA_RATIO_LIMIT`.
    """
    normalization = settings.get("normalization", {})
    train_mean, train_std = float(normalization.get("offset", 0.0)), float(normalization.get("scale", 1.0))
    training = {"mean": train_mean, "std": train_std}
    reasons = []
    mean, std = float(statistics["mean"]), float(statistics["std"])
    if not np.isfinite(mean) or not np.isfinite(std):
        reasons.append("no finite voxel in the input's field of view")
    else:
        shift = abs(mean - train_mean) / train_std if train_std > 0 else float("inf")
        if shift > MEAN_SHIFT_LIMIT:
            reasons.append(f"mean {mean:.4g} vs {train_mean:.4g} in training ({shift:.3g} training std apart, "
                           f"limit {MEAN_SHIFT_LIMIT:g})")
        if _ratio(std, train_std) > STD_RATIO_LIMIT:
            reasons.append(f"standard deviation {std:.4g} vs {train_std:.4g} in training (limit x{STD_RATIO_LIMIT:g})")
    for name, mine, theirs, limit in (
        ("voxel size", voxel_size_um, settings.get("voxel_size_um"), VOXEL_RATIO_LIMIT),
        ("blur sigma", sigma_um, settings.get("sigma_um"), SIGMA_RATIO_LIMIT),
    ):
        if mine is None or theirs is None:
            continue
        training[name.replace(" ", "_") + "_um"] = float(theirs)
        if _ratio(float(mine), float(theirs)) > limit:
            reasons.append(f"{name} {float(mine):g} µm vs {float(theirs):g} µm in training (limit x{limit:g})")
    return DomainCheck(not reasons, tuple(reasons), {**statistics, "voxel_size_um": voxel_size_um,
                                                     "sigma_um": sigma_um}, training)


def check_input(settings: dict, volume, name, voxel_size_um: float | None = None,
                sigma_um: float | None = None) -> DomainCheck:
    """:func:`check_domain` of ``volume``'s :func:`intensity_statistics`, with one warning line naming
    ``name`` (the input file) when it is out of the domain: what every recovery runs first."""
    check = check_domain(settings, intensity_statistics(volume), voxel_size_um, sigma_um)
    if not check.inside:
        log.warning("%s: %s; the output is not calibrated for this volume", name, check.summary())
    return check
