"""Trust maps without ground truth (src/resrecover/trust): residual, disagreement, per-pore trust, files."""

import copy

import h5py
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from conftest import REPO
from resrecover.config import ConfigError, derive_seed, load_config, training_seed
from resrecover.evaluate.pores import write_labels
from resrecover.io import write_volume
from resrecover.trust import (
    TRUST_DATASETS,
    calibrate_on_overlap,
    disagreement_map,
    ensemble_from_files,
    estimate_blur_um,
    gaussian_blur,
    noise_correlation_factor,
    noise_level_map,
    pore_trust_table,
    read_trust_maps,
    residual_map,
    roc_auc,
    trust_plan,
)
from resrecover.trust.stages import pore_trust_from_files, trust_maps_from_files
from resrecover.trust.validate import size_stratified_auc

SHAPE = (40, 40, 40)
VOXEL_UM = 1.0
SIGMA_UM, TARGET_UM = 3.0, 1.0
NOISE = 0.05


def _ball(shape, centre, radius):
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2


@pytest.fixture(scope="module")
def foam():
    """Material (1) with a few spherical voids (0): the sharp object, its HRES and LRES views."""
    truth = np.ones(SHAPE, np.float32)
    voids = [((10, 12, 12), 5), ((28, 12, 27), 6), ((12, 28, 26), 4), ((28, 28, 10), 5)]
    for centre, radius in voids:
        truth[_ball(SHAPE, centre, radius)] = 0.0
    rng = np.random.default_rng(7)
    lres = gaussian_blur(truth, SIGMA_UM / VOXEL_UM) + rng.normal(0, NOISE, SHAPE).astype(np.float32)
    hres = gaussian_blur(truth, TARGET_UM / VOXEL_UM)  # a perfect recovery aims at the 1 µm target
    return truth, hres, lres


def test_noise_level_is_read_from_the_input_where_it_changes():
    rng = np.random.default_rng(1)
    smooth = gaussian_blur(rng.random((32, 32, 48)).astype(np.float32), 4.0)
    std = np.where(np.arange(48) < 24, 0.02, 0.06).astype(np.float32)[None, None, :]
    noisy = smooth + rng.normal(0, 1, smooth.shape).astype(np.float32) * std
    level = noise_level_map(noisy, block_vox=8)
    assert np.median(level[:, :, :16]) == pytest.approx(0.02, rel=0.15)
    assert np.median(level[:, :, 32:]) == pytest.approx(0.06, rel=0.15)
    # white noise: the full-band / finest-band ratio is 1; smoothed (correlated) noise: larger
    white = rng.normal(0, 1, (32, 32, 32)).astype(np.float32)
    assert noise_correlation_factor(white) == pytest.approx(1.0, abs=0.08)
    assert noise_correlation_factor(ndi.gaussian_filter(white, 0.7)) > 1.5


def test_a_recovery_equal_to_the_truth_reads_noise_level_everywhere(foam):
    _, hres, lres = foam
    residual, noise = residual_map(hres, lres, VOXEL_UM, SIGMA_UM, TARGET_UM)
    assert np.median(noise) == pytest.approx(NOISE, rel=0.1)
    # units: noise variances; a consistent recovery reads 1 on average and nowhere far above it
    assert np.mean(residual) == pytest.approx(1.0, abs=0.12)
    assert np.median(residual) == pytest.approx(1.0, abs=0.12)
    assert np.percentile(residual, 99.9) < 1.8
    # the input itself as the "recovery" is blurred twice: the measurement does not explain that
    blurred_twice, _ = residual_map(lres, lres, VOXEL_UM, SIGMA_UM, TARGET_UM)
    assert np.percentile(blurred_twice, 99) > 3


def test_a_sphere_the_input_cannot_explain_raises_the_residual_and_loses_trust(foam):
    truth, hres, lres = foam
    centre, radius = (20, 30, 18), 4
    assert truth[_ball(SHAPE, centre, radius + 2)].min() == 1.0  # inserted in solid material
    hallucinated = hres.copy()
    hallucinated[_ball(SHAPE, centre, radius)] = 0.0
    residual, _ = residual_map(hallucinated, lres, VOXEL_UM, SIGMA_UM, TARGET_UM)
    clean, _ = residual_map(hres, lres, VOXEL_UM, SIGMA_UM, TARGET_UM)
    inside = _ball(SHAPE, centre, radius)
    assert residual[inside].mean() > 10 * clean[inside].mean()
    assert np.unravel_index(np.argmax(residual), SHAPE) in set(zip(*np.nonzero(_ball(SHAPE, centre, radius + 3))))

    labels, n = ndi.label(hallucinated < 0.5)
    fake = int(labels[centre])
    table = pd.DataFrame({"label": np.arange(1, n + 1)})
    table["matched_gt_label"] = np.where(table["label"] == fake, 0, table["label"])
    same = np.zeros(SHAPE, np.float32)  # an ensemble that agrees everywhere
    scored = pore_trust_table(table, labels, {"residual": residual, "disagreement": same}, wall_voxels=2)
    assert len(scored) == n == 5 and list(scored["label"]) == list(table["label"])
    assert scored.loc[scored["label"] == fake, "trust"].item() < scored.loc[scored["label"] != fake, "trust"].min()
    assert scored.loc[scored["label"] != fake, "trust"].min() > 0.5  # real voids: explained by the input
    spurious = scored["matched_gt_label"] == 0
    assert roc_auc(scored["residual_mean"], spurious) == 1.0
    # a disagreeing ensemble over one real pore lowers that pore's trust (RL-like NaN maps leave it)
    spread = np.where(labels == 1, 0.3, 0.0).astype(np.float32)
    with_spread = pore_trust_table(table, labels, {"residual": clean, "disagreement": spread})
    no_ensemble = pore_trust_table(table, labels, {"residual": clean, "disagreement": np.full(SHAPE, np.nan)})
    assert with_spread["trust"].iloc[0] < 0.5 * no_ensemble["trust"].iloc[0]
    assert no_ensemble["disagreement_mean"].isna().all()


def test_identical_members_give_zero_disagreement(tmp_path, foam):
    _, hres, _ = foam
    assert np.all(disagreement_map([hres, hres, hres]) == 0)
    rng = np.random.default_rng(3)
    members = [hres + rng.normal(0, 0.1, SHAPE).astype(np.float32) for _ in range(3)]
    np.testing.assert_allclose(disagreement_map(members), np.std(members, axis=0, ddof=1), atol=1e-6)
    paths = []
    for k, volume in enumerate([hres, hres, members[0]]):
        paths.append(tmp_path / f"member{k}.h5")
        write_volume(paths[-1], volume, VOXEL_UM)
    ensemble_from_files(paths[:2], tmp_path / "same.h5", slab_slices=7)
    with h5py.File(tmp_path / "same.h5") as fh:
        assert np.all(fh["disagreement"][...] == 0)
        np.testing.assert_allclose(fh["volume"][...], hres, atol=1e-6)
        assert fh.attrs["ensemble_size"] == 2 and fh.attrs["voxel_size_um"] == VOXEL_UM
    ensemble_from_files(paths, tmp_path / "mixed.h5", slab_slices=7)
    with h5py.File(tmp_path / "mixed.h5") as fh:
        stack = [hres, hres, members[0]]
        np.testing.assert_allclose(fh["disagreement"][...], np.std(stack, axis=0, ddof=1), atol=1e-5)
        np.testing.assert_allclose(fh["volume"][...], np.mean(stack, axis=0), atol=1e-5)


def test_roc_auc_and_the_blur_estimate_of_own_scans(foam):
    assert roc_auc([3, 4, 1, 2], [True, True, False, False]) == 1.0
    assert roc_auc([1, 2, 3, 4], [True, True, False, False]) == 0.0
    assert roc_auc([1, 1, 1, 1], [True, False, True, False]) == 0.5
    assert np.isnan(roc_auc([1, 2], [False, False]))
    # spurious pores are small: a score that only tracks size separates them overall, but not
    # among pores of the same size; a score that sees them does both
    rng = np.random.default_rng(2)
    diameter = np.concatenate([rng.uniform(5, 15, 40), rng.uniform(5, 40, 400)])
    spurious = np.arange(440) < 40
    assert roc_auc(-diameter, spurious) > 0.75
    assert size_stratified_auc(-diameter, spurious, diameter) < 0.75
    seeing = spurious + rng.normal(0, 0.3, 440)
    assert size_stratified_auc(seeing, spurious, diameter) > 0.9
    truth, _, _ = foam
    low = gaussian_blur(truth, 2.5) + np.random.default_rng(5).normal(0, 0.01, SHAPE).astype(np.float32)
    assert estimate_blur_um(truth, low, voxel_size_um=2.0) == pytest.approx(5.0, abs=0.3)
    # an own scan: correlated noise, blur and κ unknown; calibrated on the overlap (as rule pair_trust
    # does), a recovery equal to the high-res scan reads noise level, one with a void the low-res scan
    # cannot have seen does not
    rng = np.random.default_rng(9)
    noise = ndi.gaussian_filter(rng.normal(0, 1, SHAPE), 1.0).astype(np.float32)
    low = gaussian_blur(truth, 2.0) + 0.03 * noise / noise.std()
    sigma_um, kappa = calibrate_on_overlap(truth, low, voxel_size_um=1.0)
    assert sigma_um == pytest.approx(2.0, abs=0.2) and kappa > 1.5

    def own_scan_residual(recovered):
        residual, _ = residual_map(recovered, low, 1.0, sigma_um, target_sigma_um=0.0, noise_correlation=kappa)
        return residual

    assert np.median(own_scan_residual(truth)) == pytest.approx(1.0, abs=0.25)
    fake = truth.copy()
    fake[_ball(SHAPE, (20, 30, 18), 4)] = 0
    assert own_scan_residual(fake)[_ball(SHAPE, (20, 30, 18), 4)].mean() > 10


def test_trust_plan_and_member_seeds():
    config = load_config(REPO / "tests/config/test.yaml")
    plan = trust_plan(config)
    assert plan["enabled"] and plan["ensemble_size"] >= 2
    assert set(plan["methods"]) <= set(config["methods"])
    assert plan["ensemble_methods"] == [f"{n}_ensemble" for n in plan["networks"]]
    bad = copy.deepcopy(config)
    bad["trust"]["sigmas_um"] = [4]
    with pytest.raises(ConfigError, match=r"^trust.sigmas_um: \[4\] holds 4 µm"):
        trust_plan(bad)
    # member 0 is the study's model (rule train's seed); the others differ
    assert training_seed(0, "deepnet", 9.0, 0) == derive_seed(0, "train", "deepnet", "9")
    assert len({training_seed(0, "deepnet", 9.0, k) for k in range(3)}) == 3


def test_maps_and_pore_tables_follow_the_results_contract(tmp_path):
    config = load_config(REPO / "tests/config/test.yaml")
    shape, voxel, sigma = tuple(config["volume_shape"]), config["voxel_size_um"], 9.0
    rng = np.random.default_rng(11)
    truth = np.ones(shape, np.float32)
    truth[_ball(shape, (24, 20, 24), 4)] = 0
    truth[_ball(shape, (24, 30, 30), 3)] = 0
    lres = gaussian_blur(truth, sigma / voxel) + rng.normal(0, 0.02, shape).astype(np.float32)
    recovered = gaussian_blur(truth, 1.0 / voxel)
    root = tmp_path / "results"
    paths = {
        "lres": root / "recon/alternate/sigma9.h5",
        "deepnet": root / "recovered/deepnet/alternate/sigma9.h5",
        "rl": root / "recovered/rl/alternate/sigma9.h5",
        "ensemble": root / "recovered/deepnet_ensemble/alternate/sigma9.h5",
        "member1": root / "trust/members/deepnet/alternate/sigma9/member1.h5",
    }
    write_volume(paths["lres"], lres, voxel)
    write_volume(paths["deepnet"], recovered, voxel)
    write_volume(paths["rl"], truth, voxel)
    write_volume(paths["member1"], recovered + 0.01, voxel)
    ensemble_from_files([paths["deepnet"], paths["member1"]], paths["ensemble"])
    for method, ensemble in (("deepnet", paths["ensemble"]), ("rl", None)):
        out = root / f"trust/{method}/alternate/sigma9.h5"
        trust_maps_from_files(paths[method], paths["lres"], out, config, method, sigma, ensemble_path=ensemble)
        maps, attrs = read_trust_maps(out)
        assert set(TRUST_DATASETS) <= set(maps) and {"residual", "disagreement"} <= set(maps)
        assert all(m.shape == shape and m.dtype == np.float32 for m in maps.values())
        assert attrs["voxel_size_um"] == voxel and attrs["method"] == method
        inside = np.isfinite(maps["residual"])
        assert inside[shape[0] // 2, shape[1] // 2, shape[2] // 2] and not inside.all()  # NaN outside the FOV
        if method == "rl":  # no ensemble: the dataset is there, all NaN
            assert np.isnan(maps["disagreement"]).all() and not attrs["disagreement_available"]
        else:
            assert np.nanmax(np.abs(maps["disagreement"] - 0.01 / np.sqrt(2))) < 1e-5
        assert np.nanmedian(maps["residual"]) < 3  # the recovery (RL: the object itself) explains its input

    labels, _ = ndi.label(recovered < 0.5)
    labels_path = root / "labels/deepnet/alternate/sigma9.h5"
    write_labels(labels_path, labels.astype(np.int32), voxel)
    pores = pd.DataFrame({"method": "deepnet", "realization": "alternate", "sigma_um": sigma,
                          "label": [1, 2], "diameter_um": [30.0, 24.0], "matched_gt_label": [1, 2]})
    pores_path = root / "pores/deepnet/alternate/sigma9.csv"
    pores_path.parent.mkdir(parents=True)
    pores.to_csv(pores_path, index=False)
    out = root / "trust/pores/deepnet/alternate/sigma9.csv"
    pore_trust_from_files(root / "trust/deepnet/alternate/sigma9.h5", labels_path, pores_path, out, config)
    table = pd.read_csv(out)
    assert list(table.columns[: len(pores.columns)]) == list(pores.columns)
    assert {"residual_mean", "disagreement_mean", "trust"} <= set(table.columns) and len(table) == 2
    assert table["trust"].between(0, 1).all()
    pd.testing.assert_frame_equal(pd.read_csv(pores_path), pores)  # the evaluation's table is untouched

    rules = (REPO / "workflow/rules/trust.smk").read_text()
    for pattern in ('"results/trust/{method}/{realization}/sigma{sigma}.h5"',
                    '"results/trust/pores/{method}/{realization}/sigma{sigma}.csv"',
                    '"results/recovered/{network}_ensemble/{realization}/sigma{sigma}.h5"',
                    '"results/tables/trust_validation.csv"'):
        assert pattern in rules
    # every member's model (0: the study's) in one layout, made by rule train (train.smk)
    common = (REPO / "workflow/rules/common.smk").read_text()
    assert 'MODEL_DIR = "results/models/{network}/sigma{sigma}/member{member}"' in common
    assert 'f"{MODEL_DIR}/model.safetensors"' in (REPO / "workflow/rules/train.smk").read_text()
