"""3D Richardson-Lucy (resrecover.methods.rl): converges, equals scikit-image, no darkened edges."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from resrecover.io import read_volume, write_volume
from resrecover.methods.rl import gaussian_psf, richardson_lucy_3d, richardson_lucy_file, rl_padding


def blocky_object(shape, seed=0):
    """A material-fraction object: smooth random blobs thresholded to 0/1."""
    rng = np.random.default_rng(seed)
    return (ndimage.gaussian_filter(rng.random(shape), 2.5) > 0.5).astype(np.float32)


def test_error_to_the_object_falls_over_iterations():
    obj = blocky_object((24, 24, 26))
    sigma = 1.5
    blurred = ndimage.gaussian_filter(obj, sigma, mode="reflect", truncate=4.0)
    errors = [np.mean((richardson_lucy_3d(blurred, sigma, n) - obj) ** 2) for n in (0, 2, 8, 30)]
    assert errors[0] == pytest.approx(np.mean((blurred - obj) ** 2), rel=1e-4)  # 0 iterations = the input
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.75 * errors[0], errors


@pytest.mark.parametrize("sigma", [1.2, (0.8, 1.0, 1.4)])
def test_equals_scikit_image_with_the_same_boundary(sigma):
    """Same PSF, iterations, flat 0.5 start and filter_epsilon as scikit-image.

    Ours convolves circularly on the reflect-padded grid. scikit-image convolves with zeros outside
    its input, so it is given our padded grid wrapped periodically by more than the PSF reach and
    cropped back: then the two differ only by float32 vs float64 rounding (we see 1.4e-6 and 3.5e-6).
    """
    from skimage.restoration import richardson_lucy

    obj = blocky_object((20, 22, 24), seed=1)
    blurred = ndimage.gaussian_filter(obj, sigma, mode="reflect") + 0.05
    pad, iterations, wrap = 4, 15, 20
    ours = richardson_lucy_3d(blurred, sigma, iterations, pad_vox=pad, initial=0.5, filter_epsilon=1e-6,
                              backend="numpy")
    widths = rl_padding(blurred.shape, (pad,) * 3)
    padded = np.pad(blurred.astype(np.float64), widths, mode="reflect")
    periodic = np.pad(padded, wrap, mode="wrap")
    theirs = richardson_lucy(periodic, gaussian_psf(sigma), iterations, clip=False, filter_epsilon=1e-6)
    crop = tuple(slice(wrap + before, wrap + before + n) for (before, _), n in zip(widths, blurred.shape))
    np.testing.assert_allclose(ours, theirs[crop], atol=2e-5)


def test_close_to_scikit_image_on_the_reflect_padded_volume():
    """scikit-image's zero boundary at the far side of a wide reflect padding: agreement within 1e-2."""
    from skimage.restoration import richardson_lucy

    obj = blocky_object((18, 18, 18), seed=2)
    sigma, pad = 1.2, 12
    blurred = ndimage.gaussian_filter(obj, sigma, mode="reflect") + 0.05
    ours = richardson_lucy_3d(blurred, sigma, 15, pad_vox=pad, initial=0.5, filter_epsilon=1e-6)
    widths = rl_padding(blurred.shape, (pad,) * 3)
    theirs = richardson_lucy(np.pad(blurred, widths, mode="reflect"), gaussian_psf(sigma), 15, clip=False,
                             filter_epsilon=1e-6)
    crop = tuple(slice(before, before + n) for (before, _), n in zip(widths, blurred.shape))
    assert np.abs(ours - theirs[crop]).max() < 1e-2


def border_shell(shape, width):
    shell = np.ones(shape, bool)
    shell[tuple(slice(width, -width) for _ in shape)] = False
    return shell


def test_no_darkened_edges():
    constant = np.full((24, 26, 28), 0.8, dtype=np.float32)
    result = richardson_lucy_3d(constant, 3.0, 30)
    shell = border_shell(constant.shape, 3)
    assert abs(result[shell].mean() / 0.8 - 1) < 0.01
    assert np.abs(result - 0.8).max() < 1e-3
    # zero padding (what plain FFT deconvolution without care does) corrupts the border: the test can fail
    zero_padded = richardson_lucy_3d(constant, 3.0, 30, pad_mode="constant")
    assert abs(zero_padded[shell].mean() / 0.8 - 1) > 0.01


def test_noisy_material_fraction_is_kept_positive_and_finite():
    rng = np.random.default_rng(5)
    obj = blocky_object((16, 16, 16), seed=3)
    noisy = ndimage.gaussian_filter(obj, 1.0) + rng.normal(0, 0.1, obj.shape).astype(np.float32)
    assert noisy.min() < 0
    result = richardson_lucy_3d(noisy, 1.0, 10)
    assert result.dtype == np.float32 and result.shape == obj.shape
    assert np.isfinite(result).all() and result.min() >= 0
    shifted = richardson_lucy_3d(noisy, 1.0, 10, background=0.5)
    assert np.isfinite(shifted).all() and not np.allclose(shifted, result)


def test_torch_backend_equals_numpy_backend():
    obj = blocky_object((16, 18, 20), seed=4)
    blurred = ndimage.gaussian_filter(obj, 1.3) + 0.02
    a = richardson_lucy_3d(blurred, 1.3, 10, backend="numpy")
    b = richardson_lucy_3d(blurred, 1.3, 10, backend="torch")
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_psf_sums_to_one_and_is_per_axis():
    psf = gaussian_psf((0.0, 1.0, 2.0))
    assert psf.shape == (1, 9, 17)
    assert psf.sum() == pytest.approx(1.0)


def test_file_round_trip_converts_micrometres(tmp_path):
    obj = blocky_object((16, 16, 16), seed=6)
    blurred = ndimage.gaussian_filter(obj, 1.5) + 0.01
    write_volume(tmp_path / "in.h5", blurred, voxel_size_um=2.0)
    richardson_lucy_file(tmp_path / "in.h5", tmp_path / "out.h5", sigma_um=3.0, iterations=5, pad_um=0,
                         device="cpu", config_hash="abc")
    result, attrs = read_volume(tmp_path / "out.h5")
    np.testing.assert_allclose(result, richardson_lucy_3d(blurred, 1.5, 5, device="cpu"), atol=1e-6)
    assert attrs["voxel_size_um"] == 2.0 and attrs["iterations"] == 5 and attrs["config_hash"] == "abc"
    np.testing.assert_allclose(attrs["sigma_vox"], [1.5, 1.5, 1.5])
