"""Registration of a high-res interior scan in a low-res large-FOV scan (docs/own_scans.md) on synthetic foam pairs."""

import json

import numpy as np
import pytest

from resrecover import ResrecoverError
from resrecover.io import InputError, open_volume, write_volume, write_volume_as
from resrecover.ownscan.example import make_multiscale_pair, random_voids, voxelize_voids, write_multiscale_example
from resrecover.ownscan.grid import RegistrationError, UpsampledLow, block_mean, resample_low_to_high, scan_grid
from resrecover.ownscan.registration import load_registration, register_files, register_pair, save_registration

FOV = (144, 144, 144)  # µm: the low-res scan's field of view (48³ voxels of 3 µm)
TOLERANCE_VOX = 0.3  # high-res voxels


@pytest.fixture(scope="module")
def voids():
    return random_voids(FOV, 400, (4.0, 12.0), seed=1)


@pytest.fixture(scope="module")
def foam(voids):
    """A foam-like block at 1 µm (material 1, ~30 % voids)."""
    return voxelize_voids(voids, FOV, 1.0)


@pytest.fixture(scope="module")
def pair(foam):
    low, high, offset = make_multiscale_pair(foam, 1.0, ratio=3, roi_start_vox=(40, 53, 47),
                                             roi_shape_vox=(56, 56, 56), noise=0.1, seed=3)
    return low, high, np.asarray(offset)


def _error_vox(result, true_offset_um):
    return np.abs(np.asarray(result.offset_um) - true_offset_um) / result.high_voxel_um


def test_multiscale_pair_geometry(foam):
    low, high, offset = make_multiscale_pair(foam, 1.0, ratio=3, roi_shape_vox=(40, 44, 48),
                                             blur_sigma_um=0.0, noise=0.0, seed=0)
    assert low.shape == (48, 48, 48) and high.shape == (40, 44, 48)
    start = np.asarray(offset, dtype=int)
    # The default ROI is off the low-res grid: a non-integer offset in low-res voxels.
    assert np.all(np.asarray(offset) % 3 != 0)
    np.testing.assert_array_equal(high, foam[start[0]:start[0] + 40, start[1]:start[1] + 44, start[2]:start[2] + 48])
    # Unblurred, low-res voxel k is the mean of fine voxels [3k, 3k+3): corner origins coincide.
    np.testing.assert_allclose(low[5, 7, 9], foam[15:18, 21:24, 27:30].mean(), rtol=1e-5)
    noisy_low, noisy_high, _ = make_multiscale_pair(foam, 1.0, ratio=3, roi_shape_vox=(40, 44, 48),
                                                    blur_sigma_um=0.0, noise=0.1, seed=0)
    again_low, _, _ = make_multiscale_pair(foam, 1.0, ratio=3, roi_shape_vox=(40, 44, 48),
                                           blur_sigma_um=0.0, noise=0.1, seed=0)
    np.testing.assert_array_equal(noisy_low, again_low)  # seeded
    assert np.std(noisy_high - high) == pytest.approx(0.1, rel=0.05)
    assert np.std(noisy_low - low) == pytest.approx(0.1, rel=0.05)


def test_resample_low_to_high_places_voxel_centres_exactly():
    # A low-res volume whose value is the z position (µm) of each voxel centre: linear, so linear and
    # cubic interpolation reproduce the position of every high-res voxel centre exactly.
    low_vox, high_vox = 3.0, 1.0
    z_centres = (np.arange(20) + 0.5) * low_vox
    low = np.broadcast_to(z_centres[:, None, None], (20, 20, 20)).astype(np.float32)
    offset = (25.4, 7.0, 12.25)  # away from the volume edge, where the spline boundary is not linear
    for order in (1, 3):
        out = resample_low_to_high(low, offset, low_vox, high_vox, (12, 5, 6), order=order)
        expected = offset[0] + (np.arange(12) + 0.5) * high_vox
        np.testing.assert_allclose(out[:, 2, 3], expected, atol=1e-3)
    # A block starting further on (slab-wise work) continues the same grid.
    tail = resample_low_to_high(low, offset, low_vox, high_vox, (4, 5, 6), out_start_vox=(8, 0, 0), order=1)
    np.testing.assert_allclose(tail[:, 0, 0], offset[0] + (np.arange(8, 12) + 0.5) * high_vox, atol=1e-3)
    with pytest.raises(RegistrationError, match="leaves the low-res volume"):
        resample_low_to_high(low, (55.0, 0.0, 0.0), low_vox, high_vox, (12, 5, 6))


def test_registration_from_an_approximate_stage_offset(pair):
    low, high, true_offset = pair
    approx = true_offset + np.array([7.0, -8.0, 5.0])  # 2-3 low-res voxels off
    searched = register_pair(low, high, 3.0, 1.0, offset_um=approx)
    assert searched.coarse_method == "local search"
    assert np.all(_error_vox(searched, true_offset) < TOLERANCE_VOX), searched.report
    trusted = register_pair(low, high, 3.0, 1.0, offset_um=approx, search=False)
    assert trusted.coarse_method == "stage offset"
    assert trusted.coarse_offset_um == tuple(approx)
    assert np.all(_error_vox(trusted, true_offset) < TOLERANCE_VOX), trusted.report
    assert trusted.peak > 0.9
    assert "peak" in trusted.report and "stage offset" in trusted.report


def test_registration_by_global_search(pair):
    low, high, true_offset = pair
    result = register_pair(low, high, 3.0, 1.0)
    assert result.coarse_method == "global search"
    assert np.all(_error_vox(result, true_offset) < TOLERANCE_VOX), result.report
    # The offset is a non-integer number of low-res voxels, and found as such.
    assert np.all(np.abs(np.asarray(result.offset_low_vox) - np.round(result.offset_low_vox)) > 0.2)
    # The binned path (for low-res volumes larger than the search budget) lands on the same place.
    binned = register_pair(low, high, 3.0, 1.0, coarse_max_voxels=4000)
    assert "binned" in binned.coarse_method
    assert np.all(_error_vox(binned, true_offset) < TOLERANCE_VOX), binned.report


def test_sub_voxel_offset_and_non_integer_ratio(voids):
    """Both scans voxelized from the same voids at an origin that is fractional in high-res voxels too."""
    rng = np.random.default_rng(11)
    low_vox, high_vox = 2.5, 1.0
    origin = np.array([33.3, 61.7, 41.2])
    low = voxelize_voids(voids, (57, 57, 57), low_vox, supersampling=3) + rng.normal(0, 0.1, (57,) * 3)
    high = voxelize_voids(voids, (48, 48, 48), high_vox, origin_um=origin) + rng.normal(0, 0.1, (48,) * 3)
    result = register_pair(low.astype(np.float32), high.astype(np.float32), low_vox, high_vox)
    assert np.all(_error_vox(result, origin) < TOLERANCE_VOX), result.report


def test_unrelated_pair_is_refused(pair):
    low, _, true_offset = pair
    other = voxelize_voids(random_voids(FOV, 400, (4.0, 12.0), seed=2), FOV, 1.0)
    _, unrelated_high, _ = make_multiscale_pair(other, 1.0, roi_start_vox=(40, 53, 47),
                                                roi_shape_vox=(56, 56, 56), noise=0.1, seed=4)
    with pytest.raises(RegistrationError, match="below min_peak"):
        register_pair(low, unrelated_high, 3.0, 1.0)
    with pytest.raises(RegistrationError, match="below min_peak"):
        register_pair(low, unrelated_high, 3.0, 1.0, offset_um=true_offset)


def test_bad_arguments_are_refused(pair):
    low, high, true_offset = pair
    with pytest.raises(RegistrationError, match="swapped"):
        register_pair(low, high, 1.0, 3.0)
    with pytest.raises(ResrecoverError, match="needs offset_um"):
        register_pair(low, high, 3.0, 1.0, search=False)
    with pytest.raises(ResrecoverError, match="low_voxel_um"):
        register_pair(low, high, None, 1.0)
    with pytest.raises(RegistrationError, match="overlaps the low-res volume by only"):
        register_pair(low, high, 3.0, 1.0, offset_um=(130.0, 0.0, 0.0), search=False)


def test_files_json_and_resampled_training_input(tmp_path, pair):
    low, high, true_offset = pair
    write_volume_as(tmp_path / "low.tif", low, 3.0)
    write_volume_as(tmp_path / "high.zarr", high, 1.0)
    result = register_files(tmp_path / "low.tif", tmp_path / "high.zarr", tmp_path / "reg.json",
                            offset_um=true_offset + 4.0, out_low_on_high=tmp_path / "low_on_high.h5")
    assert np.all(_error_vox(result, true_offset) < TOLERANCE_VOX)
    loaded = load_registration(tmp_path / "reg.json")
    assert loaded == result
    assert json.loads((tmp_path / "reg.json").read_text())["origin"] == "voxel-0 outer corner"
    with open_volume(tmp_path / "low_on_high.h5") as src:
        assert src.shape == high.shape and src.voxel_size_um == 1.0
        written = src.read()
    # Written slab by slab, equal to the whole-volume resampling.
    whole = resample_low_to_high(low, result.offset_um, 3.0, 1.0, high.shape)
    np.testing.assert_allclose(written, whole, atol=1e-4)
    np.testing.assert_allclose(UpsampledLow(low, scan_grid(result))[10:20], whole[10:20], atol=1e-4)
    # The registered training input matches the high-res scan at the low-res resolution.
    assert np.corrcoef(block_mean(written, 3).ravel(), block_mean(high, 3).ravel())[0, 1] > 0.9
    save_registration(tmp_path / "copy.json", loaded)
    assert load_registration(tmp_path / "copy.json") == result
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError, match=r"bad\.json"):
        load_registration(tmp_path / "bad.json")


def test_example_pair_files_register_from_the_stage_offset(tmp_path):
    phantom = voxelize_voids(random_voids((96, 96, 96), 250, (4.0, 12.0), seed=5), (96, 96, 96), 1.0)
    write_volume(tmp_path / "phantom.h5", phantom, 1.0)
    truth = write_multiscale_example(tmp_path / "phantom.h5", tmp_path / "low.tif", tmp_path / "high.h5",
                                     tmp_path / "truth.json", high_extent_um=32.0, noise=0.1, seed=5)
    assert json.loads((tmp_path / "truth.json").read_text()) == truth
    with open_volume(tmp_path / truth["low"]) as low, open_volume(tmp_path / truth["high"]) as high:
        assert low.voxel_size_um == 3.0 and high.voxel_size_um == 1.0
        assert low.shape == (32, 32, 32) and high.shape == (32, 32, 32)
        result = register_pair(low, high, offset_um=truth["stage_offset_um"], search=False)
    assert np.all(_error_vox(result, np.asarray(truth["true_offset_um"])) < TOLERANCE_VOX), result.report
