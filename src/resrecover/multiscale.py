"""Synthetic multiscale pairs (docs/own_scans.md): a large-FOV low-resolution scan and a high-resolution interior scan.

They stand in for a microscopist's two scans in tests and in the shipped example, with a known
answer for registration.

Frames and the offset (the convention of :mod:`resrecover.register`): each volume's frame has its
origin at the outer corner of its voxel ``(0, 0, 0)``; voxel ``i`` spans ``[i·Δ, (i+1)·Δ)`` µm along
each axis. The offset of a pair is the position (µm, z-y-x) of the high-resolution volume's origin in
the low-resolution volume's frame.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from . import ResrecoverError


def block_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    """Mean over non-overlapping ``factor``³ blocks; trailing voxels that fill no block are dropped.

    Output voxel ``k`` is the mean of input voxels ``[k·factor, (k+1)·factor)`` along each axis, so
    both grids share their corner origin.
    """
    factor = int(factor)
    if factor < 1:
        raise ResrecoverError(f"block_mean: factor={factor}; expected an integer >= 1")
    volume = np.asarray(volume, dtype=np.float32)
    n = [s // factor for s in volume.shape]
    if min(n) < 1:
        raise ResrecoverError(f"block_mean: volume {volume.shape} is smaller than one {factor}³ block")
    v = volume[: n[0] * factor, : n[1] * factor, : n[2] * factor]
    return v.reshape(n[0], factor, n[1], factor, n[2], factor).mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)


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
    from .phantom import voxelize_foam

    shape = tuple(int(n) for n in shape)
    centre_zyx = np.asarray(origin_um, dtype=np.float64) + np.asarray(shape) * voxel_um / 2.0
    rel = np.asarray(spheres_um, dtype=np.float64).reshape(-1, 4).copy()
    rel[:, :3] -= centre_zyx[::-1]
    # The foam voxelizer cuts a cylinder about z; one far larger than the block cuts nothing.
    huge_radius = 10.0 * float(np.linalg.norm(np.asarray(shape) * voxel_um)) + 1.0
    return voxelize_foam(rel, shape, voxel_um, huge_radius, supersampling=supersampling)


def _default_roi(shape, ratio: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    roi_shape = tuple(max(ratio * 4, n // 3) for n in shape)
    start = []
    for n, m in zip(shape, roi_shape):
        s = (n - m) // 2
        if s % ratio == 0:  # keep the offset a non-integer number of low-res voxels
            s += 1
        start.append(s)
    return tuple(start), roi_shape


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
    default_start, default_shape = _default_roi(volume.shape, ratio)
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


def write_example_pair(
    out_dir,
    seed: int = 0,
    fov_um: float = 144.0,
    voxel_um: float = 1.0,
    ratio: int = 3,
    noise: float = 0.1,
    stage_error_um=(4.0, -5.0, 3.0),
) -> dict:
    """Write a synthetic "your own scans" example: ``low.tif``, ``high.h5`` and ``truth.json`` in ``out_dir``.

    The low-res scan is an ImageJ TIFF of ``ratio · voxel_um`` voxels over the whole ``fov_um``³ foam
    block; the high-res scan an HDF5 interior volume of ``voxel_um`` voxels (a third of the field of
    view, off the low-res grid). ``truth.json`` holds the true offset and a "stage" offset that is
    off by ``stage_error_um``, as motor positions are.

    Returns
    -------
    The contents of ``truth.json`` (paths, voxel sizes, ``true_offset_um``, ``stage_offset_um``).
    """
    import json
    from pathlib import Path

    from .io.atomic import atomic_output
    from .io.formats import write_volume_as

    out = Path(out_dir)
    n = int(round(fov_um / voxel_um))
    n -= n % ratio
    extent = (n * voxel_um,) * 3
    mean_radius = 8.0 * voxel_um
    # Enough voids for roughly 30 % porosity, as in a foam.
    n_voids = int(0.3 * np.prod(extent) / (4.0 / 3.0 * np.pi * mean_radius**3))
    voids = random_voids(extent, n_voids, (0.5 * mean_radius, 1.5 * mean_radius), seed=seed)
    volume = voxelize_voids(voids, (n, n, n), voxel_um)
    low, high, offset = make_multiscale_pair(volume, voxel_um, ratio=ratio, noise=noise, seed=seed)
    write_volume_as(out / "low.tif", low, ratio * voxel_um)
    write_volume_as(out / "high.h5", high, voxel_um, seed=seed)
    truth = {
        "low": "low.tif", "high": "high.h5",
        "low_voxel_um": ratio * voxel_um, "high_voxel_um": voxel_um,
        "true_offset_um": list(offset),
        "stage_offset_um": [o + e for o, e in zip(offset, stage_error_um)],
        "origin": "voxel-0 outer corner (resrecover.register)",
    }
    with atomic_output(out / "truth.json") as tmp:
        tmp.write_text(json.dumps(truth, indent=2) + "\n")
    return truth
