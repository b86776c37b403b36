"""The evaluation stage's entry points (workflow/rules/evaluate.smk; docs/design.md#evaluation): files in,
files out, one call per rule.

- :func:`segment_ground_truth`: rule ``segment_ground_truth``, the ground truth's pores (the
  reference every other volume is matched to);
- :func:`evaluate_volume`: rule ``evaluate_volume``, everything measured on one recovered (or FDK)
  volume: image metrics, Gaussian-fit curve, FSC, pores, matching and the pore summary;
- :func:`collect_pore_tables`: rule ``collect_pore_tables``, the summary tables of the study.

Every per-volume CSV already carries the final tables' key columns (``method``, ``realization``,
``sigma_um``), so collecting is a concatenation.

Masks: image metrics and the Gaussian fit are taken inside the reconstructable field of view
intersected with the foam's cylinder (``fov_mask ∩ foam_mask``): the foam is what the study is
about, and the flat air around it would reward plain denoising; FSC uses the whole volume (its
Fourier transform needs the full grid; the resolution module tapers the faces). Pores are
segmented and porosity measured inside the foam's cylinder.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import ResrecoverError
from ..config import config_hash
from ..io import atomic_write_csv, read_volume
from ..masks import foam_mask as config_foam_mask
from ..masks import fov_mask as config_fov_mask
from .pores import (
    SUMMARY_KEYS,
    annotate_matches,
    match_pores,
    pore_table,
    pores_summary,
    porosity,
    read_edge_cut,
    read_labels,
    size_histogram,
    write_labels,
)
from .segmentation import segment_pores

log = logging.getLogger(__name__)

KEY_COLUMNS = ["method", "realization", "sigma_um"]
#: Columns of results/tables/pores_summary.csv (docs/results.md#tables).
PORES_SUMMARY_COLUMNS = [*KEY_COLUMNS, *SUMMARY_KEYS]
GROUND_TRUTH = "ground_truth"


class EvaluationError(ResrecoverError):
    """Inputs of an evaluation that do not fit together (shapes, voxel sizes, tables)."""


def _keyed(df: pd.DataFrame, method: str, realization: str, sigma_um: float) -> pd.DataFrame:
    """``df`` with the key columns method, realization, sigma_um in front."""
    out = df.copy()
    out.insert(0, "sigma_um", float(sigma_um))
    out.insert(0, "realization", realization)
    out.insert(0, "method", method)
    return out


def _write_pore_outputs(
    paths, labels, voxel_size_um: float, table: pd.DataFrame, summary: dict, config: dict, source,
    method: str, realization: str, key_sigma_um: float, edge_cut=None, **label_attrs,
) -> None:
    """Write a volume's labels, pore table and pores-summary row (``paths``: in this order).

    The labels carry the method, realization, ``label_attrs``, the config hash and the ``source``
    path as attributes; the table and the row are keyed by method, realization and ``key_sigma_um``.
    """
    labels_path, pores_path, summary_path = paths
    write_labels(
        labels_path, labels, voxel_size_um, edge_cut=edge_cut, method=method, realization=realization, **label_attrs,
        config_hash=config_hash(config), source=str(source),
    )
    atomic_write_csv(_keyed(table, method, realization, key_sigma_um), pores_path)
    row = pd.DataFrame([{"method": method, "realization": realization, "sigma_um": key_sigma_um, **summary}])
    atomic_write_csv(row[PORES_SUMMARY_COLUMNS], summary_path)


def _voxel_size(attrs: dict, config: dict, path) -> float:
    voxel_size_um = float(attrs.get("voxel_size_um", config["voxel_size_um"]))
    if not np.isclose(voxel_size_um, config["voxel_size_um"], rtol=1e-6):
        raise EvaluationError(
            f"{path}: voxel_size_um {voxel_size_um:g} differs from the config's voxel_size_um "
            f"{config['voxel_size_um']:g}; expected the volume of this config"
        )
    return voxel_size_um


def evaluation_masks(config: dict, shape) -> tuple[np.ndarray, np.ndarray]:
    """(foam, metric mask): the foam cylinder where pores are searched, and its part inside the
    reconstructable field of view where the image metrics and the Gaussian fit are computed."""
    foam = config_foam_mask(config, shape)
    return foam, foam & config_fov_mask(config, shape)


def segmentation_settings(config: dict) -> dict:
    """The settings of :func:`segment_pores` that come from the config (the same for every volume)."""
    return {"min_pore_volume_voxels": int(config["evaluation"]["min_pore_volume_voxels"])}


def segment_ground_truth(
    ground_truth_path: str | Path,
    pores_path: str | Path,
    labels_path: str | Path,
    summary_path: str | Path,
    config: dict,
    realization: str,
) -> dict:
    """Segment the ground-truth reconstruction: pore table, labels and its pores_summary row.

    The summary row has method ``ground_truth``, ``sigma_um`` NaN, recovery 100%, porosity error 0,
    every pore matched (the ground truth against itself). Returns the summary dict.
    """
    t0 = time.perf_counter()
    volume, attrs = read_volume(ground_truth_path)
    voxel_size_um = _voxel_size(attrs, config, ground_truth_path)
    mask = config_foam_mask(config, volume.shape)
    labels, edge_cut = segment_pores(volume, mask, voxel_size_um, denoise=False, return_edge_cut=True,
                                     **segmentation_settings(config))
    del volume
    table = pore_table(labels, voxel_size_um)
    summary = pores_summary(table, labels, mask, table, porosity(labels, mask), matching=None)
    table["matched_gt_label"] = table["label"]
    table["match_iou"] = 1.0
    table["diameter_error_um"] = 0.0
    _write_pore_outputs(
        (labels_path, pores_path, summary_path), labels, voxel_size_um, table, summary, config, ground_truth_path,
        GROUND_TRUTH, realization, np.nan, edge_cut=edge_cut,
    )
    log.info(
        "ground truth %s: %d pores, porosity %.4f, sphericity %.3f ± %.3f (%.1f s)",
        realization,
        summary["n_pores"],
        summary["porosity"],
        summary["sphericity_mean"],
        summary["sphericity_std"],
        time.perf_counter() - t0,
    )
    return summary


def evaluate_volume(
    volume_path: str | Path,
    ground_truth_path: str | Path,
    ground_truth_labels_path: str | Path,
    ground_truth_pores_path: str | Path,
    config: dict,
    method: str,
    realization: str,
    sigma_um: float,
    denoise: bool,
    pores_path: str | Path,
    labels_path: str | Path,
    metrics_path: str | Path,
    gaussian_fit_path: str | Path,
    fsc_path: str | Path,
    pores_summary_path: str | Path,
    workers: int = 1,
) -> dict:
    """Evaluate one volume against the ground truth and write the six outputs of rule ``evaluate_volume``.

    Parameters
    ----------
    volume_path : the recovered (or un-recovered FDK) volume, HDF5 material fraction.
    ground_truth_path : the ground-truth reconstruction.
    ground_truth_labels_path, ground_truth_pores_path : outputs of :func:`segment_ground_truth`.
    config : validated config (evaluation.*, voxel_size_um, phantom cylinder, scan geometry).
    method, realization, sigma_um : the key columns written into every CSV.
    denoise : non-local means before segmenting (the study does it for Richardson-Lucy only).
    pores_path : per-pore CSV (pore table + ``matched_gt_label`` (0 = spurious), ``match_iou``,
        ``diameter_error_um``).
    labels_path : int32 label volume (HDF5 dataset ``volume``).
    metrics_path : method, realization, sigma_um, mse, psnr, ssim.
    gaussian_fit_path : method, realization, sigma_um, blur_sigma_um, mse.
    fsc_path : method, realization, sigma_um, frequency, fsc.
    pores_summary_path : one row of results/tables/pores_summary.csv.
    workers : threads for the FFTs.

    Returns
    -------
    dict with the image metrics and the pore summary.
    """
    from .metrics import image_metrics
    from .resolution import blur_sigmas_um, fourier_shell_correlation, gaussian_fit

    t0 = time.perf_counter()
    ev = config["evaluation"]
    volume, attrs = read_volume(volume_path)
    reference, ref_attrs = read_volume(ground_truth_path)
    if volume.shape != reference.shape:
        raise EvaluationError(
            f"{volume_path}: shape {volume.shape} differs from the ground truth {ground_truth_path} "
            f"{reference.shape}; expected volumes on the same grid"
        )
    voxel_size_um = _voxel_size(attrs, config, volume_path)
    _voxel_size(ref_attrs, config, ground_truth_path)
    foam, metric_mask = evaluation_masks(config, volume.shape)

    metrics = image_metrics(volume, reference, ev["data_range"], ev["ssim_window_px"], metric_mask)
    atomic_write_csv(_keyed(pd.DataFrame([metrics]), method, realization, sigma_um), metrics_path)
    t1 = time.perf_counter()

    sigmas = blur_sigmas_um(ev["gaussian_fit_max_um"], ev["gaussian_fit_step_um"])
    curve = gaussian_fit(volume, reference, voxel_size_um, sigmas, mask=metric_mask, workers=workers)
    atomic_write_csv(_keyed(curve, method, realization, sigma_um), gaussian_fit_path)
    fsc = fourier_shell_correlation(volume, reference, voxel_size_um, workers=workers)
    atomic_write_csv(_keyed(fsc, method, realization, sigma_um), fsc_path)
    del reference
    t2 = time.perf_counter()

    labels, edge_cut = segment_pores(volume, foam, voxel_size_um, denoise=bool(denoise), return_edge_cut=True,
                                     **segmentation_settings(config))
    del volume
    gt_labels, _ = read_labels(ground_truth_labels_path)
    if gt_labels.shape != labels.shape:
        raise EvaluationError(
            f"{ground_truth_labels_path}: shape {gt_labels.shape} differs from the volume's {labels.shape}"
        )
    gt_table = pd.read_csv(ground_truth_pores_path)
    if "diameter_um" not in gt_table or "label" not in gt_table:
        raise EvaluationError(
            f"{ground_truth_pores_path}: columns {list(gt_table.columns)}; expected a pore table with label, diameter_um"
        )
    table = pore_table(labels, voxel_size_um)
    matching = match_pores(labels, gt_labels, edge_cut=edge_cut, gt_edge_cut=read_edge_cut(ground_truth_labels_path))
    summary = pores_summary(table, labels, foam, gt_table, porosity(gt_labels, foam), matching)
    table = annotate_matches(table, matching, gt_table)
    _write_pore_outputs(
        (labels_path, pores_path, pores_summary_path), labels, voxel_size_um, table, summary, config, volume_path,
        method, realization, float(sigma_um), edge_cut=edge_cut, sigma_um=float(sigma_um), denoise=bool(denoise),
    )
    t3 = time.perf_counter()
    rel = matching.pairs["diameter_rel_error"]
    log.info(
        "%s %s sigma %g: mse %.4g psnr %.2f ssim %.4f | %d pores (%.1f%%), matched %d, missed %d, spurious %d, "
        "wrong size %d, "
        "matched diameter error %+.1f%% (median |%.1f|%%), porosity error %+.2f%% | metrics %.1f s, "
        "resolution %.1f s, pores %.1f s",
        method,
        realization,
        sigma_um,
        metrics["mse"],
        metrics["psnr"],
        metrics["ssim"],
        summary["n_pores"],
        summary["recovery_pct"],
        summary["n_matched"],
        summary["n_missed"],
        summary["n_spurious"],
        summary["n_mis_sized"],
        100 * rel.mean() if len(rel) else float("nan"),
        100 * rel.abs().median() if len(rel) else float("nan"),
        summary["porosity_error_pct"],
        t1 - t0,
        t2 - t1,
        t3 - t2,
    )
    return {**metrics, **summary}


# --------------------------------------------------------------------------------------------
# Collecting the study's pore tables
# --------------------------------------------------------------------------------------------


def _read_csvs(paths, what: str) -> pd.DataFrame:
    frames = []
    for path in paths:
        try:
            frames.append(pd.read_csv(path))
        except FileNotFoundError as exc:
            raise EvaluationError(f"{path}: {what} not found") from exc
        except pd.errors.EmptyDataError as exc:
            raise EvaluationError(f"{path}: {what} is empty; expected a header and rows") from exc
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def _require(df: pd.DataFrame, columns, source) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        # the package is not an input Snakemake tracks: tables an earlier version wrote stay "done"
        raise EvaluationError(
            f"{source}: missing column(s) {', '.join(missing)}; has {', '.join(map(str, df.columns))} (written by "
            "an earlier resrecover? rebuild them: snakemake --forcerun segment_ground_truth pair_flag_pores ...)"
        )


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(KEY_COLUMNS, kind="mergesort", na_position="first").reset_index(drop=True)


def _groups(df: pd.DataFrame):
    """(method, realization, sigma_um) groups in table order; NaN sigma (ground truth) kept."""
    return df.groupby(KEY_COLUMNS, sort=False, dropna=False)


def collect_pore_tables(
    summary_paths,
    ground_truth_summary_paths,
    pore_paths,
    ground_truth_pore_paths,
    gaussian_fit_path: str | Path,
    fsc_path: str | Path,
    pores_summary_out: str | Path,
    histogram_out: str | Path,
    gaussian_fit_best_out: str | Path,
    fsc_resolution_out: str | Path,
    bin_um: float,
    fsc_threshold: float = 1 / 7,
) -> None:
    """Write the study's pore and resolution summary tables (rule ``collect_pore_tables``).

    Outputs
    -------
    pores_summary_out : :data:`PORES_SUMMARY_COLUMNS`, ground-truth rows first, then the evaluated
        volumes sorted by method, realization, sigma_um.
    histogram_out : method, realization, sigma_um, bin_start_um, bin_end_um, count; equivalent
        diameters in bins of ``bin_um`` µm with the same edges for every volume (ground truth
        included), empty bins written as 0.
    gaussian_fit_best_out : method, realization, sigma_um, best_blur_sigma_um, best_fwhm_um, mse
        (``resolution.best_gaussian_fit`` of each curve of ``gaussian_fit_path``).
    fsc_resolution_out : method, realization, sigma_um, fsc_threshold, resolution_um
        (``resolution.fsc_resolution`` of each curve of ``fsc_path``).
    """
    from .resolution import best_gaussian_fit, fsc_resolution

    parts = []
    for paths, what in ((ground_truth_summary_paths, "ground-truth pore summary"), (summary_paths, "pore summary")):
        rows = _read_csvs(paths, what)
        if len(rows):
            _require(rows, PORES_SUMMARY_COLUMNS, f"{what} tables")
            parts.append(_sorted(rows[PORES_SUMMARY_COLUMNS]))  # ground truth first, then the volumes
    if not parts:
        raise EvaluationError("no pore summaries to collect; expected at least one per-volume pores_summary.csv")
    summary = pd.concat(parts, ignore_index=True)
    atomic_write_csv(summary, pores_summary_out)

    pores = pd.concat(
        [
            _read_csvs(ground_truth_pore_paths, "ground-truth pore table"),
            _read_csvs(pore_paths, "pore table"),
        ],
        ignore_index=True,
    )
    _require(pores, [*KEY_COLUMNS, "diameter_um"], "pore tables")
    max_um = float(pores["diameter_um"].max()) if len(pores) else 0.0
    diameters = pores.groupby(_volume_key(pores))["diameter_um"]
    hist_parts = []
    # one histogram per volume of the summary, so a volume without any pore still gets its zeros
    for key, row in zip(_volume_key(summary), summary.itertuples(index=False)):
        d = diameters.get_group(key) if key in diameters.groups else []
        hist = size_histogram(d, bin_um=bin_um, max_um=max_um)
        hist_parts.append(_keyed(hist, row.method, row.realization, row.sigma_um))
    atomic_write_csv(pd.concat(hist_parts, ignore_index=True), histogram_out)

    curves = _read_csvs([gaussian_fit_path], "Gaussian-fit table")
    _require(curves, [*KEY_COLUMNS, "blur_sigma_um", "mse"], gaussian_fit_path)
    best = [
        {**dict(zip(KEY_COLUMNS, key)), **best_gaussian_fit(grp[["blur_sigma_um", "mse"]].reset_index(drop=True))}
        for key, grp in _groups(curves)
    ]
    best_df = pd.DataFrame(best, columns=[*KEY_COLUMNS, "best_blur_sigma_um", "best_fwhm_um", "mse"])
    atomic_write_csv(_sorted(best_df), gaussian_fit_best_out)

    fsc = _read_csvs([fsc_path], "FSC table")
    _require(fsc, [*KEY_COLUMNS, "frequency", "fsc"], fsc_path)
    res = [
        {
            **dict(zip(KEY_COLUMNS, key)),
            "fsc_threshold": float(fsc_threshold),
            "resolution_um": float(fsc_resolution(grp[["frequency", "fsc"]].reset_index(drop=True), fsc_threshold)),
        }
        for key, grp in _groups(fsc)
    ]
    res_df = pd.DataFrame(res, columns=[*KEY_COLUMNS, "fsc_threshold", "resolution_um"])
    atomic_write_csv(_sorted(res_df), fsc_resolution_out)


def _volume_key(df: pd.DataFrame) -> pd.Series:
    """One string per row naming its volume, "method/realization/sigma" (NaN sigma: the ground truth)."""
    sigma = df["sigma_um"].map(lambda v: "" if pd.isna(v) else f"{float(v):g}")
    return df["method"].astype(str) + "/" + df["realization"].astype(str) + "/" + sigma
