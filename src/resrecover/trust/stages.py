"""The trust rules' entry points (workflow/rules/trust.smk): files in, files out, one call per rule.

- :func:`trust_maps_from_files` (rule ``trust_maps``): residual + disagreement maps of one volume;
- :func:`pore_trust_from_files` (rule ``trust_pores``): the volume's pore table with trust columns;
- :func:`trust_validation_from_files` (rule ``trust_validation``): the maps against the ground
  truth's verdicts (MS-SSIM maps, spurious pores) and the ensemble against its single model;
- :func:`pair_trust_from_files` (rule ``pair_trust``): the residual map of an own-scan recovery,
  with the blur estimated on the registered overlap.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import config_hash
from ..evaluate.pores import CUT_BY_ENDS, MIS_SIZED
from ..io import atomic_write_csv, read_volume
from .maps import TrustError, gaussian_blur, read_trust_maps, residual_map, write_trust_maps
from .pore_trust import pore_trust_table
from .validate import VALIDATION_COLUMNS, _row, pore_auc_rows, spearman_map_correlation

log = logging.getLogger(__name__)

#: pore-summary columns compared between an ensemble and its single model
ENSEMBLE_QUANTITIES = ["recovery_pct", "n_pores", "n_matched", "n_missed", "n_spurious", "porosity_error_pct",
                       "sphericity_mean"]


def recovery_target_sigma_um(method: str, config: dict) -> float:
    """Blur (µm) a method's recovery aims at: the HRES target's for networks, 0 for Richardson-Lucy.

    RL deconvolves the input's whole Gaussian (σ µm), so its estimate is the unblurred object.
    """
    base = method.removesuffix("_ensemble")
    return 0.0 if base == "rl" else float(config["scan"]["target_sigma_um"])


def _residual_options(config: dict) -> dict:
    block = config["trust"]
    return {
        "window_um": float(block["residual_window_um"]) or None,
        "noise_block_um": float(block["noise_block_um"]),
        "noise_correlation": float(block["noise_correlation"]),
    }


def trust_maps_from_files(
    recovered_path: str | Path,
    lres_path: str | Path,
    output_path: str | Path,
    config: dict,
    method: str,
    sigma_um: float,
    ensemble_path: str | Path | None = None,
    workers: int = 1,
    model_files: tuple[str | Path, str | Path] | None = None,
    device=None,
    **provenance,
) -> dict:
    """Write the trust maps (``residual``, ``disagreement``, ``noise_std``, ``tta_variance``) of one
    recovered volume.

    Parameters
    ----------
    recovered_path : results/recovered/{method}/{realization}/sigma{σ}.h5.
    lres_path : results/recon/{realization}/sigma{σ}.h5, the input the method saw.
    output_path : results/trust/{method}/{realization}/sigma{σ}.h5.
    config : validated config (``trust:``, ``scan.target_sigma_um``, the FOV geometry).
    method, sigma_um : which recovery; RL's target blur is 0 (:func:`recovery_target_sigma_um`).
    ensemble_path : the method's ensemble file (dataset ``disagreement``); None: no ensemble, the
        disagreement map is stored all NaN.
    workers : FFT threads.
    model_files : the network's ``(model.safetensors, model.json)``: its test-time-augmentation
        variance (:mod:`.tta`, transforms ``trust.tta_transforms``) is stored; None (RL, or
        ``tta_transforms: none``): the ``tta_variance`` map is all NaN.
    device : torch device for that variance (None: :func:`resrecover.methods.device.acquire_device`).

    Returns
    -------
    dict with the medians of the maps inside the FOV.
    """
    from ..masks import fov_mask

    t0 = time.perf_counter()
    recovered, attrs = read_volume(recovered_path)
    lres, lattrs = read_volume(lres_path)
    if recovered.shape != lres.shape:
        raise TrustError(f"{recovered_path}: shape {recovered.shape} differs from its input {lres_path} {lres.shape}")
    voxel = float(attrs.get("voxel_size_um", lattrs.get("voxel_size_um", config["voxel_size_um"])))
    mask = fov_mask(config, lres.shape)
    target = recovery_target_sigma_um(method, config)
    residual, noise = residual_map(
        recovered, lres, voxel, float(sigma_um), target, mask=mask, workers=workers, **_residual_options(config)
    )
    del recovered, lres
    disagreement = None
    if ensemble_path is not None:
        disagreement, _ = read_volume(ensemble_path, dataset="disagreement")
        if disagreement.shape != residual.shape:
            raise TrustError(f"{ensemble_path}: disagreement shape {disagreement.shape} differs from {residual.shape}")
        disagreement[~mask] = np.nan
    tta_variance = None
    transforms = config["trust"]["tta_transforms"]
    if model_files is not None and transforms != "none":
        from .tta import tta_variance_from_files

        tta_variance = tta_variance_from_files(*model_files, lres_path, recovered_path, config["inference"],
                                               transforms, device=device)
        tta_variance[~mask] = np.nan
    write_trust_maps(
        output_path,
        residual,
        disagreement,
        noise,
        voxel,
        tta_variance=tta_variance,
        method=method,
        sigma_um=float(sigma_um),
        target_sigma_um=target,
        tta_transforms=transforms if tta_variance is not None else "none",
        recovered=str(recovered_path),
        lres=str(lres_path),
        ensemble=str(ensemble_path) if ensemble_path else "",
        # the recovery's out-of-distribution check (networks only), passed on to the pore scores
        domain_check=attrs.get("domain_check", ""),
        config_hash=config_hash(config),
        trust_settings=dict(config["trust"]),
        **provenance,
    )
    summary = {
        "residual_median": float(np.nanmedian(residual)),
        "disagreement_median": float(np.nanmedian(disagreement)) if disagreement is not None else float("nan"),
    }
    log.info("%s: %s in %.1f s", output_path, summary, time.perf_counter() - t0)
    return summary


def scores_calibrated(domain_check: str) -> bool:
    """False when a recovery's ``domain_check`` attribute (:mod:`resrecover.methods.domain`) says its
    input was unlike the model's training input; True when it was alike or nothing was checked
    (Richardson-Lucy learns nothing, so it has no training domain)."""
    if not domain_check:
        return True
    return bool(json.loads(domain_check).get("inside", True))


def pore_trust_from_files(
    maps_path: str | Path,
    labels_path: str | Path,
    pores_path: str | Path,
    output_path: str | Path,
    config: dict,
    recovered_path: str | Path | None = None,
) -> pd.DataFrame:
    """Write results/trust/pores/{method}/{realization}/sigma{σ}.csv: the pore rows + trust columns
    + the per-pore features of the spurious-pore classifier (:mod:`.features`).

    The pore table and labels are the evaluation's (results/pores/..., results/labels/...); the
    table is copied, not rewritten in place. ``recovered_path`` (the volume the labels were
    segmented from) gives the features that read grey values: ``contrast_noise`` against the
    segmentation's Otsu threshold inside the foam (:func:`resrecover.evaluate.segmentation.pore_threshold`,
    before any denoising) in units of the recovered volume's local noise
    (:func:`.maps.noise_level_map`, blocks of ``trust.noise_block_um``); without it only the
    trust columns are added.
    """
    from ..evaluate.pores import read_labels

    maps, maps_attrs = read_trust_maps(maps_path, names=("residual", "disagreement", "tta_variance"))
    labels, _ = read_labels(labels_path)
    table = pd.read_csv(pores_path)
    block = config["trust"]
    out = pore_trust_table(
        table, labels, {k: maps[k] for k in ("residual", "disagreement")}, wall_voxels=float(block["pore_wall_voxels"]),
        disagreement_scale=float(block["disagreement_scale"]),
    )
    if recovered_path is not None:
        out = _with_features(out, labels, recovered_path, maps, config)
    out["calibrated"] = scores_calibrated(maps_attrs.get("domain_check", ""))
    if not out["calibrated"].all():
        log.warning("%s: the recovered volume is unlike its model's training input; its pore scores are not "
                    "calibrated (column 'calibrated' False)", output_path)
    atomic_write_csv(out, output_path)
    if "matched_gt_label" in out.columns and len(out):
        spurious, matched = (out["matched_gt_label"] == 0).to_numpy(), (out["matched_gt_label"] > 0).to_numpy()
        log.info(
            "%s: %d pores (%d spurious, %d at the wrong size, %d cut by an end of the ground truth); median trust "
            "matched %.3f, spurious %.3f", output_path, len(out), int(spurious.sum()),
            int((out["matched_gt_label"] == MIS_SIZED).sum()), int((out["matched_gt_label"] == CUT_BY_ENDS).sum()),
            float(out.loc[matched, "trust"].median()) if matched.any() else float("nan"),
            float(out.loc[spurious, "trust"].median()) if spurious.any() else float("nan"),
        )
    return out


def _with_features(table: pd.DataFrame, labels, recovered_path, maps: dict, config: dict) -> pd.DataFrame:
    """``table`` with :mod:`.features`' columns (the TTA variance mean over each pore and its wall)."""
    from ..evaluate.segmentation import pore_threshold
    from ..evaluate.stages import evaluation_masks
    from ..masks import fov_mask
    from .features import pore_features
    from .maps import noise_level_map

    recovered, attrs = read_volume(recovered_path)
    if recovered.shape != labels.shape:
        raise TrustError(f"{recovered_path}: shape {recovered.shape} differs from its labels' {labels.shape}")
    voxel = float(attrs.get("voxel_size_um", config["voxel_size_um"]))
    foam, metric = evaluation_masks(config, recovered.shape)
    block_vox = max(2, int(round(float(config["trust"]["noise_block_um"]) / voxel)))
    return pore_features(
        table, labels, recovered, pore_threshold(recovered, foam), noise_level_map(recovered, metric, block_vox),
        fov_mask(config, recovered.shape), voxel, maps={"tta_variance": maps["tta_variance"]},
        wall_voxels=float(config["trust"]["pore_wall_voxels"]),
    )


def _calibration_rows(config, volumes, ground_truth_path, foam_and_fov) -> list[dict]:
    """Median residual of a perfect recovery (the ground truth at the method's target blur): ≈ 1.

    One row per volume with an input (``lres``): the ground truth at its method's target blur against
    that input.
    """
    gt, gattrs = read_volume(ground_truth_path)
    voxel = float(gattrs.get("voxel_size_um", config["voxel_size_um"]))
    from ..masks import fov_mask

    mask = fov_mask(config, gt.shape)
    by_input: dict[str, list[dict]] = {}
    for volume in volumes:
        if volume.get("lres"):
            by_input.setdefault(str(volume["lres"]), []).append(volume)
    rows = []
    for path, entries in by_input.items():
        lres, _ = read_volume(path)
        for volume in entries:
            method, realization, sigma = volume["method"], volume["realization"], volume["sigma_um"]
            target = recovery_target_sigma_um(method, config)
            perfect = gaussian_blur(gt, target / voxel)
            residual, _ = residual_map(perfect, lres, voxel, sigma, target, mask=mask, **_residual_options(config))
            values = residual[foam_and_fov]
            values = values[np.isfinite(values)]
            rows.append(_row(method, realization, sigma, "residual_median_ground_truth", "residual",
                             float(np.median(values)), values.size))
    return rows


def trust_validation_from_files(
    volumes,
    summary_paths,
    ground_truth_path: str | Path,
    output_path: str | Path,
    config: dict,
    training_pores=(),
    trust_models=(),
    roc_output: str | Path | None = None,
    reliability_output: str | Path | None = None,
) -> pd.DataFrame:
    """Write results/tables/trust_validation.csv (columns :data:`VALIDATION_COLUMNS`).

    ``volumes``: one dict per validated recovery, with its keys as the rule passes them (never read
    from a path): ``method``, ``realization``, ``sigma_um``, and its files: ``maps`` (the trust
    maps, results/trust/...), optionally ``msssim`` (its MS-SSIM map), ``pores`` (its per-pore trust
    table) and ``lres`` (the input it was recovered from, for the noise floor).
    ``summary_paths``: per-volume pore summaries (their rows carry their own keys).

    Quantities, per method and σ (``map`` names the trust map, empty for pore summaries):

    - ``spearman_vs_1_minus_msssim``: Spearman ρ of each map with 1 − MS-SSIM over the foam
      cylinder ∩ FOV (``n`` voxels);
    - ``roc_auc_spurious``: ROC AUC of each per-pore score (residual mean, disagreement mean,
      1 − trust) for spurious vs matched pores (``n`` pores with a finite score), and of the
      map-free baseline ``size_baseline`` (smaller pore = more suspect);
    - ``roc_auc_spurious_within_size``: the same AUC over pairs of pores of similar size
      (:func:`~resrecover.trust.validate.size_stratified_auc`): what each score adds to size;
    - ``spurious_pores_scored``: spurious pores the AUC was computed on (``n`` = all pores);
    - ``residual_median``: median of the residual map over the foam;
    - ``residual_median_ground_truth``: the same for a perfect recovery (the ground truth at the
      method's target blur) against the same input: the map's noise floor, ≈ 1 when the noise
      model is right;
    - for each network with an ensemble: ``recovery_pct``, ``n_pores``, ``n_matched``,
      ``n_missed``, ``n_spurious``, ``porosity_error_pct``, ``sphericity_mean`` of the single
      model (method ``{network}``) and of the ensemble mean (method ``{network}_ensemble``), from
      their per-volume pore summaries;
    - where a ``pores`` table is scored by the spurious-pore classifier (column ``p_spurious``,
      rule ``flag_pores``): the rows of :func:`.spurious.classifier_rows` (AUC with bootstrap
      intervals, gain over size, calibration error, achieved FDR and power, drop-one AUC refitted
      on ``training_pores``, the fitting realization's tables, with the penalty and features of
      the method's fitted model in ``trust_models``); its ROC curves and reliability table go to
      ``roc_output`` and ``reliability_output``.
    """
    from ..masks import foam_mask, fov_mask
    from .score import load_trust_model
    from .spurious import RELIABILITY_COLUMNS, ROC_COLUMNS, classifier_curves, classifier_rows

    # each model names its method in what it was fitted on (no key is read from a path)
    models = {}
    for path in trust_models:
        model = load_trust_model(path)
        if model.training:
            models[str(model.training[0].get("method", ""))] = model
    training = {}
    for path in training_pores:
        table = pd.read_csv(path)
        training.setdefault(str(table["method"].iloc[0]) if len(table) else "", []).append(table)
    rocs, reliabilities = [pd.DataFrame(columns=ROC_COLUMNS)], [pd.DataFrame(columns=RELIABILITY_COLUMNS)]

    volumes = [dict(v, sigma_um=round(float(v["sigma_um"]), 6)) for v in volumes]
    volumes.sort(key=lambda v: (v["method"], v["realization"], v["sigma_um"]))
    rows: list[dict] = []
    region = None
    for volume in volumes:
        method, realization, sigma = volume["method"], volume["realization"], volume["sigma_um"]
        maps, _ = read_trust_maps(volume["maps"], names=("residual", "disagreement", "tta_variance"))
        if region is None:
            shape = maps["residual"].shape
            region = foam_mask(config, shape) & fov_mask(config, shape)
        if volume.get("msssim"):
            quality, _ = read_volume(volume["msssim"], check_finite=False)
            for name in ("residual", "disagreement", "tta_variance"):
                rho, n = spearman_map_correlation(maps[name], quality, region)
                rows.append(_row(method, realization, sigma, "spearman_vs_1_minus_msssim", name, rho, n))
        values = maps["residual"][region]
        values = values[np.isfinite(values)]
        rows.append(_row(method, realization, sigma, "residual_median", "residual", float(np.median(values)), values.size))
        if volume.get("pores"):
            pores = pd.read_csv(volume["pores"])
            rows += pore_auc_rows(pores, method, realization, sigma)
            if "p_spurious" in pores.columns:
                rows += classifier_rows(pores, training.get(method, []), models.get(method), config, method,
                                        realization, sigma)
                roc, reliability = classifier_curves(pores, config, method, sigma)
                rocs.append(roc)
                reliabilities.append(reliability)
    if region is not None:
        rows += _calibration_rows(config, volumes, ground_truth_path, region)
    if summary_paths:
        summaries = pd.concat([pd.read_csv(p) for p in summary_paths], ignore_index=True)
        for rec in summaries.itertuples(index=False):
            for quantity in ENSEMBLE_QUANTITIES:
                rows.append(_row(rec.method, rec.realization, rec.sigma_um, quantity, "", getattr(rec, quantity), 1))
    table = pd.DataFrame(rows, columns=VALIDATION_COLUMNS)
    table = table.sort_values(["sigma_um", "method", "quantity", "map"], kind="mergesort").reset_index(drop=True)
    atomic_write_csv(table, output_path)
    for output, frames in ((roc_output, rocs), (reliability_output, reliabilities)):
        if output is not None:
            atomic_write_csv(pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True), output)
    log.info("%s: %d rows", output_path, len(table))
    return table


def pair_trust_from_files(
    recovered_path: str | Path, low_path: str, registration_path: str | Path,
    training_lres_path: str | Path, training_hres_path: str | Path, output_path: str | Path,
    config: dict, roi=None, low_dataset: str | None = None, **provenance,
) -> dict:
    """Residual map of an own-scan recovery (rule ``pair_trust``): results/pairs/{pair}/trust/{method}.h5.

    The blur is unknown, so it is estimated on the registered overlap, the training pair (the
    low-res scan resampled onto the high-res voxels vs those voxels), with the noise-correlation
    factor κ (:func:`~resrecover.trust.maps.calibrate_on_overlap`), so κ fits the upsampled
    low-res scan rather than the config's FDK value. The whole recovered grid (or the
    ROI) is then compared with the low-res scan resampled the same way as for the recovery
    (:class:`resrecover.ownscan.grid.UpsampledLow`), with ``target_sigma_um = 0`` (σ is relative to the
    high-res scan). No ensemble: ``disagreement`` is all NaN. In memory (whole recovered volume).

    Returns
    -------
    dict with ``blur_sigma_um``, ``noise_correlation`` and the residual's median.
    """
    from ..io import open_volume
    from ..ownscan.grid import UpsampledLow
    from ..ownscan.recovery import plan_large_fov
    from ..ownscan.registration import load_registration
    from .maps import calibrate_on_overlap

    registration = load_registration(registration_path)
    voxel = float(registration.high_voxel_um)
    lres, _ = read_volume(training_lres_path)
    hres, _ = read_volume(training_hres_path)
    sigma, kappa = calibrate_on_overlap(hres, lres, voxel)
    del lres, hres
    with open_volume(low_path, low_dataset, registration.low_voxel_um) as low:
        plan = plan_large_fov(low, registration, roi=roi)
        (z0, z1), (y0, y1), (x0, x1) = plan.roi
        low_on_grid = UpsampledLow(low, plan.grid)[z0:z1, y0:y1, x0:x1]
    recovered, _ = read_volume(recovered_path)
    if recovered.shape != low_on_grid.shape:
        raise TrustError(
            f"{recovered_path}: shape {recovered.shape} differs from the low-res scan on its grid {low_on_grid.shape}; "
            "expected the recovery of this pair and ROI"
        )
    block = config["trust"]
    residual, noise = residual_map(
        recovered, low_on_grid, voxel, sigma, 0.0,
        window_um=float(block["residual_window_um"]) or None,
        noise_block_um=float(block["noise_block_um"]),
        noise_correlation=kappa,
    )
    write_trust_maps(
        output_path, residual, None, noise, voxel,
        blur_sigma_um=sigma, target_sigma_um=0.0, noise_correlation=kappa,
        recovered=str(recovered_path), low=str(low_path), config_hash=config_hash(config), **provenance,
    )
    summary = {"blur_sigma_um": sigma, "noise_correlation": kappa, "residual_median": float(np.nanmedian(residual))}
    log.info("%s: %s", output_path, summary)
    return summary
