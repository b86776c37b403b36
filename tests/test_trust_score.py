"""Is this pore real? Per-pore features, the trust model, its JSON file, and conformal flagging.

(src/resrecover/trust/features.py, score.py, conformal.py)
"""

import json
import pickle

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from resrecover.trust import (
    TrustError,
    auc_difference_bootstrap,
    benjamini_hochberg,
    conformal_p_values,
    expected_calibration_error,
    fdr_and_power,
    fit_trust_model,
    flag_spurious,
    labelled_pores,
    load_trust_model,
    pore_features,
    reliability_table,
    roc_auc,
    roc_auc_bootstrap,
    save_trust_model,
    spurious_labels,
)

# ---------------------------------------------------------------------------------------------
# synthetic pore tables with a known rule: spurious iff small AND low contrast (5 % labels flipped)
# ---------------------------------------------------------------------------------------------

D0_UM, C0 = 20.0, 3.0


def _pores(n, seed, flip=0.05):
    rng = np.random.default_rng(seed)
    diameter = rng.uniform(5.0, 60.0, n)
    contrast = rng.uniform(0.0, 10.0, n)
    spurious = (diameter < D0_UM) & (contrast < C0)
    spurious ^= rng.random(n) < flip
    matched = np.where(spurious, np.nan, np.arange(1, n + 1, dtype=np.float64))
    return pd.DataFrame(
        {
            "label": np.arange(1, n + 1),
            "diameter_um": diameter,
            "contrast_noise": contrast,
            "residual_mean": rng.normal(1.0, 0.2, n),  # uninformative
            "disagreement_mean": np.full(n, np.nan),  # no ensemble, as for Richardson-Lucy
            "matched_gt_label": matched,
        }
    )


@pytest.fixture(scope="module")
def model():
    return fit_trust_model(
        [_pores(3000, 1)],
        training_info=[{"realization": "training", "method": "deepnet", "sigma_um": 9}],
        calibration_frames=[_pores(2000, 2)],
        calibration_info=[{"realization": "validation", "method": "deepnet", "sigma_um": 9}],
    )


def test_spurious_labels_read_nan_empty_and_zero_as_unmatched():
    df = pd.DataFrame({"matched_gt_label": [3, np.nan, 0, "", "7"]})
    assert spurious_labels(df).tolist() == [False, True, True, True, False]
    # -1: cut by an end of the ground truth, neither kind; refused until left out
    cut = pd.DataFrame({"matched_gt_label": [3, -1, 0]})
    with pytest.raises(TrustError, match="1 pores with matched_gt_label -1"):
        spurious_labels(cut)
    assert spurious_labels(labelled_pores(cut)).tolist() == [False, True]
    # -2: a real pore recovered at the wrong size: real, and kept as a label
    mis_sized = pd.DataFrame({"matched_gt_label": [-2, 0, 4]})
    assert spurious_labels(labelled_pores(mis_sized)).tolist() == [False, True, False]


def test_model_beats_every_single_feature_on_fresh_pores(model):
    test = _pores(3000, 3)
    y = spurious_labels(test)
    auc_model = roc_auc(model.p_spurious(test), y)
    for name in ("diameter_um", "contrast_noise"):
        single = roc_auc(test[name].to_numpy(), y)
        single = max(single, 1.0 - single)  # the best orientation of the single feature
        assert auc_model > single + 0.02, (name, auc_model, single)
    # small and low-contrast pores are the suspect ones
    assert model.coef[model.features.index("diameter_um")] < 0
    assert model.coef[model.features.index("contrast_noise")] < 0


def test_fit_drops_missing_and_all_nan_features_with_notes(model):
    # disagreement_mean is NaN everywhere, tta_variance_mean etc. are no columns: dropped, noted
    assert "disagreement_mean" not in model.features and "tta_variance_mean" not in model.features
    assert set(model.features) == {"diameter_um", "contrast_noise", "residual_mean"}
    notes = " ".join(model.notes)
    assert "'disagreement_mean'" in notes and "'tta_variance_mean'" in notes and "'n_neighbours'" in notes
    assert [t["role"] for t in model.training] == ["fit", "calibration"]
    assert model.training[0]["n"] == 3000 and model.training[0]["realization"] == "training"
    assert model.training[1]["n_spurious"] == int(spurious_labels(_pores(2000, 2)).sum())


def test_calibration_scores_come_from_the_calibration_frames_real_pores(model):
    cal = _pores(2000, 2)
    real = cal[~spurious_labels(cal)]
    np.testing.assert_allclose(model.calibration_scores, np.sort(model.p_spurious(real)))
    fallback = fit_trust_model([_pores(500, 4)], features=["diameter_um", "contrast_noise"])
    assert any("calibration scores from the fitting frames" in note for note in fallback.notes)


def test_fit_refuses_one_class_and_no_usable_feature():
    df = _pores(200, 5)
    with pytest.raises(TrustError, match="expected both spurious and real pores"):
        fit_trust_model([df.assign(matched_gt_label=1.0)], features=["diameter_um"])
    with pytest.raises(TrustError, match="none usable"):
        fit_trust_model([df], features=["disagreement_mean", "no_such_column"])


# ---------------------------------------------------------------------------------------------
# the JSON file
# ---------------------------------------------------------------------------------------------


def _one_line_error(excinfo, *needles):
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_save_load_round_trip_gives_identical_probabilities(model, tmp_path):
    path = tmp_path / "trust_model.json"
    save_trust_model(model, path)
    loaded = load_trust_model(path)
    test = _pores(500, 6)
    np.testing.assert_array_equal(loaded.p_spurious(test), model.p_spurious(test))
    np.testing.assert_array_equal(loaded.calibration_scores, model.calibration_scores)
    assert loaded.features == model.features and loaded.training == model.training
    assert [p.name for p in tmp_path.iterdir()] == ["trust_model.json"]  # no temporary left behind


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda d: d.update(coef=d["coef"][:-1]), "'coef' is a list of 2; expected 3 finite numbers"),
        (lambda d: d.pop("calibration_scores"), "missing keys ['calibration_scores']"),
        (lambda d: d.update(scale=[1.0, "2", 1.0]), "'scale' is a list of 3; expected 3 finite numbers"),
        (lambda d: d.update(version=99), "'version' is 99; expected format version 1"),
        (lambda d: d.update(scale=[1.0, 0.0, 1.0]), "'scale' is a list of 3; expected positive"),
    ],
)
def test_load_rejects_bad_files_in_one_line_naming_the_file(model, tmp_path, edit, needle):
    path = tmp_path / "model.json"
    save_trust_model(model, path)
    payload = json.loads(path.read_text())
    edit(payload)
    path.write_text(json.dumps(payload))
    with pytest.raises(TrustError) as excinfo:
        load_trust_model(path)
    _one_line_error(excinfo, str(path), needle)


def test_load_reads_json_only_never_a_pickle(model, tmp_path):
    good = tmp_path / "model.json"
    save_trust_model(model, good)
    # the very payload that loads as JSON, pickled: a loader that unpickles would accept it
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(json.loads(good.read_text())))
    with pytest.raises(TrustError) as excinfo:
        load_trust_model(path)
    _one_line_error(excinfo, str(path), "JSON")


def test_a_frame_lacking_a_feature_is_named(model):
    frame = _pores(50, 7).drop(columns=["contrast_noise"])
    with pytest.raises(TrustError) as excinfo:
        model.p_spurious(frame)
    _one_line_error(excinfo, "'contrast_noise'", "'diameter_um'")


# ---------------------------------------------------------------------------------------------
# conformal p-values and Benjamini-Hochberg
# ---------------------------------------------------------------------------------------------


def test_conformal_p_values_by_hand():
    cal = [0.4, 0.1, 0.3, 0.2]
    p = conformal_p_values(cal, [0.25, 0.4, 0.5, 0.0, 0.1])
    # #{cal ≥ s} = 2, 1 (tie counts), 0, 4, 4; p = (1 + #) / 5
    np.testing.assert_allclose(p, [3 / 5, 2 / 5, 1 / 5, 5 / 5, 5 / 5])


def test_benjamini_hochberg_textbook_example():
    # Benjamini & Hochberg (1995), section 4: 15 p-values at q = 0.05 reject the four smallest
    p = np.array([0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344,
                  0.0459, 0.3240, 0.4262, 0.5719, 0.6528, 0.7590, 1.0000])
    order = np.random.default_rng(0).permutation(p.size)
    reject = benjamini_hochberg(p[order], 0.05)
    assert reject.sum() == 4
    assert set(p[order][reject]) == {0.0001, 0.0004, 0.0019, 0.0095}
    # step-up, not step-down: 0.03 is above its line 2·0.05/4 but 0.045 ≤ 4·0.05/4 rejects all
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.045], 0.05).all()
    assert not benjamini_hochberg([0.02, 0.9], 0.01).any()


def test_conformal_bh_keeps_the_fdr_and_finds_well_separated_outliers():
    """300 fresh draws of null calibration and a null/alternative test mixture at alpha = 0.1."""
    rng = np.random.default_rng(11)
    alpha, n_draws, n_cal, n_null, n_alt = 0.1, 300, 500, 180, 20
    fdp, power = np.empty(n_draws), np.empty(n_draws)
    for k in range(n_draws):
        cal = rng.normal(0.0, 1.0, n_cal)
        test = np.concatenate([rng.normal(0.0, 1.0, n_null), rng.normal(4.0, 1.0, n_alt)])
        is_alt = np.arange(n_null + n_alt) >= n_null
        flagged = benjamini_hochberg(conformal_p_values(cal, test), alpha)
        fdp[k], power[k], _ = fdr_and_power(flagged, is_alt)
    tolerance = 3.0 * fdp.std(ddof=1) / np.sqrt(n_draws)  # three standard errors of the mean FDP
    assert fdp.mean() <= alpha + tolerance, (fdp.mean(), tolerance)
    assert power.mean() > 0.5, power.mean()


def test_fdr_and_power_by_hand():
    fdr, power, n = fdr_and_power([True, True, False, True], [True, False, True, True])
    assert (fdr, power, n) == (1 / 3, 2 / 3, 3)
    assert fdr_and_power([False, False], [True, False]) == (0.0, 0.0, 0)


def test_flag_spurious_adds_columns_consistent_with_bh(model):
    test = _pores(1000, 8)
    out = flag_spurious(model, test, alpha=0.1)
    assert out.index.equals(test.index)
    np.testing.assert_array_equal(out["p_spurious"], model.p_spurious(test))
    np.testing.assert_array_equal(out["conformal_p"], conformal_p_values(model.calibration_scores, out["p_spurious"]))
    np.testing.assert_array_equal(out["flagged"], benjamini_hochberg(out["conformal_p"], 0.1))
    fdr, power, n = fdr_and_power(out["flagged"], spurious_labels(test))
    assert n > 0 and power > 0.3


# ---------------------------------------------------------------------------------------------
# per-pore features on a tiny label volume
# ---------------------------------------------------------------------------------------------

SHAPE, VOXEL_UM = (40, 40, 40), 2.0


def _ball(centre, radius):
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2


@pytest.fixture(scope="module")
def scene():
    """Balls 1 and 2 touch (faces at x = 28 | 29) near the FOV's edge; ball 3 is alone on the axis."""
    labels = np.zeros(SHAPE, np.int32)
    balls = {1: ((10, 20, 32), 3), 2: ((10, 20, 25), 3), 3: ((28, 20, 20), 3)}
    for label, (centre, radius) in balls.items():
        labels[_ball(centre, radius)] = label
    yy, xx = np.mgrid[: SHAPE[1], : SHAPE[2]]
    fov = np.broadcast_to((yy - 19.5) ** 2 + (xx - 19.5) ** 2 <= 18.0**2, SHAPE)
    recovered = np.ones(SHAPE)
    recovered[labels == 1], recovered[labels == 2], recovered[labels == 3] = 0.0, 0.6, 0.2
    noise = np.where(labels > 0, 0.1, 0.3)
    residual = np.random.default_rng(0).random(SHAPE)
    pore_df = pd.DataFrame({"label": [3, 1, 2], "centroid_x_um": [1e4, 1e4, 1e4]})  # centroids not read
    return labels, fov, recovered, noise, residual, pore_df


def test_neighbours_fov_distance_and_contrast_by_hand(scene):
    labels, fov, recovered, noise, residual, pore_df = scene
    out = pore_features(pore_df, labels, recovered, 0.5, noise, fov, VOXEL_UM,
                        maps={"residual": residual}, wall_voxels=2)
    by_label = out.set_index("label")
    assert by_label["n_neighbours"].to_dict() == {1: 1, 2: 1, 3: 0}

    # FOV distance: nearest voxel outside the cylinder in the centroid's slice, brute force
    outside = np.argwhere(~fov[0])
    for label, (y, x) in {1: (20, 32), 3: (20, 20)}.items():
        expected = VOXEL_UM * np.sqrt(((outside - [y, x]) ** 2).sum(axis=1)).min()
        assert by_label.loc[label, "fov_edge_distance_um"] == pytest.approx(expected)
    assert by_label.loc[3, "fov_edge_distance_um"] > 2.5 * by_label.loc[1, "fov_edge_distance_um"]

    # contrast of ball 3: interior 0.2, noise 0.1 on its voxels and 0.3 on its 2-voxel wall
    pore = labels == 3
    region = ndi.distance_transform_edt(~pore) <= 2.0
    noise_mean = (0.1 * pore.sum() + 0.3 * (region & ~pore).sum()) / region.sum()
    assert by_label.loc[3, "contrast_noise"] == pytest.approx((0.5 - 0.2) / noise_mean)
    assert by_label.loc[2, "contrast_noise"] < 0  # interior above the threshold: negative contrast
    assert by_label.loc[3, "residual_mean"] == pytest.approx(residual[region].mean())

    scalar = pore_features(pore_df, labels, recovered, 0.5, 0.1, fov, VOXEL_UM)
    np.testing.assert_allclose(scalar["contrast_noise"], [(0.5 - 0.2) / 0.1, 0.5 / 0.1, (0.5 - 0.6) / 0.1])


@pytest.mark.parametrize("gap, expected", [(4, 1), (5, 0)])
def test_neighbours_across_a_wall_of_at_most_two_walls(gap, expected):
    # two cubes along x with `gap` voxels of material between; walls of 2 voxels meet across ≤ 4
    labels = np.zeros((12, 12, 30), np.int32)
    labels[4:8, 4:8, 5:10] = 1
    labels[4:8, 4:8, 10 + gap : 15 + gap] = 2
    df = pd.DataFrame({"label": [1, 2]})
    out = pore_features(df, labels, np.zeros(labels.shape), 0.5, 0.1, np.ones(labels.shape, bool), 1.0)
    assert out["n_neighbours"].tolist() == [expected, expected]


def test_features_reject_mismatched_inputs_in_one_line(scene):
    labels, fov, recovered, noise, residual, pore_df = scene
    with pytest.raises(TrustError) as excinfo:
        pore_features(pore_df, labels, recovered[:-1], 0.5, noise, fov, VOXEL_UM)
    _one_line_error(excinfo, "recovered", str(SHAPE))
    with pytest.raises(TrustError) as excinfo:
        pore_features(pore_df, labels, recovered, 0.5, noise, fov, VOXEL_UM, maps={"tta_variance": residual[1:]})
    _one_line_error(excinfo, "maps['tta_variance']")
    with pytest.raises(TrustError) as excinfo:
        pore_features(pd.DataFrame({"label": [1, 9]}), labels, recovered, 0.5, noise, fov, VOXEL_UM)
    _one_line_error(excinfo, "[9]")


# ---------------------------------------------------------------------------------------------
# calibration and bootstrap intervals
# ---------------------------------------------------------------------------------------------


def test_ece_small_when_calibrated_and_large_when_not():
    rng = np.random.default_rng(5)
    p = rng.random(20_000)
    y = rng.random(p.size) < p
    assert expected_calibration_error(p, y) < 0.03
    assert expected_calibration_error(p**2, y) > 0.1  # E|p − p²| = 1/6
    table = reliability_table(p, y)
    assert list(table.columns) == ["bin", "p_mean", "observed", "n"] and table["n"].sum() == p.size
    assert ((table["p_mean"] >= table["bin"] / 10) & (table["p_mean"] < (table["bin"] + 1) / 10)).all()


def test_auc_bootstrap_interval_and_paired_difference():
    rng = np.random.default_rng(9)
    y = rng.random(600) < 0.3
    good = y + rng.normal(0, 1.0, y.size)  # AUC = Φ(1/√2) ≈ 0.76
    weak = y + rng.normal(0, 4.0, y.size)
    auc, lo, hi = roc_auc_bootstrap(good, y, n_boot=400)
    assert auc == roc_auc(good, y) and lo < auc < hi
    # the interval's width against the Hanley & McNeil (1982) standard error of an AUC
    n1, n2 = int(y.sum()), int((~y).sum())
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    se = np.sqrt((auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n2 - 1) * (q2 - auc**2)) / (n1 * n2))
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.25)
    diff, lo, hi = auc_difference_bootstrap(good, good + 0.0, y, n_boot=200)
    assert diff == lo == hi == 0.0  # paired: the same resample for both scores
    diff, lo, hi = auc_difference_bootstrap(good, weak, y, n_boot=300)
    assert lo > 0 and lo < diff < hi
