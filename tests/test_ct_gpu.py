"""ASTRA (CUDA) against RTK on one asymmetric geometry: the check of docs/ct_geometry.md#checking-the-mapping.

Skipped without CUDA: ASTRA's 3D calls would kill the interpreter there, so nothing of ASTRA runs
unless ``astra.use_cuda()`` is true (checked through :func:`resrecover.ct.cuda_available`, which
imports astra safely).
"""

from __future__ import annotations

import numpy as np
import pytest

from resrecover.ct import ConeBeamGeometry, cuda_available, fdk_reconstruct, forward_project, full_circle_angles

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not cuda_available(), reason="skipped: no CUDA"),
    pytest.mark.filterwarnings("ignore:builtin type .* has no __module__:DeprecationWarning"),
]


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def scan():
    """nz ≠ ny ≠ nx, rows ≠ cols, first angle ≠ 0, 96 equally spaced views over 360°, off-centre cubes."""
    volume = np.zeros((40, 48, 56), dtype=np.float32)
    volume[5:13, 8:16, 36:46] = 1.0  # +x, -y, low z
    volume[24:34, 30:40, 8:18] = 2.0  # -x, +y, high z
    volume[18:22, 20:26, 26:30] = 0.5
    geometry = ConeBeamGeometry.covering(volume.shape, 5.0, 1500.0, 6000.0, 96, margin_px=4)
    geometry = geometry.with_angles(full_circle_angles(96, first_angle_rad=0.3))
    assert geometry.n_det_rows != geometry.n_det_cols
    return volume, geometry


@pytest.fixture(scope="module")
def projections(scan):
    volume, geometry = scan
    return {b: forward_project(volume, geometry, backend=b) for b in ("rtk", "astra")}


def test_forward_projections_agree(projections):
    error = rel_l2(projections["astra"], projections["rtk"])
    print(f"FP ASTRA vs RTK: rel. L2 {error:.4f}")
    assert error < 0.05


@pytest.mark.parametrize("hann_cutoff", [0.0, 0.5])
def test_fdk_of_the_same_projections_agree(scan, projections, hann_cutoff):
    _, geometry = scan
    recon = {
        b: fdk_reconstruct(projections["rtk"], geometry, backend=b, hann_cutoff=hann_cutoff) for b in ("rtk", "astra")
    }
    inner = (slice(6, -6), slice(4, -4), slice(4, -4))  # no border voxels, no slices at the cone edge
    error = rel_l2(recon["astra"][inner], recon["rtk"][inner])
    print(f"FDK ASTRA vs RTK (Hann {hann_cutoff}): rel. L2 {error:.4f}")
    assert error < 0.05


def test_chunked_astra_fdk_equals_full(scan, projections):
    _, geometry = scan
    full = fdk_reconstruct(projections["astra"], geometry, backend="astra")
    chunked = fdk_reconstruct(projections["astra"], geometry, backend="astra", chunk=24)
    assert rel_l2(chunked, full) < 1e-4


@pytest.mark.parametrize("backend", ["rtk", "astra"])
def test_fdk_of_projected_unit_cube_is_one(backend):
    volume = np.zeros((48, 48, 48), dtype=np.float32)
    volume[14:34, 14:34, 14:34] = 1.0
    geometry = ConeBeamGeometry.covering(volume.shape, 20.0, 4000.0, 16000.0, 128, margin_px=4)
    recon = fdk_reconstruct(forward_project(volume, geometry, backend=backend), geometry, backend=backend)
    interior = float(recon[18:30, 18:30, 18:30].mean())
    print(f"{backend}: FDK(FP(unit cube)) interior mean {interior:.4f}")
    assert interior == pytest.approx(1.0, abs=0.02)
