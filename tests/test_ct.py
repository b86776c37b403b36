"""Cone-beam simulation and FDK (resrecover.ct) on the CPU backend (RTK).

RTK costs 10–25 s to load once per process, so every RTK test lives in this module and shares
module-scoped scans. Grids are 24–48³ voxels with a few dozen views.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, map_coordinates

from resrecover.config import load_config
from resrecover.ct import (
    BackendError,
    ConeBeamGeometry,
    GeometryError,
    cuda_available,
    degrade_projections,
    degrade_scan_file,
    fdk_file,
    fdk_reconstruct,
    forward_project,
    full_circle_angles,
    ground_truth_file,
    interleaved_subsets,
    project_phantom_file,
    read_projections,
    reconstruct_noiseless,
    select_backend,
    simulate_volume_file,
    write_projections,
)
from resrecover.evaluate.resolution import best_gaussian_fit, gaussian_fit
from resrecover.io import InputError, read_volume, write_volume
from resrecover.masks import fov_mask
from resrecover.phantom import generate_foam

TEST_CONFIG = Path(__file__).parent / "config" / "test.yaml"
# CPU tests run RTK whatever the machine has; the GPU comparison is tests/test_ct_gpu.py.
BACKEND = "rtk"
# ITK's SWIG wrappers warn once per wrapped type on Python 3.11+; nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore:builtin type .* has no __module__:DeprecationWarning")


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray, data_range: float = 1.0) -> float:
    return float(10 * np.log10(data_range**2 / np.mean((a[mask] - b[mask]) ** 2)))


def raymarch_astra_frame(volume: np.ndarray, geometry: ConeBeamGeometry, step_vox: float = 0.25) -> np.ndarray:
    """Line integrals written from docs/ct_geometry.md#the-frame (ASTRA's frame), independent of RTK.

    Source (SOD·sinθ, −SOD·cosθ, 0), detector centre (−ODD·sinθ, ODD·cosθ, 0), column step
    (cosθ, sinθ, 0)·pitch, row step +z·pitch; trilinear samples every ``step_vox`` voxels.
    """
    nz, ny, nx = volume.shape
    vs = geometry.voxel_size_um
    rows = np.arange(geometry.n_det_rows) - (geometry.n_det_rows - 1) / 2
    cols = np.arange(geometry.n_det_cols) - (geometry.n_det_cols - 1) / 2
    reach = 0.5 * vs * math.sqrt(nx * nx + ny * ny + nz * nz)
    step = step_vox * vs
    out = np.zeros(geometry.projection_shape, dtype=np.float64)
    for a, th in enumerate(geometry.angles):
        source = np.array([geometry.sod_um * np.sin(th), -geometry.sod_um * np.cos(th), 0.0])
        centre = np.array([-geometry.odd_um * np.sin(th), geometry.odd_um * np.cos(th), 0.0])
        u = np.array([np.cos(th), np.sin(th), 0.0]) * geometry.pitch_um
        v = np.array([0.0, 0.0, 1.0]) * geometry.pitch_um
        pixels = centre + cols[None, :, None] * u + rows[:, None, None] * v
        direction = pixels - source
        direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
        for t in np.arange(geometry.sod_um - reach, geometry.sod_um + reach, step):
            p = source + t * direction
            idx = [p[..., 2] / vs + (nz - 1) / 2, p[..., 1] / vs + (ny - 1) / 2, p[..., 0] / vs + (nx - 1) / 2]
            out[a] += map_coordinates(volume, idx, order=1, mode="constant", cval=0.0)
    return (out * step).astype(np.float32)


def asymmetric_phantom(shape=(24, 28, 32)) -> np.ndarray:
    """Off-centre boxes of different values: any axis flip or mirrored rotation changes its projections."""
    vol = np.zeros(shape, dtype=np.float32)
    vol[3:9, 4:10, 20:28] = 1.0  # +x, -y, low z
    vol[14:20, 18:25, 6:12] = 2.0  # -x, +y, high z
    vol[10:14, 12:16, 14:18] = 0.5
    return vol


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config():
    return load_config(TEST_CONFIG)


@pytest.fixture(scope="module")
def foam(config):
    return generate_foam(config, config["realizations"]["train"])[0]


@pytest.fixture(scope="module")
def foam_scan(config, foam):
    """Clean 96-view scan of the test foam (48³ voxels of 4 µm) and its FDK."""
    geometry = ConeBeamGeometry.from_config(config, n_projections=96)
    projections = forward_project(foam, geometry, backend=BACKEND)
    recon = fdk_reconstruct(projections, geometry, backend=BACKEND)
    return geometry, projections, recon


@pytest.fixture(scope="module")
def interior(config):
    """The reconstructable FOV without the top and bottom slices (cone-beam edge)."""
    mask = fov_mask(config)
    mask[:4] = mask[-4:] = False
    return mask


# ---------------------------------------------------------------------------------------------
# geometry (no RTK)
# ---------------------------------------------------------------------------------------------


def test_geometry_from_config_and_round_trip(config):
    geometry = ConeBeamGeometry.from_config(config, n_projections=64)
    assert geometry.n_angles == 64
    assert geometry.pitch_um == pytest.approx(config["voxel_size_um"] * 4400 / 1100)
    assert geometry.sigma_px(8.0) == pytest.approx(2.0)  # σ/voxel when one pixel spans one voxel
    # the grid's parity: pixel centres line up with voxel centres at the axis
    assert geometry.n_det_cols % 2 == 48 % 2 and geometry.n_det_rows % 2 == 48 % 2
    assert np.allclose(np.diff(geometry.angles), 2 * np.pi / 64)
    assert ConeBeamGeometry.from_dict(geometry.to_dict()) == geometry
    with pytest.raises(GeometryError, match="inside the volume"):
        ConeBeamGeometry.covering((48, 48, 48), 4.0, 100.0, 400.0, 8)
    with pytest.raises(GeometryError, match="unknown key"):
        ConeBeamGeometry.from_dict({**geometry.to_dict(), "spam": 1})


def test_interleaved_subsets_partition_into_equal_full_circles():
    for n, chunk in [(6000, 64), (960, 64), (240, 64), (97, 10), (64, 64), (10, 100)]:
        subsets = interleaved_subsets(n, chunk)
        sizes = {len(s) for s in subsets}
        assert len(sizes) == 1 and max(sizes) <= max(chunk, 1)
        assert np.array_equal(np.sort(np.concatenate(subsets)), np.arange(n))
        k = len(subsets)
        assert all(np.all(np.diff(s) == k) for s in subsets)  # every k-th view: a full circle


def test_select_backend():
    if not cuda_available():
        assert select_backend("auto") == "rtk"
        with pytest.raises(BackendError, match="astra.use_cuda") as info:
            select_backend("astra")
        assert "\n" not in str(info.value)
    assert select_backend("rtk") == "rtk"
    with pytest.raises(BackendError, match="expected one of"):
        select_backend("cuda")


# ---------------------------------------------------------------------------------------------
# projection and reconstruction
# ---------------------------------------------------------------------------------------------


def test_forward_projection_orientation_matches_numpy_raymarcher():
    """RTK through our mapping equals an ASTRA-frame ray-marcher; mirrored conventions do not."""
    volume = asymmetric_phantom()
    geometry = ConeBeamGeometry.covering(volume.shape, 4.0, 400.0, 1600.0, 6, margin_px=2)
    geometry = geometry.with_angles(full_circle_angles(6, first_angle_rad=0.3))  # θ0 ≠ 0
    reference = raymarch_astra_frame(volume, geometry)
    error = rel_l2(forward_project(volume, geometry, backend=BACKEND), reference)
    mirrored = rel_l2(forward_project(volume, geometry.with_angles(-geometry.angles), backend=BACKEND), reference)
    print(f"FP vs NumPy ray-marcher: rel. L2 {error:.4f} (angles reversed: {mirrored:.2f})")
    assert error < 0.02
    assert mirrored > 0.5


def test_detector_covers_the_volume_with_its_margin(config):
    geometry = ConeBeamGeometry.from_config(config, n_projections=16)
    margin = config["scan"]["detector_margin_px"]
    shadow = forward_project(np.ones(geometry.volume_shape, np.float32), geometry, backend=BACKEND) > 0
    cols, rows = shadow.any(axis=(0, 1)), shadow.any(axis=(0, 2))
    # nothing of the volume falls in the margin, and the shadow reaches to within 2 px of it
    assert not cols[:margin].any() and not cols[-margin:].any()
    assert not rows[:margin].any() and not rows[-margin:].any()
    assert cols[margin + 2] and cols[-margin - 3] and rows[margin + 2] and rows[-margin - 3]


def test_fdk_reconstructs_the_foam(foam, foam_scan, interior):
    """Noiseless FDK equals the phantom up to FDK's own ~0.6-voxel blur, with the right grey scale.

    Checked by hand once (this phantom, 96 views; correct: 32.1 dB, mean ratio 0.998): reversed
    angles 10.9 dB, volume y axis not flipped 10.6 dB, line integrals in voxels instead of µm
    7.8 dB (ratio 0.25), no ramp filter (backprojection, best scale) 9.9 dB, 10% too bright 23.8 dB;
    2% too bright passes the PSNR bound (30.8 dB) but not the mean ratio (1.018).
    """
    geometry, projections, recon = foam_scan
    reference = gaussian_filter(foam, 0.6)  # interpolations in FP and backprojection
    quality = psnr(recon, reference, interior)
    raw = psnr(recon, foam, interior)
    ratio = float(recon[interior].mean() / foam[interior].mean())
    print(f"FDK vs foam: PSNR {quality:.1f} dB (vs blurred foam), {raw:.1f} dB (vs foam), mean ratio {ratio:.4f}")
    assert quality > 28.0
    assert ratio == pytest.approx(1.0, abs=0.01)


def test_fdk_in_subsets_equals_full_fdk(foam, foam_scan):
    geometry, projections, recon = foam_scan
    chunked = fdk_reconstruct(projections, geometry, backend=BACKEND, chunk=24)  # 4 subsets of 24
    streamed = reconstruct_noiseless(foam, geometry, backend=BACKEND, chunk=32)  # project+FDK per subset
    print(f"subset FDK vs full: {rel_l2(chunked, recon):.2e}, noiseless streamed: {rel_l2(streamed, recon):.2e}")
    assert rel_l2(chunked, recon) < 1e-5
    assert rel_l2(streamed, recon) < 1e-5


# ---------------------------------------------------------------------------------------------
# degradation
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fine_foam(config):
    """A 48³ foam on 1 µm voxels, where σ = 1…5 µm spans 1–5 voxels, and its noiseless 96-view ground truth."""
    fine = copy.deepcopy(config)
    fine["voxel_size_um"] = 1.0
    fine["phantom"].update(cylinder_radius_um=20.0, max_void_radius_um=5.0, n_voids=40, n_candidates=5000)
    fine["scan"].update(source_to_object_um=275.0, source_to_detector_um=1100.0)
    volume = generate_foam(fine, 3)[0]
    geometry = ConeBeamGeometry.from_config(fine, n_projections=96)
    clean = forward_project(volume, geometry, backend=BACKEND)
    truth = fdk_reconstruct(clean, geometry, backend=BACKEND)
    mask = fov_mask(fine)
    mask[:4] = mask[-4:] = False
    return geometry, clean, truth, mask


def test_blur_sets_the_effective_resolution(fine_foam):
    """Gaussian-fit resolution (GT blurred to best match) grows with σ and is within 30% of σ ≥ 3 µm."""
    geometry, clean, truth, mask = fine_foam
    sigmas = [1.0, 3.0, 5.0]
    candidates = np.arange(0.0, 7.01, 0.5)  # refined by best_gaussian_fit's parabola
    fitted = []
    for sigma in sigmas:
        blurred = degrade_projections(clean, geometry, sigma, None, 0.03, np.random.default_rng(0))
        recon = fdk_reconstruct(blurred, geometry, backend=BACKEND)
        curve = gaussian_fit(recon, truth, geometry.voxel_size_um, candidates, mask=mask)
        fitted.append(best_gaussian_fit(curve)["best_blur_sigma_um"])
    print("blur σ (µm) -> Gaussian-fit σ (µm):", dict(zip(sigmas, fitted)))
    assert all(a < b for a, b in zip(fitted, fitted[1:]))
    for sigma, found in zip(sigmas, fitted):
        if sigma >= 3:
            assert found == pytest.approx(sigma, rel=0.3)


def test_noise_variance_scales_with_inverse_photon_count(config):
    """Flat cylinder: voxel noise variance at I0 and 4·I0 differ by 4 (Poisson on counts)."""
    geometry = ConeBeamGeometry.from_config(config, n_projections=64)
    nz, ny, nx = geometry.volume_shape
    yy, xx = np.mgrid[:ny, :nx] - (ny - 1) / 2
    cylinder = np.broadcast_to((yy**2 + xx**2 <= 14**2), geometry.volume_shape).astype(np.float32)
    clean = forward_project(cylinder, geometry, backend=BACKEND)
    noiseless = fdk_reconstruct(clean, geometry, backend=BACKEND)
    centre = np.zeros(geometry.volume_shape, bool)
    centre[12:-12] = yy**2 + xx**2 <= 9**2  # flat: away from the cylinder wall and the cone edge
    variances = {}
    for photons, seed in [(4000, 1), (16000, 2)]:
        noisy = degrade_projections(
            clean, geometry, 0.0, photons, config["scan"]["attenuation_per_um"], np.random.default_rng(seed)
        )
        recon = fdk_reconstruct(noisy, geometry, backend=BACKEND)
        variances[photons] = float(np.var(recon[centre] - noiseless[centre]))
    ratio = variances[4000] / variances[16000]
    print(f"noise variance: {variances}, ratio {ratio:.2f} (expected 4)")
    assert ratio == pytest.approx(4.0, rel=0.25)


def test_degradation_is_deterministic_and_chunk_independent(config, foam_scan):
    geometry, projections, _ = foam_scan
    scan = config["scan"]

    def degrade(seed, chunk=None):
        return degrade_projections(
            projections,
            geometry,
            3.0,
            scan["photons_per_pixel"],
            scan["attenuation_per_um"],
            np.random.default_rng(seed),
            chunk=chunk,
        )

    first, again, chunked, other = degrade(7), degrade(7), degrade(7, chunk=10), degrade(8)
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() == chunked.tobytes()
    assert not np.array_equal(first, other)
    recon_a = fdk_reconstruct(first, geometry, backend=BACKEND)
    recon_b = fdk_reconstruct(again, geometry, backend=BACKEND)
    assert recon_a.tobytes() == recon_b.tobytes()
    assert not np.array_equal(recon_a, fdk_reconstruct(other, geometry, backend=BACKEND))


def test_blur_does_not_mix_views_or_change_mass(foam_scan):
    """Blur acts within each projection (mode 'constant': the detector edge is air), never across angles."""
    geometry, projections, _ = foam_scan
    single = np.zeros_like(projections)
    single[5] = projections[5]
    blurred = degrade_projections(single, geometry, 8.0, None, 0.03, np.random.default_rng(0))
    assert np.abs(np.delete(blurred, 5, axis=0)).max() == 0
    assert blurred[5].sum() == pytest.approx(projections[5].sum(), rel=1e-4)


# ---------------------------------------------------------------------------------------------
# files and stages
# ---------------------------------------------------------------------------------------------


def test_projection_file_round_trip(tmp_path, foam_scan):
    geometry, projections, _ = foam_scan
    path = tmp_path / "p.h5"
    write_projections(path, projections, geometry, realization="train", sigma_um=3.0)
    proj, geom, attrs = read_projections(path)
    assert geom == geometry and proj.tobytes() == projections.tobytes()
    assert attrs["realization"] == "train" and attrs["sigma_um"] == 3.0
    with h5py.File(path, "r+") as fh:
        del fh["angles_rad"]
    with pytest.raises(InputError, match="not a projection file"):
        read_projections(path)
    with pytest.raises(InputError, match="not found"):
        read_projections(tmp_path / "missing.h5")


def test_workflow_stages_write_volumes_with_provenance(tmp_path, config, foam):
    """project → degrade (σ 1 and 9) → FDK, and the ground truth, on the test preset with fewer views."""
    cfg = copy.deepcopy(config)
    cfg["scan"].update(n_projections=48, n_projections_ground_truth=96, projection_chunk=20)
    phantom = tmp_path / "phantoms" / "train.h5"
    write_volume(phantom, foam, cfg["voxel_size_um"])
    clean = tmp_path / "clean.h5"
    project_phantom_file(phantom, clean, cfg, backend=BACKEND, realization="train", config_hash="abc")
    recons = {}
    for sigma in (1.0, 9.0):
        scan_path = tmp_path / f"sigma{sigma:g}.h5"
        degrade_scan_file(
            clean,
            scan_path,
            sigma,
            seed=11 + int(sigma),
            photons_per_pixel=cfg["scan"]["photons_per_pixel"],
            attenuation_per_um=cfg["scan"]["attenuation_per_um"],
            chunk=20,
            realization="train",
        )
        out = tmp_path / "recon" / f"sigma{sigma:g}.h5"
        fdk_file(scan_path, out, backend=BACKEND, chunk=20, config_hash="abc")
        recons[sigma], attrs = read_volume(out)
        assert attrs["sigma_um"] == sigma and attrs["seed"] == 11 + int(sigma)
        assert attrs["realization"] == "train" and attrs["backend"] == "rtk" and attrs["n_projections"] == 48
        assert attrs["config_hash"] == "abc" and attrs["voxel_size_um"] == cfg["voxel_size_um"]
    truth_path = tmp_path / "recon" / "ground_truth.h5"
    ground_truth_file(phantom, truth_path, cfg, backend=BACKEND, realization="train", seed=1)
    truth, attrs = read_volume(truth_path)
    assert attrs["n_projections"] == 96 and attrs["sigma_um"] == 0.0
    mask = fov_mask(cfg)
    mask[:4] = mask[-4:] = False
    sharp, blurry = psnr(recons[1.0], truth, mask), psnr(recons[9.0], truth, mask)
    print(f"stage outputs vs ground truth: σ 1 µm {sharp:.1f} dB, σ 9 µm {blurry:.1f} dB")
    assert sharp > blurry + 3
    with pytest.raises(InputError, match="volume_shape"):
        bad = copy.deepcopy(cfg)
        bad["volume_shape"] = [40, 48, 48]
        project_phantom_file(phantom, tmp_path / "x.h5", bad, backend=BACKEND)


def test_simulate_volume_file_reads_tiff_and_hdf5(tmp_path):
    import tifffile

    volume = asymmetric_phantom((20, 24, 24)) / 2
    tif = tmp_path / "vol.tif"
    tifffile.imwrite(tif, volume)
    with pytest.raises(InputError, match="voxel_size_um"):
        simulate_volume_file(tif, tmp_path / "r.h5", sigma_um=3.0, backend=BACKEND)
    kwargs = dict(sigma_um=3.0, n_projections=32, photons_per_pixel=math.inf, backend=BACKEND, seed=0)
    out_tif = simulate_volume_file(tif, tmp_path / "r_tif.h5", voxel_size_um=2.0, **kwargs)
    h5 = tmp_path / "vol.h5"
    write_volume(h5, volume, 2.0)
    out_h5 = simulate_volume_file(h5, tmp_path / "r_h5.h5", **kwargs)
    recon_tif, attrs = read_volume(out_tif)
    recon_h5, _ = read_volume(out_h5)
    assert recon_tif.shape == volume.shape and attrs["sigma_um"] == 3.0 and attrs["voxel_size_um"] == 2.0
    assert recon_tif.tobytes() == recon_h5.tobytes()
    # σ 3 µm = 1.5 voxels, with FDK's own ~0.6 voxel; away from the top and bottom faces (cone edge)
    blurred = gaussian_filter(volume, math.hypot(1.5, 0.6))
    inner = (slice(5, -5), slice(3, -3), slice(3, -3))
    error = rel_l2(recon_tif[inner], blurred[inner])
    print(f"simulate_volume_file, σ 3 µm: rel. L2 to the 3D-blurred volume {error:.3f}")
    assert error < 0.08


def test_astra_geometry_is_the_frame_of_the_raymarcher():
    """Without a GPU, check ASTRA's own vectors (``geom_2vec``, plain Python) against docs/ct_geometry.md#the-frame."""
    astra = pytest.importorskip("astra")
    from resrecover.ct.astra_backend import projection_geometry, volume_geometry

    geometry = ConeBeamGeometry.covering((24, 28, 32), 4.0, 400.0, 1600.0, 5, margin_px=2)
    geometry = geometry.with_angles(full_circle_angles(5, first_angle_rad=0.3))
    vectors = astra.functions.geom_2vec(projection_geometry(geometry))["Vectors"]
    th = geometry.angles
    s, c, zero = np.sin(th), np.cos(th), np.zeros_like(th)
    expected = np.column_stack(
        [
            geometry.sod_um * s,
            -geometry.sod_um * c,
            zero,  # source
            -geometry.odd_um * s,
            geometry.odd_um * c,
            zero,  # detector centre
            c * geometry.pitch_um,
            s * geometry.pitch_um,
            zero,  # next column
            zero,
            zero,
            zero + geometry.pitch_um,  # next row
        ]
    )
    assert np.allclose(vectors, expected)
    vol = volume_geometry(geometry)
    assert (vol["GridSliceCount"], vol["GridRowCount"], vol["GridColCount"]) == geometry.volume_shape
    win = vol["option"]
    assert (win["WindowMinX"], win["WindowMaxY"], win["WindowMinZ"]) == (-64.0, 56.0, -48.0)
