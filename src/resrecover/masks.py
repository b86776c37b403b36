"""Geometric masks shared by every stage (one home: the foam cylinder and the reconstructable FOV)."""

from __future__ import annotations

import numpy as np


def disc_mask(shape_yx: tuple[int, int], radius_vox: float) -> np.ndarray:
    """Boolean (ny, nx) disc of ``radius_vox`` voxels centred on the grid centre.

    Voxel centres are at ``(i - (n - 1) / 2)`` voxels from the centre (docs/ct_geometry.md#the-frame).
    """
    ny, nx = shape_yx
    y = np.arange(ny) - (ny - 1) / 2
    x = np.arange(nx) - (nx - 1) / 2
    return (y[:, None] ** 2 + x[None, :] ** 2) <= radius_vox**2


def cylinder_mask(shape: tuple[int, int, int], radius_um: float, voxel_size_um: float) -> np.ndarray:
    """Boolean (nz, ny, nx) cylinder about the z axis with radius ``radius_um`` (µm)."""
    disc = disc_mask(shape[1:], radius_um / voxel_size_um)
    return np.broadcast_to(disc, shape).copy()


def foam_mask(config: dict, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """The foam's cylinder on the configured grid (the bulk that porosity is measured against)."""
    shape = tuple(shape or config["volume_shape"])
    return cylinder_mask(shape, config["phantom"]["cylinder_radius_um"], config["voxel_size_um"])


def fov_radius_um(config: dict) -> float:
    """Radius (µm) of the reconstructable circular field of view of the configured cone beam.

    It is the radius whose rays still hit the detector at every angle: the detector half-width seen
    from the source, ``SOD * sin(atan(half_width_det / SDD))``.
    """
    from .ct.geometry import ConeBeamGeometry

    geom = ConeBeamGeometry.from_config(config, n_projections=config["scan"]["n_projections"])
    half_width = geom.n_det_cols * geom.pitch_um / 2
    return float(geom.sod_um * np.sin(np.arctan(half_width / geom.sdd_um)))


def fov_mask(config: dict, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Boolean (nz, ny, nx) reconstructable FOV cylinder (used by the training loss and the metrics)."""
    shape = tuple(shape or config["volume_shape"])
    radius_vox = min(fov_radius_um(config) / config["voxel_size_um"], (min(shape[1:]) - 1) / 2)
    return np.broadcast_to(disc_mask(shape[1:], radius_vox), shape).copy()


def checked_mask(mask, shape: tuple[int, int, int], error: type[Exception] = ValueError) -> np.ndarray:
    """``mask`` broadcast to ``shape`` as a contiguous boolean array (all True when None).

    Raises ``error`` with a one-line message when it does not fit ``shape`` or selects no voxel.
    """
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    try:
        mask = np.broadcast_to(mask, shape)
    except ValueError:
        raise error(f"mask: shape {mask.shape} does not fit the volume shape {shape}") from None
    if not mask.any():
        raise error("mask: selects no voxel; expected the reconstructable FOV")
    return np.ascontiguousarray(mask)
