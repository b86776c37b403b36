"""Simulated acquisition and FDK (docs/design.md#simulated-acquisition): backends, degradation, files, stages.

Units: volumes hold a value ``v`` whose physical attenuation is ``v × attenuation_per_um`` (1/µm);
the workflow's phantoms are material fraction (material 1, void 0). Line integrals are stored in
µm × ``v``, so FDK returns ``v`` again. Memory stays bounded by working on ``chunk`` views at a
time: forward projection and degradation stream through contiguous blocks of views, FDK averages
the reconstructions of interleaved full-circle subsets (FDK is linear; docs/ct_geometry.md#one-scan-on-both-backends).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from scipy.ndimage import gaussian_filter

from .. import ResrecoverError
from ..io import InputError, atomic_output, check_free_disk, write_volume
from ..io.hdf5 import provenance
from ..io.volume import open_hdf5_file
from . import astra_backend, rtk_backend
from .astra_backend import BackendError, cuda_available
from .geometry import ConeBeamGeometry, GeometryError, interleaved_subsets

log = logging.getLogger(__name__)

BACKENDS = ("auto", "rtk", "astra")


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------


def select_backend(requested: str = "auto") -> str:
    """Resolve ``'auto' | 'rtk' | 'astra'`` to the backend that will run: ``'astra'`` or ``'rtk'``.

    ``auto`` is ASTRA when it imports and ``astra.use_cuda()`` is true, else RTK. Asking for
    ``astra`` without CUDA raises :class:`BackendError` (one line).
    """
    if requested not in BACKENDS:
        raise BackendError(f"scan.backend: {requested!r} is not a CT backend; expected one of {', '.join(BACKENDS)}")
    if requested == "auto":
        return "astra" if cuda_available() else "rtk"
    if requested == "astra" and not cuda_available():
        astra_backend._astra()  # raises the one-line BackendError
    return requested


def forward_project(
    volume: np.ndarray,
    geometry: ConeBeamGeometry,
    backend: str = "auto",
    chunk: int | None = None,
    threads: int | None = None,
    gpu: int | None = None,
    out=None,
) -> np.ndarray:
    """Cone-beam line integrals of ``volume`` (nz, ny, nx) through ``geometry``.

    Returns (n_angles, n_det_rows, n_det_cols) float32 in µm × volume value, computed ``chunk``
    views at a time (all at once when ``None``). ``out`` may be a preallocated array or an h5py
    dataset of that shape, which streams the result to disk. ``threads`` is for RTK, ``gpu`` for
    ASTRA (default: the first device CUDA exposes).
    """
    backend = select_backend(backend)
    volume = np.asarray(volume, dtype=np.float32)
    if backend == "astra":
        return astra_backend.forward_project(volume, geometry, chunk=chunk, gpu=gpu, out=out)
    return rtk_backend.forward_project(volume, geometry, chunk=chunk, threads=threads, out=out)


def _fdk_one(projections, geometry, backend, hann_cutoff, threads, gpu) -> np.ndarray:
    if backend == "astra":
        return astra_backend.fdk_reconstruct(projections, geometry, hann_cutoff=hann_cutoff, gpu=gpu)
    return rtk_backend.fdk_reconstruct(projections, geometry, hann_cutoff=hann_cutoff, threads=threads)


def fdk_reconstruct(
    projections,
    geometry: ConeBeamGeometry,
    backend: str = "auto",
    hann_cutoff: float = 0.0,
    chunk: int | None = None,
    threads: int | None = None,
    gpu: int | None = None,
) -> np.ndarray:
    """FDK of a full-circle scan onto ``geometry``'s grid; (nz, ny, nx) float32 in volume-value units.

    Parameters
    ----------
    projections : (n_angles, rows, cols) line integrals in µm × value: an array or an h5py dataset
        (read ``chunk`` views at a time).
    geometry : the scan; its angles must be equally spaced over 360°.
    hann_cutoff : 0 = plain ramp filter; in (0, 1] a Hann window (1 reaches zero at Nyquist).
    chunk : most views held at once. Larger scans are split into interleaved subsets (every k-th
        view, each itself a full circle) whose FDKs are averaged: the exact full FDK.
    """
    backend = select_backend(backend)
    if tuple(projections.shape) != geometry.projection_shape:
        raise ValueError(f"projections: shape {tuple(projections.shape)}; expected {geometry.projection_shape}")

    def subset_fdk(j, k, sub):
        block = np.asarray(projections[j::k], dtype=np.float32)  # step slicing works on h5py datasets too
        return _fdk_one(block, sub, backend, hann_cutoff, threads, gpu)

    return _mean_over_subsets(geometry, chunk, subset_fdk)


def _mean_over_subsets(geometry: ConeBeamGeometry, chunk: int | None, reconstruct_subset) -> np.ndarray:
    """Mean of ``reconstruct_subset(j, k, subset_geometry)`` over the k interleaved subsets of ≤ ``chunk`` views.

    With equally sized, equally spaced full-circle subsets the mean of their FDKs is the FDK of all
    views (linearity), while only one subset's projections exist at a time.
    """
    n = geometry.n_angles
    subsets = interleaved_subsets(n, chunk or n)
    k = len(subsets)
    if chunk and k > 4 * math.ceil(n / chunk):
        log.warning(
            "FDK: %d views split into %d subsets of %d (no divisor of %d near chunk %d)", n, k, n // k, n, chunk
        )
    total = None
    for j, idx in enumerate(subsets):
        part = reconstruct_subset(j, k, geometry.with_angles(geometry.angles[idx]))
        if total is None:
            total = part
        else:
            total += part
    if k > 1:
        total /= k
    return total


def reconstruct_noiseless(
    volume: np.ndarray, geometry: ConeBeamGeometry, backend: str = "auto", hann_cutoff: float = 0.0,
    chunk: int | None = None, threads: int | None = None, gpu: int | None = None,
) -> np.ndarray:
    """FDK(FP(volume)) without storing the scan: each interleaved subset is projected and reconstructed in turn.

    This is the ground truth's path (thousands of views): memory holds the volume, the result and
    one subset of at most ``chunk`` views.
    """
    backend = select_backend(backend)

    def subset_fdk(j, k, sub):
        proj = forward_project(volume, sub, backend=backend, threads=threads, gpu=gpu)
        return _fdk_one(proj, sub, backend, hann_cutoff, threads, gpu)

    return _mean_over_subsets(geometry, chunk, subset_fdk)


# --------------------------------------------------------------------------------------------
# Degradation
# --------------------------------------------------------------------------------------------


def degrade_projections(
    line_integrals,
    geometry: ConeBeamGeometry,
    sigma_um: float,
    photons_per_pixel: float | None,
    attenuation_per_um: float,
    rng: np.random.Generator,
    chunk: int | None = None,
    out=None,
) -> np.ndarray:
    """Blur, then Poisson noise, then −log: the detector's view of clean line integrals.

    Parameters
    ----------
    line_integrals : (n_angles, rows, cols) µm × material fraction (array or h5py dataset).
    geometry : the scan (magnification and pitch turn µm at the object into detector pixels).
    sigma_um : standard deviation (µm, object plane) of the 2D Gaussian blur of every projection;
        ``σ_px = σ·M / pitch`` along rows and columns, never along angles. 0 = no blur.
    photons_per_pixel : incident counts I0 per pixel; ``None`` or ``inf`` = no noise.
    attenuation_per_um : μ of the material (1/µm): the physical line integral is ``μ·p``.
    rng : the noise stream. Views are drawn in order, so the result does not depend on ``chunk``.
    chunk : views processed at once (all when ``None``).
    out : optional preallocated array or h5py dataset for the result.

    Returns
    -------
    (n_angles, rows, cols) float32 line integrals in µm × material fraction, so FDK returns
    material fraction.

    Notes
    -----
    The blur acts on line integrals, not on the transmitted intensity. Projection is linear, so a
    blurred line integral is (at the axis magnification) the line integral of the 3D-blurred
    object: FDK then returns the object blurred by a Gaussian of σ, which is what the study's
    "σ µm resolution" means and what the Gaussian-fit resolution measures. Blurring intensity
    ``I0·exp(−μp)`` (the physical focal spot / scintillator) would add a contrast-dependent
    non-linear edge error on top. ``mode='constant'`` (zero) is exact because the detector edge
    sees air (p = 0); scipy's default 'reflect' would fold the object back in.
    """
    n = geometry.n_angles
    if tuple(line_integrals.shape) != geometry.projection_shape:
        raise ValueError(f"line_integrals: shape {tuple(line_integrals.shape)}; expected {geometry.projection_shape}")
    if sigma_um < 0:
        raise ResrecoverError(f"sigma_um: {sigma_um}; expected a blur σ ≥ 0 µm")
    noisy = photons_per_pixel is not None and math.isfinite(photons_per_pixel)
    if noisy and photons_per_pixel <= 0:
        raise ResrecoverError(f"photons_per_pixel: {photons_per_pixel}; expected a positive photon count")
    if attenuation_per_um <= 0:
        raise ResrecoverError(f"attenuation_per_um: {attenuation_per_um}; expected a positive μ in 1/µm")
    sigma_px = geometry.sigma_px(sigma_um)  # square pixels: the same along rows and columns
    chunk = n if chunk is None else max(1, int(chunk))
    if out is None:
        out = np.empty(geometry.projection_shape, dtype=np.float32)
    clipped = 0
    for start in range(0, n, chunk):
        p = np.asarray(line_integrals[start : start + chunk], dtype=np.float32)
        if sigma_px > 0:
            p = gaussian_filter(p, sigma=(0.0, sigma_px, sigma_px), mode="constant", cval=0.0)
        if noisy:
            expected = photons_per_pixel * np.exp(-attenuation_per_um * p.astype(np.float64))
            counts = rng.poisson(expected).astype(np.float64)
            clipped += int(np.count_nonzero(counts < 1))
            np.maximum(counts, 1.0, out=counts)  # a zero count has no logarithm: one photon is the floor
            p = (-np.log(counts / photons_per_pixel) / attenuation_per_um).astype(np.float32)
        out[start : start + len(p)] = p
    if clipped > 1e-3 * np.prod(geometry.projection_shape):
        log.warning(
            "%d detector pixels received no photon (clipped to 1): the object is nearly opaque; "
            "check attenuation_per_um (%g) against the volume's values",
            clipped,
            attenuation_per_um,
        )
    return out


# --------------------------------------------------------------------------------------------
# Projection files
# --------------------------------------------------------------------------------------------


def _attr_value(value):
    if isinstance(value, dict) or (
        isinstance(value, (list, tuple)) and not all(isinstance(v, (int, float)) for v in value)
    ):
        return json.dumps(value, default=str)
    return value


@contextlib.contextmanager
def projection_writer(path: str | Path, geometry: ConeBeamGeometry, **attrs: Any):
    """Create a projection file atomically and yield its ``projections`` dataset to fill.

    The file holds ``projections`` (n_angles, rows, cols) float32 chunked per view, ``angles_rad``
    (float64; kept out of the JSON because HDF5 attributes stop at 64 kB), the attribute
    ``geometry`` (JSON of :meth:`ConeBeamGeometry.to_dict` without the angles), software
    versions and ``attrs``. Only a block that finishes leaves a file under ``path``.
    """
    check_free_disk(path, 4 * int(np.prod(geometry.projection_shape)))
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as fh:
        ds = fh.create_dataset(
            "projections", shape=geometry.projection_shape, dtype=np.float32, chunks=(1, *geometry.projection_shape[1:])
        )
        fh.create_dataset("angles_rad", data=geometry.angles)
        stored = geometry.to_dict()
        del stored["angles_rad"]
        fh.attrs["geometry"] = json.dumps(stored)
        for key, value in {**provenance(), **attrs}.items():
            if value is not None:
                fh.attrs[key] = _attr_value(value)
        yield ds


def write_projections(path: str | Path, projections: np.ndarray, geometry: ConeBeamGeometry, **attrs: Any) -> None:
    """Write a whole (n_angles, rows, cols) stack with its geometry and ``attrs`` (see :func:`projection_writer`)."""
    projections = np.asarray(projections)
    if projections.shape != geometry.projection_shape:
        raise ValueError(f"projections: shape {projections.shape}; expected {geometry.projection_shape}")
    with projection_writer(path, geometry, **attrs) as ds:
        ds[...] = projections.astype(np.float32, copy=False)


@contextlib.contextmanager
def open_projections(path: str | Path):
    """Open a projection file lazily: yields ``(dataset, geometry, attrs)``; read views by slicing."""
    path = Path(path)
    fh = open_hdf5_file(path, "projection file")
    try:
        if "projections" not in fh or "geometry" not in fh.attrs or "angles_rad" not in fh:
            raise InputError(
                f"{path}: not a projection file; expected dataset 'projections', dataset 'angles_rad' "
                "and attribute 'geometry'"
            )
        try:
            stored = json.loads(fh.attrs["geometry"])
            stored["angles_rad"] = fh["angles_rad"][...]
            geometry = ConeBeamGeometry.from_dict(stored)
        except (ValueError, TypeError, GeometryError) as exc:
            raise InputError(f"{path}: attribute 'geometry' is not a valid scan geometry ({exc})") from exc
        ds = fh["projections"]
        if tuple(ds.shape) != geometry.projection_shape:
            raise InputError(
                f"{path}: projections have shape {ds.shape}; the stored geometry expects {geometry.projection_shape}"
            )
        attrs = {k: v for k, v in fh.attrs.items() if k != "geometry"}
        yield ds, geometry, attrs
    finally:
        fh.close()


def read_projections(path: str | Path) -> tuple[np.ndarray, ConeBeamGeometry, dict[str, Any]]:
    """Read a whole projection file: ``(projections float32, geometry, attrs)``; non-finite values are an error."""
    with open_projections(path) as (ds, geometry, attrs):
        try:
            proj = ds[...].astype(np.float32, copy=False)
        except OSError as exc:
            raise InputError(f"{path}: dataset 'projections' cannot be read (truncated or corrupt?): {exc}") from exc
    if not np.isfinite(proj).all():
        raise InputError(f"{path}: dataset 'projections' holds NaN/inf values; expected finite line integrals")
    return proj, geometry, attrs


# --------------------------------------------------------------------------------------------
# Users' own volumes
# --------------------------------------------------------------------------------------------


def scan_defaults() -> dict[str, Any]:
    """The schema's defaults of the ``scan`` block (one home for them: the config schema)."""
    import yaml

    from ..config import SCHEMA_PATH

    with open(SCHEMA_PATH) as fh:
        schema = yaml.safe_load(fh)
    props = schema["properties"]
    return {k: v["default"] for k, v in props["scan"]["properties"].items() if "default" in v}


def _schema_volume_width_um() -> float:
    """Width (µm) of the paper preset's volume: the schema's voxel size × largest default extent."""
    import yaml

    from ..config import SCHEMA_PATH

    with open(SCHEMA_PATH) as fh:
        props = yaml.safe_load(fh)["properties"]
    return float(props["voxel_size_um"]["default"]) * max(props["volume_shape"]["default"])


def user_scan_geometry(
    volume_shape: tuple[int, int, int],
    voxel_size_um: float,
    n_projections: int | None = None,
    source_to_object_um: float | None = None,
    source_to_detector_um: float | None = None,
    detector_margin_px: int | None = None,
) -> ConeBeamGeometry:
    """The scan of a user's volume: the study's cone, scaled to the volume, detector covering it.

    ``None`` takes the config schema's ``scan`` defaults; the source and detector distances
    default to the paper preset's (SOD 2926 µm, SDD 11704 µm for a 512 µm wide volume) scaled by
    the volume's largest extent, so the cone angle and the magnification stay the preset's.
    """
    defaults = scan_defaults()
    scale = max(volume_shape) * float(voxel_size_um) / _schema_volume_width_um()
    sod = source_to_object_um if source_to_object_um is not None else defaults["source_to_object_um"] * scale
    sdd = source_to_detector_um if source_to_detector_um is not None else defaults["source_to_detector_um"] * scale
    margin = defaults["detector_margin_px"] if detector_margin_px is None else detector_margin_px
    n = int(n_projections or defaults["n_projections"])
    return ConeBeamGeometry.covering(volume_shape, voxel_size_um, sod, sdd, n, margin_px=margin)


def simulate_scan(
    volume: np.ndarray,
    voxel_size_um: float,
    sigma_um: float,
    *,
    n_projections: int | None = None,
    photons_per_pixel: float | None = None,
    attenuation_per_um: float | None = None,
    source_to_object_um: float | None = None,
    source_to_detector_um: float | None = None,
    detector_margin_px: int | None = None,
    hann_cutoff: float = 0.0,
    projection_chunk: int | None = None,
    seed: int = 0,
    backend: str = "auto",
    threads: int | None = None,
    gpu: int | None = None,
) -> np.ndarray:
    """Scan a volume with the study's cone beam, blur and noise, and reconstruct it with FDK.

    Parameters
    ----------
    volume : (nz, ny, nx) values ``v``; physical attenuation is ``v × attenuation_per_um`` (1/µm).
        A material-fraction volume (material 1) uses the configured μ; a volume already in 1/µm
        uses ``attenuation_per_um=1``.
    voxel_size_um : voxel edge (µm).
    sigma_um : object-plane Gaussian blur σ (µm); 0 = none.
    n_projections, photons_per_pixel, attenuation_per_um, detector_margin_px, projection_chunk :
        ``None`` = the config schema's ``scan`` defaults (512 views, I0 5000, μ 0.017/µm, 8 px, 64).
        ``photons_per_pixel=inf`` gives a noiseless scan.
    source_to_object_um, source_to_detector_um : ``None`` = the paper preset's cone scaled to the
        volume (:func:`user_scan_geometry`).
    hann_cutoff : FDK Hann window (0 = plain ramp).
    seed : noise seed. The result is reproducible for a given (seed, n_projections, chunk).
    backend, threads, gpu : CT backend ('auto', 'rtk', 'astra'), RTK threads, ASTRA device.

    Returns
    -------
    (nz, ny, nx) float32 reconstruction in the units of ``volume``.

    Views are processed one interleaved subset at a time (project, degrade, FDK, average), so
    memory holds the volume, the result and one subset of views.
    """
    defaults = scan_defaults()
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise ResrecoverError(f"volume: shape {volume.shape}; expected a 3D z-y-x volume")
    geometry = user_scan_geometry(
        volume.shape, voxel_size_um, n_projections, source_to_object_um, source_to_detector_um, detector_margin_px
    )
    photons = defaults["photons_per_pixel"] if photons_per_pixel is None else photons_per_pixel
    mu = defaults["attenuation_per_um"] if attenuation_per_um is None else attenuation_per_um
    chunk = int(projection_chunk or defaults["projection_chunk"])
    backend = select_backend(backend)
    log.info(
        "simulate: backend %s, %d views of %d×%d px, SOD %.4g µm, SDD %.4g µm, σ %.3g µm, I0 %s, μ %g /µm",
        backend,
        geometry.n_angles,
        geometry.n_det_rows,
        geometry.n_det_cols,
        geometry.sod_um,
        geometry.sdd_um,
        sigma_um,
        photons,
        mu,
    )
    rng = np.random.default_rng(seed)

    def subset_scan(j, k, sub):
        proj = forward_project(volume, sub, backend=backend, threads=threads, gpu=gpu)
        proj = degrade_projections(proj, sub, sigma_um, photons, mu, rng)
        return _fdk_one(proj, sub, backend, hann_cutoff, threads, gpu)

    t0 = time.perf_counter()
    result = _mean_over_subsets(geometry, chunk, subset_scan)
    log.info("simulate done in %.1f s", time.perf_counter() - t0)
    return result


def simulate_volume_file(
    input_path: str | Path,
    output_path: str | Path,
    sigma_um: float,
    n_projections: int | None = None,
    photons_per_pixel: float | None = None,
    backend: str = "auto",
    seed: int = 0,
    source_to_object_um: float | None = None,
    source_to_detector_um: float | None = None,
    attenuation_per_um: float | None = None,
    voxel_size_um: float | None = None,
    hann_cutoff: float = 0.0,
    projection_chunk: int | None = None,
    threads: int | None = None,
    gpu: int | None = None,
) -> Path:
    """Simulate a degraded scan of a volume file and write its FDK (the CLI's ``resrecover simulate``).

    Reads any format of :func:`resrecover.io.open_volume`: HDF5 (dataset ``volume``,
    attribute ``voxel_size_um``), a TIFF stack (one multi-page file or a folder of slices;
    ``voxel_size_um`` is required when the TIFF carries none), Zarr, .npy. See
    :func:`simulate_scan` for the scan parameters. Writes an HDF5 volume (:func:`write_volume`)
    with the scan's parameters as attributes; returns its path.
    """
    from .stages import job_gpu  # the workflow's GPU claim (stages imports this module)

    from ..io import open_volume

    with open_volume(input_path, voxel_size_um=voxel_size_um) as source:
        volume = source[...]
        vs = float(source.voxel_size_um)
    defaults = scan_defaults()
    photons = float(defaults["photons_per_pixel"] if photons_per_pixel is None else photons_per_pixel)
    mu = float(defaults["attenuation_per_um"] if attenuation_per_um is None else attenuation_per_um)
    geometry = user_scan_geometry(volume.shape, vs, n_projections, source_to_object_um, source_to_detector_um)
    chosen = select_backend(backend)
    with job_gpu(chosen, gpu) as device:
        recon = simulate_scan(
            volume,
            vs,
            sigma_um,
            n_projections=geometry.n_angles,
            photons_per_pixel=photons,
            attenuation_per_um=mu,
            source_to_object_um=geometry.sod_um,
            source_to_detector_um=geometry.sdd_um,
            hann_cutoff=hann_cutoff,
            projection_chunk=projection_chunk,
            seed=seed,
            backend=chosen,
            threads=threads,
            gpu=device,
        )
    write_volume(
        output_path,
        recon,
        vs,
        source=str(input_path),
        sigma_um=float(sigma_um),
        seed=int(seed),
        backend=chosen,
        n_projections=geometry.n_angles,
        photons_per_pixel=photons,
        attenuation_per_um=mu,
        source_to_object_um=geometry.sod_um,
        source_to_detector_um=geometry.sdd_um,
        hann_cutoff=float(hann_cutoff),
    )
    return Path(output_path)
