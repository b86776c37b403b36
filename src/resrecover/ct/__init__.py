"""Simulated cone-beam acquisition and FDK reconstruction (frames and units: docs/ct_geometry.md).

One :class:`ConeBeamGeometry` drives both backends: ASTRA (CUDA, chosen by ``'auto'`` when
``astra.use_cuda()`` is true) and RTK (CPU). Volumes are z-y-x, projections (angle, row, column),
lengths µm, line integrals µm × volume value.
"""

from .astra_backend import BackendError, cuda_available
from .geometry import ConeBeamGeometry, GeometryError, full_circle_angles, interleaved_subsets
from .stages import degrade_scan_file, fdk_file, ground_truth_file, project_phantom_file
from .simulate import (
    degrade_projections,
    fdk_reconstruct,
    forward_project,
    open_projections,
    projection_writer,
    read_projections,
    reconstruct_noiseless,
    scan_defaults,
    select_backend,
    simulate_scan,
    simulate_volume_file,
    user_scan_geometry,
    write_projections,
)

__all__ = [
    "BackendError",
    "ConeBeamGeometry",
    "GeometryError",
    "cuda_available",
    "degrade_projections",
    "degrade_scan_file",
    "fdk_file",
    "fdk_reconstruct",
    "forward_project",
    "full_circle_angles",
    "ground_truth_file",
    "interleaved_subsets",
    "open_projections",
    "project_phantom_file",
    "projection_writer",
    "read_projections",
    "reconstruct_noiseless",
    "scan_defaults",
    "select_backend",
    "simulate_scan",
    "simulate_volume_file",
    "user_scan_geometry",
    "write_projections",
]
