"""Image metrics (MSE, PSNR, 3D SSIM), MS-SSIM maps and table collection (docs/design.md#evaluation)."""

import logging
import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from resrecover import ResrecoverError
from resrecover.evaluate.metrics import collect_tables, image_metrics, mse, psnr, ssim_3d, ssim_map_3d
from resrecover.evaluate.msssim import downsample2, max_scales, msssim_map_3d, upsample2


def foam_like(shape, seed, n_voids=40, radius=(2.0, 7.0)):
    """Material 1 with spherical voids 0 (a small stand-in for the foam phantom), float32."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    volume = np.ones(shape, np.float32)
    for _ in range(n_voids):
        centre = rng.uniform(0, shape)
        r = rng.uniform(*radius)
        dist2 = sum((g - c) ** 2 for g, c in zip(grid, centre))
        volume[dist2 < r * r] = 0.0
    return volume


def noisy(volume, sigma_noise, seed, blur=0.0):
    rng = np.random.default_rng(seed)
    out = ndi.gaussian_filter(volume, blur) if blur else volume.copy()
    return (out + sigma_noise * rng.standard_normal(volume.shape)).astype(np.float32)


PAIRS = {
    "random": lambda: (
        np.random.default_rng(1).random((24, 30, 27), dtype=np.float32),
        np.random.default_rng(2).random((24, 30, 27), dtype=np.float32),
    ),
    "structured": lambda: (noisy(foam_like((32, 32, 32), 3), 0.05, 4, blur=1.2), foam_like((32, 32, 32), 3)),
    "offset": lambda: (  # far from zero: the centring of the sums must keep them precise
        noisy(foam_like((20, 26, 23), 5), 0.02, 6, blur=0.8) + 7.0,
        foam_like((20, 26, 23), 5) + 7.0,
    ),
}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_psnr_and_mse_match_skimage(name):
    a, b = PAIRS[name]()
    expected = peak_signal_noise_ratio(b.astype(np.float64), a.astype(np.float64), data_range=1.0)
    assert psnr(a, b, 1.0) == pytest.approx(expected, abs=1e-6)
    assert mse(a, b) == pytest.approx(np.mean((a.astype(np.float64) - b) ** 2), rel=1e-12)


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("window", [3, 7, 9])
def test_ssim_matches_skimage(name, window):
    a, b = PAIRS[name]()
    expected, expected_map = structural_similarity(
        a.astype(np.float64), b.astype(np.float64), data_range=1.0, win_size=window, full=True
    )
    assert ssim_3d(a, b, 1.0, window_px=window) == pytest.approx(expected, abs=1e-3)
    assert abs(ssim_3d(a, b, 1.0, window_px=window) - expected) < 1e-5  # in practice ~1e-7
    local = ssim_map_3d(a, b, 1.0, window_px=window)
    assert local.shape == a.shape and local.dtype == np.float32
    assert np.abs(local - expected_map).max() < 1e-3


def test_gaussian_window_ssim_matches_skimage():
    a, b = PAIRS["structured"]()
    expected = structural_similarity(a.astype(np.float64), b.astype(np.float64), data_range=1.0, gaussian_weights=True)
    assert ssim_3d(a, b, 1.0, gaussian=True) == pytest.approx(expected, abs=1e-6)
    population = structural_similarity(
        a.astype(np.float64),
        b.astype(np.float64),
        data_range=1.0,
        gaussian_weights=True,
        use_sample_covariance=False,
    )
    assert ssim_3d(a, b, 1.0, gaussian=True, sample_covariance=False) == pytest.approx(population, abs=1e-6)


def test_ssim_streaming_is_independent_of_the_slab_size(monkeypatch):
    """The slab-streamed map is the same whether a slab holds one plane or the whole volume."""
    import resrecover.evaluate.metrics as metrics

    a, b = PAIRS["structured"]()  # 32³: slabs of 8 (the smallest), 12 (a short last slab) and 32 planes
    maps = []
    for voxels in (1, 12 * 32 * 32, 1 << 30):
        monkeypatch.setattr(metrics, "_SLAB_VOXELS", voxels)
        maps.append(ssim_map_3d(a, b, 1.0, window_px=7))
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-6)
    np.testing.assert_allclose(maps[0], maps[2], atol=1e-6)


def test_threaded_ssim_equals_one_pass(monkeypatch):
    """Splitting the map into z-parts on threads (with halos) gives bit-identical maps and means."""
    import resrecover.evaluate.metrics as metrics

    rng = np.random.default_rng(3)
    a = ndi.gaussian_filter(rng.random((150, 40, 36)), 1.5).astype(np.float32)
    b = (a + 0.05 * rng.standard_normal(a.shape)).astype(np.float32)
    maps, means = [], []
    for workers in (1, 2, 3):
        result = np.full(a.shape, np.nan, np.float32)

        def store(z0, ssim, result=result):
            result[z0 : z0 + ssim.shape[0]] = ssim

        metrics._for_each_ssim_chunk(a, b, 1.0, 7, False, True, store, workers=workers)
        maps.append(result)
        monkeypatch.setattr(metrics, "_default_workers", lambda workers=workers: workers)
        means.append(ssim_3d(a, b, 1.0))
    assert not np.isnan(maps[0]).any()
    for other in maps[1:]:
        np.testing.assert_array_equal(maps[0], other)
    assert means[0] == means[1] == means[2]
    assert abs(means[0] - structural_similarity(a, b, data_range=1.0, win_size=7)) < 1e-6


def test_masked_metrics_average_inside_the_mask():
    a, b = PAIRS["structured"]()
    mask = np.zeros(a.shape, bool)
    mask[5:25, 8:30, 3:20] = True
    diff = a.astype(np.float64) - b
    assert mse(a, b, mask) == pytest.approx(np.mean(diff[mask] ** 2), rel=1e-12)
    local = ssim_map_3d(a, b, 1.0, window_px=5)
    interior = np.zeros(a.shape, bool)
    interior[2:-2, 2:-2, 2:-2] = True  # the border that scikit-image leaves out too
    assert ssim_3d(a, b, 1.0, window_px=5, mask=mask) == pytest.approx(local[mask & interior].mean(), abs=1e-6)
    # a mask that excludes the worst region raises the score
    worst = local < np.quantile(local, 0.2)
    assert ssim_3d(a, b, 1.0, window_px=5, mask=~worst) > ssim_3d(a, b, 1.0, window_px=5)


def test_image_metrics_of_identical_and_degraded_volumes():
    b = foam_like((24, 24, 24), 7)
    same = image_metrics(b, b, data_range=1.0, window_px=7, mask=None)
    assert set(same) == {"mse", "psnr", "ssim"}
    assert same["mse"] == 0 and math.isinf(same["psnr"]) and same["ssim"] == pytest.approx(1.0, abs=1e-6)
    mild = image_metrics(noisy(b, 0.02, 1, blur=0.7), b, 1.0, 7, None)
    strong = image_metrics(noisy(b, 0.02, 1, blur=2.0), b, 1.0, 7, None)
    assert strong["mse"] > mild["mse"] > 0
    assert strong["psnr"] < mild["psnr"]
    assert strong["ssim"] < mild["ssim"] < 1


def test_metric_errors_name_the_problem():
    a = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(ResrecoverError, match="shape"):
        mse(a, np.zeros((8, 8, 9), np.float32))
    with pytest.raises(ResrecoverError, match="window"):
        ssim_3d(a, a, 1.0, window_px=9)
    with pytest.raises(ResrecoverError, match="odd"):
        ssim_3d(a, a, 1.0, window_px=4)
    with pytest.raises(ResrecoverError, match="data_range"):
        psnr(a, a, 0.0)
    with pytest.raises(ResrecoverError, match="no voxel"):
        mse(a, a, np.zeros(a.shape, bool))


# ------------------------------------------------------------------------------------------- MS-SSIM


def test_msssim_of_identical_volumes_is_one_everywhere():
    b = foam_like((40, 36, 44), 11)
    quality, score = msssim_map_3d(b, b, 1.0, scales=3, weights=(0.2, 0.3, 0.5))
    assert quality.shape == b.shape and quality.dtype == np.float32
    assert np.all(quality == 1.0)
    assert score == 1.0


def textbook_ssim_terms(x, y, data_range=1.0, sigma=1.5, radius=5):
    """Luminance and contrast-structure maps straight from Wang et al. (2004): five Gaussian-filtered
    images in float64, population (co)variances, replicate padding (MATLAB's ssim)."""
    x, y = x.astype(np.float64), y.astype(np.float64)

    def blur(v):
        return ndi.gaussian_filter(v, sigma, mode="nearest", radius=radius)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    return (2 * mx * my + c1) / (mx**2 + my**2 + c1), (2 * cxy + c2) / (vx + vy + c2)


def test_msssim_matches_the_textbook_formula():
    reference = foam_like((36, 40, 44), 16)
    volume = noisy(reference, 0.05, 17, blur=1.0)
    lum, cs = textbook_ssim_terms(volume, reference)
    quality, score = msssim_map_3d(volume, reference, 1.0, scales=1, weights=(1.0,))
    np.testing.assert_allclose(quality, np.clip(lum * cs, 0, None), atol=1e-4)
    assert score == pytest.approx(np.mean(lum * cs), abs=1e-5)
    # two scales: cs at full resolution, l·cs on the 2×2×2 block means
    lum1, cs1 = textbook_ssim_terms(downsample2(volume), downsample2(reference))
    _, score2 = msssim_map_3d(volume, reference, 1.0, scales=2, weights=(0.4, 0.6))
    assert score2 == pytest.approx(np.mean(cs) ** 0.4 * np.mean(lum1 * cs1) ** 0.6, abs=1e-5)


def test_msssim_score_and_map_fall_with_blur():
    reference = foam_like((48, 48, 48), 12, n_voids=60)
    scores, means = [], []
    for blur in (0.5, 1.0, 2.0, 3.0):
        quality, score = msssim_map_3d(
            ndi.gaussian_filter(reference, blur), reference, 1.0, scales=4, weights=(0.1, 0.2, 0.3, 0.4)
        )
        assert quality.shape == reference.shape
        assert 0.0 <= quality.min() and quality.max() <= 1.0
        scores.append(score)
        means.append(float(quality.mean()))
    assert all(1.0 > s1 > s2 for s1, s2 in zip(scores, scores[1:])), scores
    assert all(m1 > m2 for m1, m2 in zip(means, means[1:])), means


def test_msssim_map_marks_the_damaged_region():
    """A hallucinated void in one corner gives low map values there, not elsewhere."""
    reference = foam_like((48, 48, 48), 13, n_voids=30)
    damaged = reference.copy()
    damaged[8:16, 8:16, 8:16] = 0.0
    damaged[8:16, 8:16, 8:16][reference[8:16, 8:16, 8:16] == 0] = 1.0
    quality, score = msssim_map_3d(damaged, reference, 1.0, scales=3, weights=(0.3, 0.4, 0.3))
    assert score < 1
    assert quality[8:16, 8:16, 8:16].mean() < 0.8
    assert quality[32:, 32:, 32:].mean() > 0.98


def test_msssim_reduces_scales_for_small_volumes(caplog):
    reference = foam_like((48, 48, 48), 14)
    assert max_scales((48, 48, 48)) == 4  # 48 → 24 → 12 → 6 voxels; a fifth scale would be 3
    with caplog.at_level(logging.WARNING):
        quality, score = msssim_map_3d(ndi.gaussian_filter(reference, 1.0), reference, 1.0)
    assert "allows 4 of the 5 scales" in caplog.text
    assert quality.shape == reference.shape and 0 < score < 1
    with pytest.raises(ResrecoverError, match="too small"):
        msssim_map_3d(reference[:4], reference[:4], 1.0)
    with pytest.raises(ResrecoverError, match="weights"):
        msssim_map_3d(reference, reference, 1.0, scales=3)


def test_msssim_mask_restricts_the_score():
    reference = foam_like((40, 40, 40), 15)
    degraded = reference.copy()
    degraded[:, :, 20:] = ndi.gaussian_filter(reference, 2.0)[:, :, 20:]  # only the right half is blurred
    left = np.zeros(reference.shape, bool)
    left[:, :, :16] = True
    weights = (0.3, 0.4, 0.3)
    _, whole = msssim_map_3d(degraded, reference, 1.0, scales=3, weights=weights)
    _, inside = msssim_map_3d(degraded, reference, 1.0, scales=3, weights=weights, mask=left)
    assert inside > whole
    assert inside > 0.95


def test_down_and_upsampling_keep_the_geometry():
    """2×2×2 block means then linear upsampling reproduce a linear ramp away from the edges."""
    z, y, x = np.indices((20, 17, 22), dtype=np.float32)
    ramp = 0.3 * z + 0.2 * y - 0.1 * x
    coarse = downsample2(ramp)
    assert coarse.shape == (10, 9, 11)
    back = upsample2(coarse, ramp.shape)
    assert back.shape == ramp.shape
    np.testing.assert_allclose(back[1:-1, 1:-2, 1:-1], ramp[1:-1, 1:-2, 1:-1], atol=1e-5)


# ------------------------------------------------------------------------------------ table collection


def test_collect_tables_concatenates_and_sorts(tmp_path):
    rows = [
        ("srcnn", "alternate", 9.0, 0.02),
        ("deepnet", "train", 3.0, 0.01),
        ("deepnet", "alternate", 9.0, 0.03),
        ("deepnet", "alternate", 3.0, 0.004),
    ]
    paths = []
    for i, (method, realization, sigma, err) in enumerate(rows):
        path = tmp_path / f"{i}.csv"
        pd.DataFrame(
            {
                "method": [method],
                "realization": [realization],
                "sigma_um": [sigma],
                "mse": [err],
                "psnr": [1.0],
                "ssim": [0.9],
            }
        ).to_csv(path, index=False)
        paths.append(path)
    table = collect_tables(paths)
    assert list(table.columns) == ["method", "realization", "sigma_um", "mse", "psnr", "ssim"]
    assert list(zip(table.method, table.realization, table.sigma_um)) == [
        ("deepnet", "alternate", 3.0),
        ("deepnet", "alternate", 9.0),
        ("deepnet", "train", 3.0),
        ("srcnn", "alternate", 9.0),
    ]
    odd = tmp_path / "odd.csv"
    pd.DataFrame({"method": ["rl"], "frequency": [0.1]}).to_csv(odd, index=False)
    with pytest.raises(ResrecoverError, match="odd.csv"):
        collect_tables([*paths, odd])
    with pytest.raises(ResrecoverError, match="missing.csv"):
        collect_tables([tmp_path / "missing.csv"])
