"""The synthetic own-scans example (docs/own_scans.md#the-synthetic-example): a pair with a known answer.

:func:`make_multiscale_pair` makes a microscopist's two scans of one object: a low-resolution scan
of the whole field of view (blurred, block-averaged) and a high-resolution scan of an interior
box at a known offset, each with its own noise (frames of :mod:`resrecover.ownscan.grid`).
:func:`write_multiscale_example` cuts such a pair out of a phantom file and writes it with the
answer (rule ``multiscale_example``); :func:`registration_error_table` and
:func:`example_recovery_metrics` score the registration and the recovery (inside the training
region and, the point of the exercise, outside it) against the phantom. :func:`random_voids` and
:func:`voxelize_voids` make a small foam block to cut from in tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from .. import ResrecoverError
from ..evaluate.metrics import image_metrics
from ..io import atomic_output, atomic_write_csv, open_volume, read_volume, write_volume_as
from ..phantom import voxelize_foam
from .grid import UPSAMPLING_ORDER, block_mean, resample_low_to_high
from .registration import as_registration


# --------------------------------------------------------------------------------------------
# Synthetic scans
# --------------------------------------------------------------------------------------------


def _interior_start(n: int, m: int, ratio: int) -> int:
    """A centred start for an interior box of ``m`` in ``n`` voxels, off the low-res grid."""
    start = (n - m) // 2
    if start % ratio == 0:  # a whole number of low-res voxels would make the registration too easy
        start += 1
    return start


def random_voids(extent_um, n_voids: int, radius_um: tuple[float, float], seed: int,
                 gap_um: float = 0.0, max_tries: int = 200) -> np.ndarray:
    """Non-overlapping spherical voids in a box, as an (n, 4) array ``(x, y, z, radius)`` in µm.

    Centres lie anywhere in the box ``[0, extent)`` (z, y, x), so voids are cut by its faces like a
    field of view cuts a sample. Radii are uniform in ``radius_um`` and placed largest first; a void
    that finds no free place in ``max_tries`` draws is dropped (fewer than ``n_voids`` come back).
    """
    rng = np.random.default_rng(seed)
    extent = np.asarray(extent_um, dtype=np.float64)
    radii = np.sort(rng.uniform(radius_um[0], radius_um[1], size=int(n_voids)))[::-1]
    placed = np.empty((0, 4))
    for r in radii:
        trials = rng.uniform(0.0, 1.0, size=(max_tries, 3)) * extent[::-1]  # (x, y, z)
        if len(placed):
            d = np.linalg.norm(trials[:, None, :] - placed[None, :, :3], axis=2)
            ok = np.all(d >= placed[None, :, 3] + r + gap_um, axis=1)
            if not ok.any():
                continue
            centre = trials[np.argmax(ok)]
        else:
            centre = trials[0]
        placed = np.vstack([placed, np.append(centre, r)])
    return placed


def voxelize_voids(spheres_um: np.ndarray, shape, voxel_um: float, origin_um=(0.0, 0.0, 0.0),
                   supersampling: int = 2) -> np.ndarray:
    """Material fraction (1 material, 0 void) of a block of foam on a grid, with partial volumes.

    Parameters
    ----------
    spheres_um : (n, 4) non-overlapping voids ``(x, y, z, radius)`` in µm (:func:`random_voids`).
    shape : (nz, ny, nx) grid.
    voxel_um : voxel edge (µm).
    origin_um : (z, y, x) position (µm) of the grid's voxel-0 corner in the spheres' frame; any
        real value, so grids can be placed at sub-voxel offsets of each other.
    supersampling : sub-samples per axis and voxel (see :func:`resrecover.phantom.voxelize_foam`).
    """
    shape = tuple(int(n) for n in shape)
    centre_zyx = np.asarray(origin_um, dtype=np.float64) + np.asarray(shape) * voxel_um / 2.0
    rel = np.asarray(spheres_um, dtype=np.float64).reshape(-1, 4).copy()
    rel[:, :3] -= centre_zyx[::-1]
    # The foam voxelizer cuts a cylinder about z; one far larger than the block cuts nothing.
    huge_radius = 10.0 * float(np.linalg.norm(np.asarray(shape) * voxel_um)) + 1.0
    return voxelize_foam(rel, shape, voxel_um, huge_radius, supersampling=supersampling)


def make_multiscale_pair(
    volume: np.ndarray,
    voxel_um: float,
    ratio: int = 3,
    roi_start_vox=None,
    roi_shape_vox=None,
    blur_sigma_um: float | None = None,
    noise: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """A low-resolution large-FOV scan and a high-resolution interior scan of the same object.

    Parameters
    ----------
    volume : (nz, ny, nx) object on a fine grid (e.g. a foam's material fraction).
    voxel_um : its voxel edge (µm); also the high-resolution scan's voxel.
    ratio : integer resolution ratio; the low-res voxel is ``ratio · voxel_um``.
    roi_start_vox : (z, y, x) first voxel (fine grid) of the high-res sub-volume; default: about the
        centre, moved so that no component is a multiple of ``ratio`` (the true offset is then a
        non-integer number of low-res voxels).
    roi_shape_vox : (z, y, x) shape of the high-res sub-volume (default: a third of the volume).
    blur_sigma_um : Gaussian blur (µm) of the low-res scan before downsampling (the coarser
        system's resolution); default ``ratio · voxel_um / 2``.
    noise : standard deviation of the Gaussian noise added to each scan (volume units).
    seed : seeds the two independent noise fields.

    Returns
    -------
    low : (nz//ratio, ny//ratio, nx//ratio) float32, the whole field of view blurred, block-averaged
        by ``ratio`` (voxel ``ratio · voxel_um``, same corner origin) and noisy.
    high : ``roi_shape_vox`` float32, ``volume`` at the ROI plus its own noise.
    true_offset_um : (z, y, x) µm of the high-res origin in the low-res frame (``roi_start · voxel_um``).
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise ResrecoverError(f"make_multiscale_pair: volume of shape {volume.shape}; expected 3D")
    ratio = int(ratio)
    if ratio < 2:
        raise ResrecoverError(f"make_multiscale_pair: ratio={ratio}; expected an integer >= 2")
    # The default start centres the default shape (also when another shape is given).
    default_shape = tuple(max(ratio * 4, n // 3) for n in volume.shape)
    default_start = tuple(_interior_start(n, m, ratio) for n, m in zip(volume.shape, default_shape))
    start = tuple(int(s) for s in (roi_start_vox if roi_start_vox is not None else default_start))
    roi = tuple(int(s) for s in (roi_shape_vox if roi_shape_vox is not None else default_shape))
    if any(s < 0 or s + m > n for s, m, n in zip(start, roi, volume.shape)):
        raise ResrecoverError(
            f"make_multiscale_pair: ROI start {start} + shape {roi} leaves the volume {volume.shape}"
        )
    sigma_um = ratio * voxel_um / 2.0 if blur_sigma_um is None else float(blur_sigma_um)
    blurred = ndimage.gaussian_filter(volume, sigma_um / voxel_um, mode="nearest") if sigma_um > 0 else volume
    low = block_mean(blurred, ratio)
    high = volume[start[0] : start[0] + roi[0], start[1] : start[1] + roi[1], start[2] : start[2] + roi[2]].copy()
    if noise > 0:
        low += np.random.default_rng([seed, 0]).normal(0.0, noise, low.shape).astype(np.float32)
        high += np.random.default_rng([seed, 1]).normal(0.0, noise, high.shape).astype(np.float32)
    true_offset = tuple(float(s * voxel_um) for s in start)
    return low, high, true_offset


def write_multiscale_example(phantom_path, out_low, out_high, out_truth, *, ratio: int = 3,
                             high_extent_um: float | None = None, noise: float = 0.05,
                             stage_error_um=(4.0, -5.0, 3.0), seed: int = 0) -> dict:
    """A synthetic "own scans" pair cut out of a phantom, with the answer.

    The phantom (material fraction, voxel ``Δ``) is the truth. The low-res scan is the whole
    phantom blurred by a Gaussian of ``ratio·Δ/2`` µm and block-averaged by ``ratio`` (voxel
    ``ratio·Δ``, corners shared), written as an ImageJ TIFF; the high-res scan a centred cube of
    ``high_extent_um`` (default half the FOV) at voxel ``Δ`` whose corner is a non-integer number of
    low-res voxels from the low-res corner, as HDF5. Each gets its own Gaussian noise (``noise``,
    material-fraction units; seeded). ``truth.json`` holds the true offset, a stage offset off by
    ``stage_error_um`` (as motor positions are) and where the high-res scan lies in the phantom.

    Returns the contents of ``truth.json``.
    """
    volume, attrs = read_volume(phantom_path)
    voxel = float(attrs["voxel_size_um"])
    ratio = int(ratio)
    n = np.asarray(volume.shape) // ratio * ratio
    volume = volume[: n[0], : n[1], : n[2]]
    if high_extent_um is None:
        m = n // 2
    else:
        m = np.minimum(int(round(high_extent_um / voxel)), n - 4 * ratio)
    m = np.broadcast_to(m, (3,))
    if np.any(m < 8):
        raise ResrecoverError(f"multiscale_example.high_extent_um: a {tuple(m)}-voxel high-res scan is too small; "
                              "expected at least 8 voxels per axis")
    start = tuple(_interior_start(int(a), int(b), ratio) for a, b in zip(n, m))
    low, high, offset = make_multiscale_pair(volume, voxel, ratio=ratio, roi_start_vox=start,
                                             roi_shape_vox=tuple(int(v) for v in m), noise=noise, seed=seed)
    write_volume_as(out_low, low, ratio * voxel)
    write_volume_as(out_high, high, voxel, seed=seed, phantom=str(phantom_path))
    truth = {
        "low": Path(out_low).name, "high": Path(out_high).name, "phantom": str(phantom_path),
        "ratio": ratio, "low_voxel_um": ratio * voxel, "high_voxel_um": voxel,
        "true_offset_um": list(offset),
        "stage_error_um": [float(e) for e in stage_error_um],
        "stage_offset_um": [o + float(e) for o, e in zip(offset, stage_error_um)],
        "high_start_vox": list(start), "high_shape": [int(v) for v in m],
        "blur_sigma_um": ratio * voxel / 2.0, "noise": float(noise), "seed": int(seed),
        "origin": "voxel-0 outer corner (resrecover.ownscan.grid)",
    }
    with atomic_output(out_truth) as tmp:
        Path(tmp).write_text(json.dumps(truth, indent=2) + "\n")
    return truth


# --------------------------------------------------------------------------------------------
# Scores against the known answer
# --------------------------------------------------------------------------------------------


def registration_error_table(registration, truth_path, out_csv=None):
    """The registration's error against the known offset, per axis and as a distance.

    Columns: ``axis`` (z, y, x, distance), ``true_offset_um``, ``stage_offset_um``,
    ``registered_offset_um``, ``error_um``, ``error_high_vox``, ``stage_error_um``, ``peak``.
    Written to ``out_csv`` when given; returned as a DataFrame.
    """
    registration = as_registration(registration)
    truth = json.loads(Path(truth_path).read_text())
    true = np.asarray(truth["true_offset_um"], dtype=np.float64)
    stage = np.asarray(truth["stage_offset_um"], dtype=np.float64)
    found = np.asarray(registration.offset_um, dtype=np.float64)
    rows = [
        {"axis": axis, "true_offset_um": t, "stage_offset_um": s, "registered_offset_um": f, "error_um": f - t,
         "error_high_vox": (f - t) / registration.high_voxel_um, "stage_error_um": s - t}
        for axis, t, s, f in zip("zyx", true, stage, found)
    ]
    rows.append({"axis": "distance", "true_offset_um": float(np.linalg.norm(true)),
                 "stage_offset_um": float(np.linalg.norm(stage)), "registered_offset_um": float(np.linalg.norm(found)),
                 "error_um": float(np.linalg.norm(found - true)),
                 "error_high_vox": float(np.linalg.norm(found - true)) / registration.high_voxel_um,
                 "stage_error_um": float(np.linalg.norm(stage - true))})
    table = pd.DataFrame(rows)
    table["peak"] = registration.peak
    if out_csv is not None:
        atomic_write_csv(table, out_csv)
    return table


def truth_on_grid(truth_all: np.ndarray, truth_attrs: dict, attrs: dict, shape, path) -> tuple[np.ndarray, tuple]:
    """``(truth, crop)``: the phantom where a recovered volume (attributes ``attrs``, ``shape``) lies,
    and the slices of the recovered volume it covers (the recovery's grid is the phantom's, shifted
    by a whole number of voxels; ResrecoverError naming ``path`` otherwise)."""
    voxel = float(attrs["voxel_size_um"])
    origin = np.asarray(attrs["origin_um"], dtype=np.float64)
    shift = np.round(origin / voxel).astype(int)
    if np.any(np.abs(origin - shift * voxel) > 0.25 * voxel) or abs(voxel - float(truth_attrs["voxel_size_um"])) > 1e-6:
        raise ResrecoverError(f"{path}: grid (origin {origin} µm, voxel {voxel:g} µm) is not the phantom's grid")
    box = [(max(0, s), min(t, s + n)) for s, n, t in zip(shift, shape, truth_all.shape)]
    truth = truth_all[box[0][0] : box[0][1], box[1][0] : box[1][1], box[2][0] : box[2][1]]
    return truth, tuple(slice(a - s, b - s) for (a, b), s in zip(box, shift))


def example_recovery_metrics(recovered: dict, phantom_path, low_path, out_csv=None, *, data_range: float = 1.0,
                             window_px: int = 7, order: int = UPSAMPLING_ORDER):
    """Score large-FOV recoveries against the phantom, inside and outside the training region.

    Parameters
    ----------
    recovered : ``{method: path}`` of :func:`resrecover.ownscan.recovery.recover_large_fov` HDF5
        outputs (with ``origin_um``, ``high_start_vox``, ``high_shape``).
    phantom_path : the truth on the high-res grid (its corner is the low-res corner).
    low_path : the low-res scan; its plain upsampling onto the same grid is scored too (method
        ``upsampled``, the baseline a recovery has to beat).

    Returns
    -------
    DataFrame with ``method``, ``region`` (``training`` = inside the high-res scan the model was
    trained on, ``outside`` = the rest of the field of view), ``mse``, ``psnr``, ``ssim``,
    ``n_voxels``; written to ``out_csv`` when given.
    """
    truth_all, truth_attrs = read_volume(phantom_path)
    rows = []
    baseline_done = False
    for method, path in recovered.items():
        volume, attrs = read_volume(path)
        voxel = float(attrs["voxel_size_um"])
        origin = np.asarray(attrs["origin_um"], dtype=np.float64)
        truth, crop = truth_on_grid(truth_all, truth_attrs, attrs, volume.shape, path)
        volume = volume[crop]
        training = np.zeros(truth.shape, dtype=bool)
        start = np.asarray(attrs["high_start_vox"], dtype=int) - [c.start for c in crop]
        stop = start + np.asarray(attrs["high_shape"], dtype=int)
        training[tuple(slice(max(a, 0), max(b, 0)) for a, b in zip(start, stop))] = True
        candidates = [(method, volume)]
        if not baseline_done:
            with open_volume(low_path, voxel_size_um=float(attrs["low_voxel_um"])) as low:
                upsampled = resample_low_to_high(low, origin + np.asarray([c.start for c in crop]) * voxel,
                                                 float(attrs["low_voxel_um"]), voxel, truth.shape, order=order)
            candidates.insert(0, ("upsampled", upsampled))
            baseline_done = True
        for name, candidate in candidates:
            for region, mask in (("training", training), ("outside", ~training)):
                if mask.sum() == 0:
                    continue
                scores = image_metrics(candidate, truth, data_range, window_px=window_px, mask=mask)
                rows.append({"method": name, "region": region, **scores, "n_voxels": int(mask.sum())})
    table = pd.DataFrame(rows, columns=["method", "region", "mse", "psnr", "ssim", "n_voxels"])
    if out_csv is not None:
        atomic_write_csv(table, out_csv)
    return table


#: columns of results/pairs/example/trust_metrics.csv
TRUST_METRIC_COLUMNS = ["method", "region", "quantity", "value", "n"]


def example_trust_metrics(pores: dict, labels: dict, phantom_path, config: dict, out_csv=None) -> pd.DataFrame:
    """Score the pair classifier's verdicts (rule ``pair_flag_pores``) against the phantom.

    Every recovered pore is matched one to one with the phantom's pores, both segmented with the
    pair's recipe (:func:`resrecover.ownscan.pore_flags.segment_pair_pores`; the phantom's pores cut
    by the faces kept) on the recovery's grid; no partner = truly spurious.

    Parameters
    ----------
    pores, labels : ``{method: path}`` of the per-pore CSVs and the recovery's label volumes.
    phantom_path : the truth on the high-res grid.

    Returns
    -------
    Long table (:data:`TRUST_METRIC_COLUMNS`; ``n`` = the pores a value is taken over). Regions:
    ``outside`` (no voxel in the overlap: the model never saw a label there), ``scored`` (every pore
    the flag list is drawn from) with ``n_pores``, ``n_spurious``, ``roc_auc_spurious``
    (``p_spurious``), ``roc_auc_size_baseline`` (smaller = more suspect), ``fdr_setting``,
    ``fdr_achieved``, ``power``, ``n_flagged``; ``overlap`` (the labelled pores) with ``n_pores``,
    ``n_spurious``, ``n_spurious_high_res`` and ``label_agreement`` (share of them whose
    high-res verdict is the phantom's). Written to ``out_csv`` when given.
    """
    from ..evaluate.pores import match_pores, read_labels
    from ..trust.conformal import fdr_and_power
    from ..trust.validate import roc_auc
    from .pore_flags import segment_pair_pores

    truth_all, truth_attrs = read_volume(phantom_path)
    alpha = float(config["trust"]["classifier"]["fdr"])
    rows = []
    for method, path in pores.items():
        table = pd.read_csv(path)
        label_volume, attrs = read_labels(labels[method])  # with the recovery's origin_um
        truth, crop = truth_on_grid(truth_all, truth_attrs, attrs, label_volume.shape, labels[method])
        # every pore of the truth, those cut by the faces too: a recovered pore near a face is not
        # spurious because its true partner touches the face
        truth_labels = segment_pair_pores(truth, float(truth_attrs["voxel_size_um"]), config, keep_cut_pores=True)
        matching = match_pores(label_volume[crop], truth_labels)
        spurious = matching.gt_label_of(table["label"]) == 0
        p = table["p_spurious"].to_numpy(dtype=np.float64)
        flagged = table["flagged"].astype(bool).to_numpy()
        regions = {"outside": (table["overlap_share"] == 0).to_numpy(),
                   "scored": (table["role"] == "scored").to_numpy()}
        for region, keep in regions.items():
            y, n = spurious[keep], int(keep.sum())
            fdr, power, n_flagged = fdr_and_power(flagged[keep], y)
            values = {
                "n_pores": (n, n), "n_spurious": (int(y.sum()), n),
                "roc_auc_spurious": (roc_auc(p[keep], y), int(np.isfinite(p[keep]).sum())),
                "roc_auc_size_baseline": (roc_auc(-table["diameter_um"].to_numpy(dtype=np.float64)[keep], y), n),
                "fdr_setting": (alpha, n), "fdr_achieved": (fdr, n_flagged), "power": (power, int(y.sum())),
                "n_flagged": (n_flagged, n),
            }
            rows += [{"method": method, "region": region, "quantity": q, "value": float(v), "n": k}
                     for q, (v, k) in values.items()]
        labelled = table["matched_high_res_label"].notna().to_numpy()
        high_res_spurious = (table["matched_high_res_label"] == 0).to_numpy()
        n = int(labelled.sum())
        agreement = float((high_res_spurious == spurious)[labelled].mean()) if n else float("nan")
        rows += [{"method": method, "region": "overlap", "quantity": q, "value": float(v), "n": n}
                 for q, v in (("n_pores", n), ("n_spurious", int(spurious[labelled].sum())),
                              ("n_spurious_high_res", int(high_res_spurious[labelled].sum())),
                              ("label_agreement", agreement))]
    out = pd.DataFrame(rows, columns=TRUST_METRIC_COLUMNS)
    if out_csv is not None:
        atomic_write_csv(out, out_csv)
    return out
