"""Gaussian-fit effective resolution and Fourier shell correlation (docs/design.md#evaluation; paper §2.5.1, Fig. 9)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from resrecover import ResrecoverError
from resrecover.evaluate.metrics import mse
from resrecover.evaluate.resolution import (
    FWHM_PER_SIGMA,
    best_gaussian_fit,
    blur_sigmas_um,
    fourier_shell_correlation,
    fsc_resolution,
    gaussian_fit,
)
from resrecover.masks import cylinder_mask


def random_spheres(shape, voxel_um, seed, density_per_um3=2.5e-4, radius_um=(2.0, 8.0)):
    """Material 1 with spherical voids 0, sizes in µm (so the same foam on any voxel grid)."""
    rng = np.random.default_rng(seed)
    centres_um = (np.indices(shape, dtype=np.float32) + 0.5) * voxel_um
    extent_um = np.asarray(shape) * voxel_um
    volume = np.ones(shape, np.float32)
    for _ in range(int(density_per_um3 * np.prod(extent_um))):
        centre = rng.uniform(0, extent_um)
        r = rng.uniform(*radius_um)
        dist2 = sum((g - c) ** 2 for g, c in zip(centres_um, centre))
        volume[dist2 < r * r] = 0.0
    return volume


@pytest.mark.parametrize("voxel_um, n", [(1.0, 48), (2.0, 32)])
def test_gaussian_fit_recovers_a_known_blur(voxel_um, n):
    """A synthetic volume blurred by σ = 2.3 µm (ndimage's sampled kernel) is fitted within 0.25 µm."""
    truth = random_spheres((n, n, n), voxel_um, seed=1)
    blurred = ndi.gaussian_filter(truth, 2.3 / voxel_um)
    noise = np.random.default_rng(2).standard_normal(truth.shape).astype(np.float32)
    mask = cylinder_mask(truth.shape, radius_um=0.45 * n * voxel_um, voxel_size_um=voxel_um)
    curve = gaussian_fit(blurred + 0.02 * noise, truth, voxel_um, blur_sigmas_um(5.0, 0.25), mask=mask)
    assert list(curve.columns) == ["blur_sigma_um", "mse"]
    assert len(curve) == 21 and curve.blur_sigma_um.iloc[0] == 0.0
    best = best_gaussian_fit(curve)
    assert best["best_blur_sigma_um"] == pytest.approx(2.3, abs=0.25)
    assert best["best_fwhm_um"] == pytest.approx(FWHM_PER_SIGMA * best["best_blur_sigma_um"])
    assert best["mse"] == pytest.approx(curve.mse.min())
    # the curve falls to the minimum and rises after it
    i = int(curve.mse.idxmin())
    assert np.all(np.diff(curve.mse.to_numpy()[: i + 1]) < 0) and np.all(np.diff(curve.mse.to_numpy()[i:]) > 0)


def test_gaussian_fit_blur_equals_ndimage_reflect():
    """σ = 0 is the plain MSE; the Fourier blur with mirror padding equals ndimage's 'reflect' blur."""
    voxel_um = 1.5
    truth = random_spheres((20, 24, 28), voxel_um, seed=3)
    volume = ndi.gaussian_filter(truth, 1.0) + 0.05
    sigmas = [0.0, 3.0, 6.0]
    curve = gaussian_fit(volume, truth, voxel_um, sigmas)
    assert curve.mse.iloc[0] == pytest.approx(mse(volume, truth), rel=1e-12)
    for sigma_um, found in zip(sigmas[1:], curve.mse.iloc[1:]):
        reference = ndi.gaussian_filter(truth.astype(np.float64), sigma_um / voxel_um, mode="reflect", truncate=6.0)
        assert found == pytest.approx(np.mean((volume - reference) ** 2), rel=2e-3)


def test_best_gaussian_fit_refines_with_a_parabola():
    x = np.arange(0, 5.01, 0.5)
    curve = pd.DataFrame({"blur_sigma_um": x, "mse": 0.3 * (x - 1.87) ** 2 + 0.01})
    best = best_gaussian_fit(curve.sample(frac=1.0, random_state=0))  # row order does not matter
    assert best["best_blur_sigma_um"] == pytest.approx(1.87, abs=1e-9)
    assert best["best_fwhm_um"] == pytest.approx(1.87 * 2 * math.sqrt(2 * math.log(2)), abs=1e-9)
    assert best["mse"] == pytest.approx(curve.mse.min())
    # minimum at the end of the grid: the grid value, no extrapolation
    edge = pd.DataFrame({"blur_sigma_um": x, "mse": (x - 9.0) ** 2})
    assert best_gaussian_fit(edge)["best_blur_sigma_um"] == 5.0
    with pytest.raises(ResrecoverError, match="mse"):
        best_gaussian_fit(pd.DataFrame({"blur_sigma_um": x}))


def test_blur_grid_follows_the_config_keys():
    grid = blur_sigmas_um(10.0, 0.25)
    assert len(grid) == 41 and grid[0] == 0.0 and grid[-1] == 10.0
    with pytest.raises(ResrecoverError):
        blur_sigmas_um(10.0, 0.0)


def test_fsc_of_identical_volumes_is_one():
    truth = random_spheres((32, 32, 32), 1.0, seed=4)
    for taper in (True, False):
        fsc = fourier_shell_correlation(truth, truth, voxel_size_um=1.0, mask_taper=taper)
        assert list(fsc.columns) == ["frequency", "fsc"]
        assert len(fsc) == 16
        assert fsc.frequency.iloc[-1] == pytest.approx(0.5)  # Nyquist of 1 µm voxels, in cycles/µm
        np.testing.assert_allclose(fsc.fsc, 1.0, atol=1e-5)
    assert math.isnan(fsc_resolution(fsc))


def test_fsc_resolution_grows_with_blur():
    voxel_um = 2.0
    truth = random_spheres((40, 40, 40), voxel_um, seed=5)
    noise = np.random.default_rng(6).standard_normal(truth.shape).astype(np.float32)
    resolutions = []
    for blur_um in (2.0, 4.0, 8.0):
        volume = ndi.gaussian_filter(truth, blur_um / voxel_um) + 0.02 * noise
        fsc = fourier_shell_correlation(volume, truth, voxel_um)
        assert fsc.fsc.iloc[0] > 0.9  # the coarsest shells survive any of these blurs
        resolutions.append(fsc_resolution(fsc, threshold=0.5))
    assert all(np.isfinite(resolutions))
    assert resolutions[0] < resolutions[1] < resolutions[2], resolutions
    assert resolutions[0] > 2 * voxel_um  # never finer than the Nyquist period


def test_fsc_resolution_interpolates_the_first_crossing():
    fsc = pd.DataFrame({"frequency": [0.1, 0.2, 0.3, 0.4], "fsc": [0.9, 0.3, 0.1, 0.5]})
    # crosses 1/7 between 0.2 (0.3) and 0.3 (0.1): f = 0.2 + 0.1 * (0.3 - 1/7) / 0.2
    expected = 1.0 / (0.2 + 0.1 * (0.3 - 1 / 7) / 0.2)
    assert fsc_resolution(fsc) == pytest.approx(expected)
    assert fsc_resolution(fsc, threshold=0.5) == pytest.approx(1.0 / (0.1 + 0.1 * 0.4 / 0.6))
    assert math.isnan(fsc_resolution(fsc, threshold=0.05))
