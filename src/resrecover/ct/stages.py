"""The scan rule's steps as file-to-file functions: project a phantom, degrade, FDK, ground truth.

Each reads and writes the workflow's files (docs/results.md) and claims a GPU for ASTRA through
:func:`job_gpu`; :func:`resrecover.ct.realization.scan_realization` runs them in one process per
realization.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..io import InputError, read_volume, write_volume
from ..io.hdf5 import provenance
from . import astra_backend
from .geometry import ConeBeamGeometry, interleaved_subsets
from .simulate import (
    degrade_projections,
    fdk_reconstruct,
    forward_project,
    open_projections,
    projection_writer,
    reconstruct_noiseless,
    select_backend,
)

log = logging.getLogger(__name__)


def _read_phantom(path: str | Path, geometry: ConeBeamGeometry) -> np.ndarray:
    volume, attrs = read_volume(path)
    if volume.shape != geometry.volume_shape:
        raise InputError(f"{path}: volume shape {volume.shape}; the config's volume_shape is {geometry.volume_shape}")
    vs = attrs.get("voxel_size_um")
    if vs is not None and not math.isclose(float(vs), geometry.voxel_size_um, rel_tol=1e-6):
        raise InputError(f"{path}: voxel_size_um {float(vs)}; the config's voxel_size_um is {geometry.voxel_size_um}")
    return volume


@contextlib.contextmanager
def job_gpu(backend: str, gpu: int | None = None):
    """The CUDA device index an ASTRA job runs on, held for the job; ``None`` for RTK.

    An explicit ``gpu`` is used as is. Otherwise the job claims a free GPU through
    :func:`resrecover.methods.device.acquire_device` (one lock per GPU), so concurrent ASTRA jobs
    land on different GPUs (Snakemake never sets ``CUDA_VISIBLE_DEVICES``). Where torch sees no
    CUDA device the job falls back to device 0 with a warning.
    """
    if backend != "astra" or gpu is not None:
        yield gpu
        return
    from ..methods.device import DeviceError, acquire_device

    with contextlib.ExitStack() as stack:
        try:
            index = stack.enter_context(acquire_device("cuda")).index
        except DeviceError as exc:
            log.warning("%s; ASTRA runs on CUDA device 0 without a GPU lock", exc)
            index = None
        log.info("ASTRA on CUDA device %d", astra_backend.gpu_index(index))
        yield index


def _phantom_scan(
    phantom_path: str | Path, config: dict, backend: str, n_projections_key: str
) -> tuple[dict, ConeBeamGeometry, str, np.ndarray]:
    """The ``scan`` block, the geometry of its ``n_projections_key`` views, the backend and the phantom."""
    scan = config["scan"]
    geometry = ConeBeamGeometry.from_config(config, n_projections=scan[n_projections_key])
    backend = select_backend(backend)
    return scan, geometry, backend, _read_phantom(phantom_path, geometry)


def project_phantom_file(
    phantom_path: str | Path, output_path: str | Path, config: dict, backend: str = "auto",
    threads: int | None = None, gpu: int | None = None, **attrs: Any,
) -> ConeBeamGeometry:
    """Clean line integrals of a phantom at ``scan.n_projections`` views, streamed to a projection file.

    ``threads`` is RTK's thread count, ``gpu`` ASTRA's device (default: a free GPU, see :func:`job_gpu`).
    """
    scan, geometry, backend, volume = _phantom_scan(phantom_path, config, backend, "n_projections")
    log.info(
        "forward projection: backend %s, %d views of %d×%d px (pitch %.3g µm, M %.3g), volume %s",
        backend,
        geometry.n_angles,
        geometry.n_det_rows,
        geometry.n_det_cols,
        geometry.pitch_um,
        geometry.magnification,
        geometry.volume_shape,
    )
    t0 = time.perf_counter()
    with (
        job_gpu(backend, gpu) as device,
        projection_writer(output_path, geometry, backend=backend, n_projections=geometry.n_angles, **attrs) as ds,
    ):
        chunk = scan["projection_chunk"]
        forward_project(volume, geometry, backend=backend, chunk=chunk, threads=threads, gpu=device, out=ds)
    log.info("forward projection done in %.1f s", time.perf_counter() - t0)
    return geometry


def degrade_scan_file(
    clean_path: str | Path, output_path: str | Path, sigma_um: float, seed: int,
    photons_per_pixel: float | None, attenuation_per_um: float, chunk: int | None = None, **attrs: Any,
) -> None:
    """Blurred, noisy projections (:func:`degrade_projections`) of a clean projection file."""
    t0 = time.perf_counter()
    with open_projections(clean_path) as (clean, geometry, clean_attrs):
        log.info(
            "degrade: σ %.3g µm (%.3g px), I0 %s, μ %g /µm, seed %d, %d views",
            sigma_um,
            geometry.sigma_px(sigma_um),
            photons_per_pixel,
            attenuation_per_um,
            seed,
            geometry.n_angles,
        )
        merged = {k: v for k, v in clean_attrs.items() if k not in provenance()}
        merged.update(
            sigma_um=float(sigma_um),
            seed=int(seed),
            photons_per_pixel=photons_per_pixel,
            attenuation_per_um=float(attenuation_per_um),
            **attrs,
        )
        with projection_writer(output_path, geometry, **merged) as out:
            degrade_projections(
                clean,
                geometry,
                sigma_um,
                photons_per_pixel,
                attenuation_per_um,
                np.random.default_rng(seed),
                chunk=chunk,
                out=out,
            )
    log.info("degrade done in %.1f s", time.perf_counter() - t0)


def fdk_file(
    projections_path: str | Path,
    output_path: str | Path,
    backend: str = "auto",
    hann_cutoff: float = 0.0,
    chunk: int | None = None,
    threads: int | None = None,
    gpu: int | None = None,
    **attrs: Any,
) -> None:
    """FDK of a projection file onto its geometry's grid, written with :func:`resrecover.io.write_volume`.

    The projection file's attributes (realization, σ, seed, ...) are carried over; ``attrs`` win.
    """
    backend = select_backend(backend)
    t0 = time.perf_counter()
    with job_gpu(backend, gpu) as device, open_projections(projections_path) as (ds, geometry, proj_attrs):
        log.info("FDK: backend %s, %d views, chunk %s, Hann %g", backend, geometry.n_angles, chunk, hann_cutoff)
        recon = fdk_reconstruct(
            ds, geometry, backend=backend, hann_cutoff=hann_cutoff, chunk=chunk, threads=threads, gpu=device
        )
    log.info("FDK done in %.1f s", time.perf_counter() - t0)
    merged = {k: v for k, v in proj_attrs.items() if k not in provenance()}
    merged.update(backend=backend, n_projections=geometry.n_angles, hann_cutoff=float(hann_cutoff), **attrs)
    write_volume(output_path, recon, geometry.voxel_size_um, **merged)


def ground_truth_file(
    phantom_path: str | Path, output_path: str | Path, config: dict, backend: str = "auto",
    threads: int | None = None, gpu: int | None = None, **attrs: Any,
) -> None:
    """FDK of the noiseless, unblurred ``scan.n_projections_ground_truth``-view scan of a phantom.

    Each interleaved subset of ``scan.projection_chunk`` views is projected and reconstructed in
    turn (:func:`reconstruct_noiseless`): the scan is never stored.
    """
    scan, geometry, backend, volume = _phantom_scan(phantom_path, config, backend, "n_projections_ground_truth")
    subsets = interleaved_subsets(geometry.n_angles, scan["projection_chunk"])
    log.info(
        "ground truth: backend %s, %d views in %d interleaved subsets of %d, detector %d×%d",
        backend,
        geometry.n_angles,
        len(subsets),
        len(subsets[0]),
        geometry.n_det_rows,
        geometry.n_det_cols,
    )
    t0 = time.perf_counter()
    with job_gpu(backend, gpu) as device:
        recon = reconstruct_noiseless(
            volume,
            geometry,
            backend=backend,
            hann_cutoff=scan["hann_cutoff"],
            chunk=scan["projection_chunk"],
            threads=threads,
            gpu=device,
        )
    log.info("ground truth done in %.1f s", time.perf_counter() - t0)
    write_volume(
        output_path,
        recon,
        geometry.voxel_size_um,
        backend=backend,
        n_projections=geometry.n_angles,
        hann_cutoff=float(scan["hann_cutoff"]),
        sigma_um=0.0,
        **attrs,
    )
