"""ASTRA Toolbox (CUDA) forward projection and FDK for :class:`ConeBeamGeometry` (docs/ct_geometry.md#astra).

Our frame is ASTRA's own, so nothing is flipped: the z-y-x volume goes in as is with a window of
±n·vs/2 µm per axis (``create_vol_geom(ny, nx, nz, x-window, y-window, z-window)``), and the
geometry is ASTRA's ``'cone'`` with ``origin_det = SDD - SOD``. ASTRA's projection layout is
(rows, angles, cols); ours is (angles, rows, cols): one transpose each way.

Without a CUDA device every ASTRA 3D call kills the interpreter, so each entry point first checks
``astra.use_cuda()`` and raises :class:`BackendError` instead.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np

from .. import ResrecoverError
from .geometry import ConeBeamGeometry

log = logging.getLogger(__name__)


class BackendError(ResrecoverError):
    """The requested CT backend cannot run here (no CUDA for ASTRA, RTK not importable...)."""


def cuda_available() -> bool:
    """True when ``astra`` imports and sees a CUDA device (safe to call anywhere)."""
    try:
        import astra
    except Exception:  # noqa: BLE001 - any import failure means: no ASTRA here
        return False
    try:
        return bool(astra.use_cuda())
    except Exception:  # noqa: BLE001
        return False


def _astra():
    """The ``astra`` module, once CUDA is known to be there."""
    if not cuda_available():
        raise BackendError(
            "scan.backend: 'astra' needs astra-toolbox with a CUDA GPU, and astra.use_cuda() is false here; "
            "expected 'rtk' or 'auto' on this machine"
        )
    import astra

    return astra


def gpu_index(index: int | None = None) -> int:
    """The CUDA device ASTRA runs on.

    An explicit ``index`` wins. Otherwise 0: CUDA numbers only the devices listed in
    ``CUDA_VISIBLE_DEVICES``, so the job's chosen GPU (set there by the scheduler or the job's
    device picker) is always device 0 of the process.
    """
    return 0 if index is None else int(index)


def volume_geometry(geometry: ConeBeamGeometry) -> dict:
    """ASTRA volume geometry: counts in (y, x, z) order, window in (x, y, z) order, µm.

    Building geometry dicts is plain Python and safe without CUDA.
    """
    import astra

    nz, ny, nx = geometry.volume_shape
    vs = geometry.voxel_size_um
    return astra.create_vol_geom(
        ny, nx, nz, -nx * vs / 2, nx * vs / 2, -ny * vs / 2, ny * vs / 2, -nz * vs / 2, nz * vs / 2
    )


def projection_geometry(geometry: ConeBeamGeometry, angles_rad=None) -> dict:
    """ASTRA ``'cone'`` geometry of ``geometry`` at ``angles_rad`` (default: all); safe without CUDA."""
    import astra

    angles = geometry.angles if angles_rad is None else np.asarray(angles_rad, dtype=np.float64)
    return astra.create_proj_geom(
        "cone",
        geometry.pitch_um,
        geometry.pitch_um,
        geometry.n_det_rows,
        geometry.n_det_cols,
        angles,
        geometry.sod_um,
        geometry.odd_um,
    )


@contextlib.contextmanager
def _data_ids():
    """Collect ASTRA data ids and free them however the block ends (GPU/host memory is not GC'd)."""
    astra = _astra()
    ids: list[int] = []
    try:
        yield ids
    finally:
        for data_id in ids:
            with contextlib.suppress(Exception):
                astra.data3d.delete(data_id)


def forward_project(
    volume: np.ndarray,
    geometry: ConeBeamGeometry,
    chunk: int | None = None,
    gpu: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Line integrals (n_angles, rows, cols) float32 in µm × volume value; ``chunk`` views at a time."""
    astra = _astra()
    if tuple(volume.shape) != geometry.volume_shape:
        raise ValueError(f"volume: shape {tuple(volume.shape)}; expected the geometry's {geometry.volume_shape}")
    vol_geom = volume_geometry(geometry)
    n = geometry.n_angles
    chunk = n if chunk is None else max(1, int(chunk))
    if out is None:
        out = np.empty(geometry.projection_shape, dtype=np.float32)
    with _data_ids() as ids:
        vol_id = astra.data3d.create("-vol", vol_geom, np.ascontiguousarray(volume, dtype=np.float32))
        ids.append(vol_id)
        for start in range(0, n, chunk):
            angles = geometry.angles[start : start + chunk]
            sino_id, sino = astra.create_sino3d_gpu(
                vol_id, projection_geometry(geometry, angles), vol_geom, gpuIndex=gpu_index(gpu)
            )
            ids.append(sino_id)
            out[start : start + len(angles)] = sino.transpose(1, 0, 2)
            astra.data3d.delete(ids.pop())
    return out


def fdk_reconstruct(
    projections: np.ndarray,
    geometry: ConeBeamGeometry,
    hann_cutoff: float = 0.0,
    gpu: int | None = None,
) -> np.ndarray:
    """FDK_CUDA of one full-circle stack (n_angles, rows, cols) of µm line integrals; (nz, ny, nx) float32.

    ASTRA weights every view by π/(2N): the angles must be N equally spaced views over 360°.
    ``hann_cutoff`` 0 is the plain ramp ('ram-lak'); otherwise a Hann window with FilterD = cutoff.
    """
    astra = _astra()
    projections = np.asarray(projections)
    if projections.shape != geometry.projection_shape:
        raise ValueError(f"projections: shape {projections.shape}; expected {geometry.projection_shape}")
    vol_geom = volume_geometry(geometry)
    with _data_ids() as ids:
        proj_id = astra.data3d.create(
            "-sino", projection_geometry(geometry), np.ascontiguousarray(projections.transpose(1, 0, 2), np.float32)
        )
        ids.append(proj_id)
        rec_id = astra.data3d.create("-vol", vol_geom, 0)
        ids.append(rec_id)
        cfg = astra.astra_dict("FDK_CUDA")
        cfg["ProjectionDataId"] = proj_id
        cfg["ReconstructionDataId"] = rec_id
        options = {"GPUindex": gpu_index(gpu)}
        if hann_cutoff > 0:
            options.update(FilterType="hann", FilterD=float(hann_cutoff))
        cfg["option"] = options
        alg_id = astra.algorithm.create(cfg)
        try:
            astra.algorithm.run(alg_id)
        finally:
            astra.algorithm.delete(alg_id)
        return np.ascontiguousarray(astra.data3d.get(rec_id), dtype=np.float32)
