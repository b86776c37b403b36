"""RTK (``itk-rtk``, CPU) forward projection and FDK for :class:`ConeBeamGeometry` (docs/ct_geometry.md#rtk).

RTK rotates about its y axis with the source on +z at 0°; our frame (ASTRA's) rotates about z with
the source on -y. The proper rotation (x, y, z) → (x, z, -y) maps source, detector columns and rows
exactly, so only the volume's y axis is reversed: a z-y-x array goes to RTK as
``vol.transpose(1, 0, 2)[::-1]`` and comes back as ``rec[::-1].transpose(1, 0, 2)``. Angles pass
unchanged (degrees), projections need no flip: RTK's numpy stack is (angle, row, column) like ours.

The first use of ``itk.RTK`` in a process costs 10–25 s of wrapper loading (docs/ct_geometry.md#rtk);
later calls cost nothing, so a process should do all its scans and reconstructions in one go.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable

import numpy as np

from .geometry import ConeBeamGeometry

log = logging.getLogger(__name__)


_load_seconds: float | None = None


def _rtk():
    """Import ``itk`` and ``itk.RTK``; the first call in a process loads the wrappers (logged)."""
    global _load_seconds
    import itk
    from itk import RTK

    if _load_seconds is None:
        t0 = time.perf_counter()
        RTK.ThreeDCircularProjectionGeometry  # the first attribute access loads ~100 wrapper modules
        itk.Image[itk.F, 3]
        _load_seconds = time.perf_counter() - t0
        log.info("RTK %s loaded in %.1f s (once per process)", getattr(itk, "__version__", "?"), _load_seconds)
    return itk, RTK


def set_threads(threads: int | None = None) -> int:
    """Set ITK's global thread count; ``None`` reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` (else ITK's default).

    Returns the count in effect. Filters take the global default when they are created, so this is
    called before every projection or reconstruction.
    """
    itk, _ = _rtk()
    if threads is None:
        env = os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")
        threads = int(env) if env else None
    if threads is not None and threads > 0:
        itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(int(threads))
    return int(itk.MultiThreaderBase.GetGlobalDefaultNumberOfThreads())


def rtk_geometry(geometry: ConeBeamGeometry, angles_rad: Iterable[float] | None = None):
    """An ``rtk.ThreeDCircularProjectionGeometry`` of ``geometry`` (µm) at ``angles_rad`` (default: all)."""
    _, rtk = _rtk()
    geo = rtk.ThreeDCircularProjectionGeometry.New()
    for angle in geometry.angles if angles_rad is None else angles_rad:
        geo.AddProjection(geometry.sod_um, geometry.sdd_um, float(np.degrees(angle)))
    return geo


def _volume_image(volume_zyx: np.ndarray, voxel_size_um: float):
    """The RTK image of a z-y-x volume: itk axes (x, z, -y), centred on the rotation axis."""
    itk, _ = _rtk()
    nz, ny, nx = volume_zyx.shape
    image = itk.image_from_array(np.ascontiguousarray(volume_zyx.transpose(1, 0, 2)[::-1], dtype=np.float32))
    image.SetSpacing([float(voxel_size_um)] * 3)
    image.SetOrigin([-(n - 1) / 2 * voxel_size_um for n in (nx, nz, ny)])
    return image


def _volume_array(image) -> np.ndarray:
    """Back from an RTK volume image to a z-y-x array (inverse of :func:`_volume_image`)."""
    itk, _ = _rtk()
    return np.ascontiguousarray(itk.array_from_image(image)[::-1].transpose(1, 0, 2), dtype=np.float32)


def _stack_image(stack: np.ndarray, geometry: ConeBeamGeometry):
    """RTK image of an (n_angles, rows, cols) stack, detector centre on the central ray."""
    itk, _ = _rtk()
    image = itk.image_from_array(np.ascontiguousarray(stack, dtype=np.float32))
    p = geometry.pitch_um
    image.SetSpacing([p, p, 1.0])
    image.SetOrigin([-(geometry.n_det_cols - 1) / 2 * p, -(geometry.n_det_rows - 1) / 2 * p, 0.0])
    return image


def forward_project(
    volume: np.ndarray,
    geometry: ConeBeamGeometry,
    chunk: int | None = None,
    threads: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Joseph line integrals of ``volume`` (nz, ny, nx) through ``geometry``.

    Returns (n_angles, n_det_rows, n_det_cols) float32 in µm × volume value. Views are projected
    ``chunk`` at a time (all at once when ``None``) into ``out`` when given.
    """
    itk, rtk = _rtk()
    set_threads(threads)
    _check_volume(volume, geometry)
    image_type = itk.Image[itk.F, 3]
    vol_image = _volume_image(volume, geometry.voxel_size_um)
    n = geometry.n_angles
    chunk = n if chunk is None else max(1, int(chunk))
    if out is None:
        out = np.empty(geometry.projection_shape, dtype=np.float32)
    for start in range(0, n, chunk):
        angles = geometry.angles[start : start + chunk]
        zeros = np.zeros((len(angles), geometry.n_det_rows, geometry.n_det_cols), dtype=np.float32)
        projector = rtk.JosephForwardProjectionImageFilter[image_type, image_type].New()
        projector.SetInput(0, _stack_image(zeros, geometry))  # the stack is added to: start from zeros
        projector.SetInput(1, vol_image)
        projector.SetGeometry(rtk_geometry(geometry, angles))
        projector.Update()
        out[start : start + len(angles)] = itk.array_from_image(projector.GetOutput())
    return out


def fdk_reconstruct(
    projections: np.ndarray,
    geometry: ConeBeamGeometry,
    hann_cutoff: float = 0.0,
    threads: int | None = None,
) -> np.ndarray:
    """FDK of one full-circle stack (n_angles, rows, cols) of µm line integrals onto ``geometry``'s grid.

    Returns (nz, ny, nx) float32 in volume-value units (FDK(FP(f)) ≈ f). ``hann_cutoff`` 0 is the
    plain ramp, 1 a Hann window ending at Nyquist. RTK weights each view by its angular gaps, so
    ``geometry.angles`` must cover 360°; callers split long scans with
    :func:`resrecover.ct.geometry.interleaved_subsets`.
    """
    itk, rtk = _rtk()
    set_threads(threads)
    projections = np.asarray(projections)
    if projections.shape != geometry.projection_shape:
        raise ValueError(f"projections: shape {projections.shape}; expected {geometry.projection_shape}")
    image_type = itk.Image[itk.F, 3]
    nz, ny, nx = geometry.volume_shape
    # FDK adds into input 0 and consumes it (in place): a fresh zero grid for every call.
    grid = _volume_image(np.zeros((nz, ny, nx), dtype=np.float32), geometry.voxel_size_um)
    fdk = rtk.FDKConeBeamReconstructionFilter[image_type].New()
    fdk.SetInput(0, grid)
    fdk.SetInput(1, _stack_image(projections, geometry))
    fdk.SetGeometry(rtk_geometry(geometry))
    fdk.GetRampFilter().SetTruncationCorrection(0.0)
    fdk.GetRampFilter().SetHannCutFrequency(float(hann_cutoff))
    fdk.Update()
    return _volume_array(fdk.GetOutput())


def _check_volume(volume: np.ndarray, geometry: ConeBeamGeometry) -> None:
    if tuple(volume.shape) != geometry.volume_shape:
        raise ValueError(f"volume: shape {tuple(volume.shape)}; expected the geometry's {geometry.volume_shape}")
