"""Learning curves on the validation realization: how a network's quality grows with its training.

Settings (iterations per σ, schedule, capacity, tiles) are chosen here, on ``validation``, a foam
that neither trains the models nor reports the study (``alternate``). :func:`learning_curve` trains
a network once and, at each snapshot iteration, recovers the whole validation volume with the
current weights and scores it with the evaluation's own steps (:func:`score_volume`: SSIM inside
the FOV, then the same pore segmentation and one-to-one matching as rule ``evaluate_volume``).
Training is not disturbed by the snapshots: batches are seeded per iteration and the network is put
back in training mode afterwards, so the final weights equal those of a plain run.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_write_csv, read_volume
from ..masks import fov_mask
from .metrics import image_metrics
from .pores import (
    HEADLINE_PORE_COLUMNS, match_pores, pore_table, pores_summary, porosity, read_edge_cut, read_labels,
)
from .segmentation import segment_pores
from .stages import evaluation_masks, segmentation_settings

log = logging.getLogger(__name__)

CURVE_COLUMNS = [
    "method",
    "settings",
    "sigma_um",
    "iteration",
    "train_seconds",
    "ssim",
    "psnr",
    *HEADLINE_PORE_COLUMNS,
]


def score_volume(
    volume: np.ndarray,
    reference: np.ndarray,
    gt_labels: np.ndarray,
    gt_table: pd.DataFrame,
    config: dict,
    denoise: bool = False,
    gt_edge_cut: np.ndarray | None = None,
) -> dict:
    """SSIM/PSNR and the pore summary of ``volume`` against a ground truth, as rule ``evaluate_volume``.

    Parameters
    ----------
    volume, reference : (nz, ny, nx) material fraction on the same grid.
    gt_labels, gt_table : the ground truth's pore labels and pore table (rule ``segment_ground_truth``).
    config : validated config (voxel size, foam cylinder, evaluation settings).
    denoise : non-local means before segmenting (the study does it for Richardson-Lucy only).
    gt_edge_cut : the ground truth's end-cut voids (:func:`resrecover.evaluate.pores.read_edge_cut`).

    Returns
    -------
    dict with ``mse``, ``psnr``, ``ssim`` and the keys of :func:`resrecover.evaluate.pores.pores_summary`.
    """
    ev = config["evaluation"]
    voxel_size_um = float(config["voxel_size_um"])
    foam, metric_mask = evaluation_masks(config, volume.shape)
    metrics = image_metrics(volume, reference, ev["data_range"], ev["ssim_window_px"], metric_mask)
    labels, edge_cut = segment_pores(volume, foam, voxel_size_um, denoise=denoise, return_edge_cut=True,
                                     **segmentation_settings(config))
    matching = match_pores(labels, gt_labels, edge_cut=edge_cut, gt_edge_cut=gt_edge_cut)
    summary = pores_summary(pore_table(labels, voxel_size_um), labels, foam, gt_table, porosity(gt_labels, foam), matching)
    return {**metrics, **summary}


CHOSEN = "chosen"


@dataclasses.dataclass(frozen=True)
class ValidationSet:
    """The validation realization at one σ: its LRES volume, ground truth, and the ground truth's pores."""

    lres: str | Path
    ground_truth: str | Path
    labels: str | Path
    pores: str | Path

    def load(self):
        """(LRES volume, its attributes, ground truth, GT labels, GT end-cut voids, GT pore table)."""
        volume, attrs = read_volume(self.lres)
        reference, _ = read_volume(self.ground_truth)
        gt_labels, _ = read_labels(self.labels)
        return volume, attrs, reference, gt_labels, read_edge_cut(self.labels), pd.read_csv(self.pores)


def validation_set(inputs) -> ValidationSet:
    """The :class:`ValidationSet` of a tuning rule's named inputs (``validation``, ``validation_ground_truth``,
    ``validation_labels``, ``validation_pores``)."""
    return ValidationSet(
        inputs.validation, inputs.validation_ground_truth, inputs.validation_labels, inputs.validation_pores
    )


def settings_variant(config: dict, name: str) -> dict:
    """The config under the named settings: ``chosen`` (the config's own) or a ``tuning.compare`` entry.

    The entry's ``deepnet:`` / ``srcnn:`` keys replace the config's, and the result is validated
    again, so an alternative that is not a valid config fails with the key it names.
    """
    from ..config import ConfigError, validate_config

    if name == CHOSEN:
        return config
    compare = config["tuning"]["compare"]
    if name not in compare:
        raise ConfigError(f"tuning.compare: no settings named {name!r}; expected one of {', '.join([CHOSEN, *compare])}")
    variant = copy.deepcopy(config)
    for block, overrides in compare[name].items():
        variant[block].update(copy.deepcopy(overrides))
    try:
        return validate_config(variant)
    except ConfigError as exc:
        raise ConfigError(f"tuning.compare.{name}: {exc}") from None


def tuning_sigmas(config: dict) -> list[float]:
    """The σ (µm) with learning curves: ``tuning.sigmas_um``, or the two largest blur levels when empty."""
    return [float(s) for s in (config["tuning"]["sigmas_um"] or sorted(config["scan"]["sigmas_um"])[-2:])]


def collect_learning_curves(paths) -> pd.DataFrame:
    """One table of every curve (results/tables/learning_curves.csv), sorted by method, σ, settings, iteration."""
    frames = [pd.read_csv(p) for p in paths]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CURVE_COLUMNS)
    missing = [c for c in CURVE_COLUMNS if c not in table]
    if missing:
        raise ValueError(f"learning curves {list(map(str, paths))}: missing columns {missing}")
    return table[CURVE_COLUMNS].sort_values(["method", "sigma_um", "settings", "iteration"], kind="stable")


def _curve_row(method: str, settings: str, sigma_um: float, iteration: int, seconds: float, scores: dict) -> dict:
    """One row of a curve (:data:`CURVE_COLUMNS`): the point's keys and the scores of :func:`score_volume`."""
    return {
        "method": method,
        "settings": settings,
        "sigma_um": float(sigma_um),
        "iteration": int(iteration),
        "train_seconds": round(seconds, 1),
        **{k: scores[k] for k in CURVE_COLUMNS if k in scores},
    }


def default_snapshots(iterations: int, n_points: int = 6) -> list[int]:
    """About ``n_points`` snapshot iterations, doubling up to ``iterations`` (which is always one)."""
    points = {int(iterations)}
    step = int(iterations)
    while len(points) < n_points and step > 1:
        step //= 2
        points.add(step)
    return sorted(points)


def learning_curve(
    method: str,
    train_lres,
    train_hres,
    validation: ValidationSet,
    config: dict,
    sigma_um: float,
    work_dir: str | Path,
    seed: int | None = None,
    settings_label: str = CHOSEN,
    snapshots=None,
    threads: int | None = None,
    device="cpu",
    out_csv: str | Path | None = None,
) -> pd.DataFrame:
    """Train ``method`` for σ on ``train`` and score snapshots of it on ``validation``.

    Parameters
    ----------
    method : 'deepnet' or 'srcnn'; trained with :func:`resrecover.methods.training.train_model` on
        ``train_lres`` → ``train_hres`` with the config's settings for ``sigma_um``.
    validation : the validation realization's files at ``sigma_um``.
    work_dir : the run's model files and checkpoints; a re-run starts the training afresh (a
        resumed run could not score the snapshots before its checkpoint).
    seed : the training's seed; ``None``: the study's model's,
        :func:`resrecover.config.training_seed` (member 0), so that the last snapshot of the
        "chosen" curve is the study's model itself.
    settings_label : the ``settings`` column of the curve (e.g. 'chosen', 'previous').
    snapshots : iterations to score (``None``: :func:`default_snapshots`).
    out_csv : written atomically when given (columns :data:`CURVE_COLUMNS`).

    Returns
    -------
    DataFrame with one row per snapshot.
    """
    from ..config import training_seed
    from ..methods.infer import recover_source
    from ..methods.training import train_model, training_settings

    if seed is None:
        seed = training_seed(config["seed"], method, sigma_um)
    block = training_settings(config, method, sigma_um)
    snapshots = sorted(set(snapshots or default_snapshots(int(block["iterations"]))))
    volume, _, reference, gt_labels, gt_edge_cut, gt_table = validation.load()
    rows = []
    started = time.perf_counter()
    scoring_seconds = 0.0

    def score(iteration: int, model) -> None:
        nonlocal scoring_seconds
        t0 = time.perf_counter()
        settings = {"method": method, "architecture": model.network.architecture()}
        recovered = np.zeros(volume.shape, np.float32)
        recover_source(model, settings, volume, recovered, config["inference"], device, progress=False)
        scores = score_volume(recovered, reference, gt_labels, gt_table, config, gt_edge_cut=gt_edge_cut)
        scoring_seconds += time.perf_counter() - t0
        row = _curve_row(
            method, settings_label, sigma_um, iteration, time.perf_counter() - started - scoring_seconds, scores
        )
        rows.append(row)
        log.info(
            "%s σ %g (%s) iteration %d: %.1f%% of the pores, %d spurious, porosity error %+.1f%%, SSIM %.3f",
            method, sigma_um, settings_label, iteration, row["recovery_pct"], row["n_spurious"],
            row["porosity_error_pct"], row["ssim"],
        )

    work_dir = Path(work_dir)
    shutil.rmtree(work_dir / "checkpoints", ignore_errors=True)
    train_model(
        method,
        train_lres,
        train_hres,
        config,
        work_dir / "model.safetensors",
        work_dir / "model.json",
        work_dir / "train_log.csv",
        work_dir / "checkpoints",
        seed,
        device,
        mask=fov_mask(config, volume.shape),
        threads=threads,
        progress=False,
        sigma_um=sigma_um,
        on_snapshot=score,
        snapshot_iterations=snapshots,
    )
    curve = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    if out_csv is not None:
        atomic_write_csv(curve, out_csv)
    return curve


def rl_learning_curve(
    validation: ValidationSet,
    config: dict,
    sigma_um: float,
    iteration_counts=None,
    workers: int | None = None,
    device=None,
    out_csv: str | Path | None = None,
) -> pd.DataFrame:
    """Richardson-Lucy's counterpart of :func:`learning_curve`: quality vs RL iterations on ``validation``.

    Each count of ``iteration_counts`` (default ``tuning.rl_iterations``) is a separate deconvolution
    of the validation volume, scored as the evaluation scores RL (non-local means first when
    ``evaluation.nlm_for_rl``). ``train_seconds`` holds the deconvolution's seconds.
    """
    from ..methods.registry import denoise_before_segmentation
    from ..methods.rl import psf_in_voxels, richardson_lucy_3d

    volume, attrs, reference, gt_labels, gt_edge_cut, gt_table = validation.load()
    voxel_size_um = float(attrs.get("voxel_size_um", config["voxel_size_um"]))
    sigma_vox, pad_vox = psf_in_voxels(float(sigma_um), float(config["rl"]["pad_um"]), voxel_size_um)
    denoise = denoise_before_segmentation("rl", config)
    rows = []
    for iterations in sorted(set(int(i) for i in (iteration_counts or config["tuning"]["rl_iterations"]))):
        t0 = time.perf_counter()
        recovered = richardson_lucy_3d(volume, sigma_vox, iterations, pad_vox=pad_vox, device=device, workers=workers)
        seconds = time.perf_counter() - t0
        scores = score_volume(recovered, reference, gt_labels, gt_table, config, denoise=denoise,
                              gt_edge_cut=gt_edge_cut)
        rows.append(_curve_row("rl", CHOSEN, sigma_um, iterations, seconds, scores))
        log.info("rl σ %g, %d iterations: %.1f%% of the pores, SSIM %.3f", sigma_um, iterations,
                 rows[-1]["recovery_pct"], rows[-1]["ssim"])
    curve = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    if out_csv is not None:
        atomic_write_csv(curve, out_csv)
    return curve

