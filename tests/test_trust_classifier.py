"""The spurious-pore classifier as the workflow runs it: TTA variance, per-pore features from files, the
fit on train only, the flag list, and its rows of trust_validation.csv (resrecover.trust.tta, .spurious)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO
from resrecover.config import ConfigError, load_config
from resrecover.evaluate.pores import CUT_BY_ENDS, write_labels
from resrecover.io import write_volume
from resrecover.trust import read_trust_maps, trust_plan
from resrecover.trust.maps import TrustError, gaussian_blur
from resrecover.trust.score import load_trust_model, spurious_labels
from resrecover.trust.spurious import (
    choose_l2,
    classifier_curves,
    classifier_rows,
    fit_trust_model_from_files,
    flag_pores_from_files,
    MIN_SPURIOUS_PORES,
)
from resrecover.trust.stages import pore_trust_from_files, trust_maps_from_files
from resrecover.trust.tta import tta_variance_from_files, tta_variance_map, transform_volume

CONFIG = REPO / "tests" / "config" / "test.yaml"


# --- test-time-augmentation variance -------------------------------------------------------------


@pytest.mark.parametrize("transform", [(1, 0, 0), (0, 1, 0), (1, 1, 0), (0, 0, 1), (1, 0, 1)])
def test_each_transform_is_undone_exactly(transform):
    volume = np.random.default_rng(0).random((3, 6, 6))
    moved = transform_volume(volume, *transform)
    assert not np.array_equal(moved, volume)
    np.testing.assert_array_equal(transform_volume(moved, *transform, inverse=True), volume)


def test_an_equivariant_network_has_no_variance_and_a_biased_one_has_the_expected_variance():
    volume = np.random.default_rng(1).random((4, 10, 10)).astype(np.float32)
    # a pointwise map commutes with every flip: the same output whichever way the input is shown
    assert np.abs(tta_variance_map(lambda v: 2 * v + 1, volume, "flips")).max() < 1e-12
    # a "network" that adds a ramp along x in its own frame: under an x-flip the ramp comes back mirrored
    ramp = np.linspace(0, 1, 10, dtype=np.float32)[None, None, :]
    variance = tta_variance_map(lambda v: v + ramp, volume, "half_turn")
    mirrored = ramp[..., ::-1]
    expected = ((ramp - mirrored) / 2) ** 2  # two outputs v + ramp and v + mirrored ramp
    np.testing.assert_allclose(variance, np.broadcast_to(expected, volume.shape), atol=1e-6)
    with pytest.raises(TrustError, match="one transform has no variance"):
        tta_variance_map(lambda v: v, volume, "none")


def test_the_recovered_volume_stands_in_for_the_identity_pass():
    volume = np.random.default_rng(2).random((2, 8, 8)).astype(np.float32)
    calls = []

    def predict(v):
        calls.append(v.copy())
        return v

    tta_variance_map(predict, volume, "flips", reference=volume)
    assert len(calls) == 3 and not any(np.array_equal(c, volume) for c in calls)


def _tiny_model(folder):
    from resrecover.methods.deepnet import DeepNet
    from resrecover.methods.modelio import save_model

    torch.manual_seed(0)
    net = DeepNet(n_slices=3, base_channels=2, depth=1, extra_convs=0).eval()
    settings = {"method": "deepnet", "architecture": net.architecture(),
                "normalization": {"offset": 0.5, "scale": 0.3}, "sigma_um": 9.0, "voxel_size_um": 4.0}
    save_model(net, settings, folder / "model.safetensors", folder / "model.json")
    return folder / "model.safetensors", folder / "model.json"


def test_trust_maps_of_a_network_carry_its_tta_variance(tmp_path):
    from resrecover.methods.infer import recover_volume

    config = load_config(CONFIG)
    shape = tuple(config["volume_shape"])
    weights, settings = _tiny_model(tmp_path)
    lres = np.clip(np.random.default_rng(3).normal(0.5, 0.2, shape), 0, 1).astype(np.float32)
    write_volume(tmp_path / "lres.h5", lres, voxel_size_um=4.0, sigma_um=9.0)
    recover_volume(weights, settings, tmp_path / "lres.h5", tmp_path / "rec.h5", config["inference"], device="cpu",
                   progress=False)
    direct = tta_variance_from_files(weights, settings, tmp_path / "lres.h5", tmp_path / "rec.h5",
                                     config["inference"], "half_turn", device=torch.device("cpu"))
    assert direct.shape == shape and np.isfinite(direct).all() and direct.max() > 0  # untrained: not equivariant
    config["trust"]["tta_transforms"] = "half_turn"
    out = tmp_path / "trust.h5"
    trust_maps_from_files(tmp_path / "rec.h5", tmp_path / "lres.h5", out, config, "deepnet", 9.0,
                          model_files=(weights, settings), device=torch.device("cpu"))
    maps, attrs = read_trust_maps(out)
    inside = np.isfinite(maps["tta_variance"])
    assert attrs["tta_variance_available"] and attrs["tta_transforms"] == "half_turn"
    assert inside.any() and not inside.all()  # NaN outside the FOV, like every map
    np.testing.assert_allclose(maps["tta_variance"][inside], direct[inside], rtol=1e-5, atol=1e-9)
    # RL (no model): the dataset is there, all NaN
    trust_maps_from_files(tmp_path / "rec.h5", tmp_path / "lres.h5", tmp_path / "rl.h5", config, "rl", 9.0)
    maps, attrs = read_trust_maps(tmp_path / "rl.h5")
    assert np.isnan(maps["tta_variance"]).all() and not attrs["tta_variance_available"]


# --- features from files, fit on train only, flags, validation rows ----------------------------


def _ball(shape, centre, radius):
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2


def test_pore_tables_get_the_classifier_features_from_the_recovered_volume(tmp_path):
    config = load_config(CONFIG)
    shape, voxel = tuple(config["volume_shape"]), config["voxel_size_um"]
    truth = np.ones(shape, np.float32)
    truth[_ball(shape, (24, 24, 24), 4)] = 0  # a deep void in the centre
    truth[_ball(shape, (24, 24, 33), 3)] = 0.45  # a shallow one beside it, nearer the FOV's edge
    rng = np.random.default_rng(4)
    recovered = gaussian_blur(truth, 1.0 / voxel) + rng.normal(0, 0.02, shape).astype(np.float32)
    lres = gaussian_blur(truth, 9.0 / voxel) + rng.normal(0, 0.02, shape).astype(np.float32)
    write_volume(tmp_path / "rec.h5", recovered, voxel)
    write_volume(tmp_path / "lres.h5", lres, voxel)
    trust_maps_from_files(tmp_path / "rec.h5", tmp_path / "lres.h5", tmp_path / "maps.h5", config, "rl", 9.0)
    labels = np.zeros(shape, np.int32)
    labels[_ball(shape, (24, 24, 24), 4)] = 1
    labels[_ball(shape, (24, 24, 33), 3)] = 2
    write_labels(tmp_path / "labels.h5", labels, voxel)
    pores = pd.DataFrame({"method": "rl", "realization": "train", "sigma_um": 9.0, "label": [1, 2],
                          "diameter_um": [32.0, 24.0], "matched_gt_label": [1, 0]})
    pores.to_csv(tmp_path / "pores.csv", index=False)
    table = pore_trust_from_files(tmp_path / "maps.h5", tmp_path / "labels.h5", tmp_path / "pores.csv",
                                  tmp_path / "out.csv", config, recovered_path=tmp_path / "rec.h5")
    assert {"contrast_noise", "fov_edge_distance_um", "n_neighbours", "tta_variance_mean"} <= set(table.columns)
    deep, shallow = table.iloc[0], table.iloc[1]
    assert deep["contrast_noise"] > shallow["contrast_noise"] > 0  # both below the threshold, one far below
    assert deep["fov_edge_distance_um"] > shallow["fov_edge_distance_um"] > 0
    assert list(table["n_neighbours"]) == [1, 1] and table["tta_variance_mean"].isna().all()  # RL: no TTA


def _pore_table(realization, sigma, n=400, seed=0, spurious_share=0.1):
    """Synthetic per-pore rows whose spurious pores are small and shallow (a rule the model can find)."""
    rng = np.random.default_rng(seed)
    spurious = rng.random(n) < spurious_share
    diameter = np.where(spurious, rng.normal(13, 2, n), rng.normal(22, 5, n))
    contrast = np.where(spurious, rng.normal(2, 1, n), rng.normal(5, 1.5, n))
    return pd.DataFrame({
        "method": "deepnet", "realization": realization, "sigma_um": float(sigma), "label": np.arange(1, n + 1),
        "diameter_um": diameter, "contrast_noise": contrast, "residual_mean": rng.normal(1, 0.2, n),
        "disagreement_mean": np.nan, "tta_variance_mean": rng.random(n) * 1e-4,
        "fov_edge_distance_um": rng.random(n) * 100, "n_neighbours": rng.integers(0, 6, n),
        "sphericity": rng.normal(0.97, 0.01, n),
        "matched_gt_label": np.where(spurious, 0, np.arange(1, n + 1)),
    })


def test_the_model_is_fitted_on_train_only_and_records_it(tmp_path):
    config = load_config(CONFIG)
    paths = []
    for k, sigma in enumerate((3, 9)):
        paths.append(tmp_path / f"train_{sigma}.csv")
        _pore_table("train", sigma, seed=k).to_csv(paths[-1], index=False)
    fit_trust_model_from_files(paths, tmp_path / "model.json", config)
    model = load_trust_model(tmp_path / "model.json")
    assert {entry["realization"] for entry in model.training} == {"train"}
    assert sorted(entry["sigma_um"] for entry in model.training) == [3.0, 9.0]
    assert "disagreement_mean" not in model.features  # NaN everywhere (no ensemble): dropped with a note
    # the penalty: chosen among the candidates by leaving out one fitting table at a time
    assert model.l2 in config["trust"]["classifier"]["l2_candidates"]
    assert any("leave-one-table-out" in note for note in model.notes)
    assert any("disagreement_mean" in note for note in model.notes)
    # a table of the reporting realization is refused, by name
    _pore_table("alternate", 9).to_csv(tmp_path / "alt.csv", index=False)
    with pytest.raises(TrustError, match=r"alt.csv: pores of 'alternate'; expected none"):
        fit_trust_model_from_files([*paths, tmp_path / "alt.csv"], tmp_path / "bad.json", config)
    assert not (tmp_path / "bad.json").exists()
    # and the config cannot name it: the schema's one-line error
    bad = copy.deepcopy(config)
    bad["trust"]["classifier"]["fit_realizations"] = ["alternate"]
    with pytest.raises(ConfigError, match="trust.classifier.fit_realizations"):
        from resrecover.config import validate_config

        validate_config(bad)


def test_flags_and_validation_rows_on_the_reporting_realization(tmp_path):
    config = load_config(CONFIG)
    config["trust"]["classifier"]["bootstrap"] = 50
    train = [_pore_table("train", s, seed=s) for s in (3, 9)]
    for s, table in zip((3, 9), train):
        table.to_csv(tmp_path / f"train_{s}.csv", index=False)
    fit_trust_model_from_files([tmp_path / "train_3.csv", tmp_path / "train_9.csv"], tmp_path / "m.json", config)
    _pore_table("alternate", 9, n=1500, seed=42).to_csv(tmp_path / "alt.csv", index=False)
    scored = flag_pores_from_files(tmp_path / "alt.csv", tmp_path / "m.json", tmp_path / "train_9.csv",
                                   tmp_path / "flags.csv", config)
    assert {"p_spurious", "conformal_p", "flagged"} <= set(scored.columns)
    assert scored["p_spurious"].between(0, 1).all() and scored["conformal_p"].between(0, 1).all()
    model = load_trust_model(tmp_path / "m.json")
    rows = pd.DataFrame(classifier_rows(scored, train, model, config, "deepnet", "alternate", 9.0))
    value = {(r.quantity, r.map): r.value for r in rows.itertuples()}
    assert value[("roc_auc_spurious", "p_spurious")] > 0.9  # diameter and contrast both carry the rule
    assert value[("roc_auc_ci_low", "p_spurious")] <= value[("roc_auc_spurious", "p_spurious")]
    assert value[("roc_auc_gain_over_size", "p_spurious")] > 0  # contrast adds to size
    assert 0 <= value[("expected_calibration_error", "p_spurious")] < 0.1
    assert value[("fdr_setting", "flagged")] == 0.1 and value[("n_flagged", "flagged")] > 0
    assert value[("power", "flagged")] > 0
    # drop-one: leaving out contrast costs more than leaving out a feature that is pure noise
    assert value[("roc_auc_drop_one", "contrast_noise")] < value[("roc_auc_drop_one", "residual_mean")]
    assert ("roc_auc_drop_one", "disagreement_mean") not in value  # the model never used it
    roc, reliability = classifier_curves(scored, config, "deepnet", 9.0)
    assert set(roc["score"]) == {"p_spurious", "size_baseline"} and len(reliability) == 10
    assert (roc["tpr_low"] <= roc["tpr"] + 1e-12).all() and (roc["tpr"] <= roc["tpr_high"] + 1e-12).all()


def test_training_pores_that_are_all_real_give_a_constant_model_and_no_flag(tmp_path, caplog):
    config = load_config(CONFIG)
    table = _pore_table("train", 9, spurious_share=0.0)
    table.to_csv(tmp_path / "train.csv", index=False)
    fit_trust_model_from_files([tmp_path / "train.csv"], tmp_path / "m.json", config)
    model = load_trust_model(tmp_path / "m.json")
    assert any(note.startswith("not fitted: 0 spurious of 400") for note in model.notes)
    scored = flag_pores_from_files(tmp_path / "train.csv", tmp_path / "m.json", tmp_path / "train.csv",
                                   tmp_path / "flags.csv", config)
    assert scored["p_spurious"].nunique() == 1 and not scored["flagged"].any()
    assert json.loads((tmp_path / "m.json").read_text())["notes"]


def test_too_few_spurious_pores_to_fit_give_a_constant_model_that_reports_no_auc(tmp_path):
    """Fewer than MIN_SPURIOUS_PORES labelled hallucinations: a model would be noise. The constant one it
    gets instead ranks nothing, so its AUC and gain are NaN (its ties would read 0.5, a measured
    chance-level model) and fig10 draws no curve for it; pore size alone is still reported."""
    config = load_config(CONFIG)
    config["trust"]["classifier"]["bootstrap"] = 20
    table = _pore_table("train", 9, spurious_share=0.0)
    table.loc[: MIN_SPURIOUS_PORES - 2, "matched_gt_label"] = 0  # one spurious pore short of the floor
    table.to_csv(tmp_path / "train.csv", index=False)
    fit_trust_model_from_files([tmp_path / "train.csv"], tmp_path / "m.json", config)
    model = load_trust_model(tmp_path / "m.json")
    assert any(note.startswith(f"not fitted: {MIN_SPURIOUS_PORES - 1} spurious of 400") for note in model.notes)
    _pore_table("alternate", 9, seed=5).to_csv(tmp_path / "alt.csv", index=False)
    scored = flag_pores_from_files(tmp_path / "alt.csv", tmp_path / "m.json", tmp_path / "train.csv",
                                   tmp_path / "flags.csv", config)
    rows = pd.DataFrame(classifier_rows(scored, [table], model, config, "deepnet", "alternate", 9.0))
    value = {(r.quantity, r.map): r.value for r in rows.itertuples()}
    assert np.isnan(value[("roc_auc_spurious", "p_spurious")])
    assert np.isnan(value[("roc_auc_gain_over_size", "p_spurious")])
    assert value[("roc_auc_ci_low", "size_baseline")] > 0.5 and value[("n_flagged", "flagged")] == 0
    assert not (rows["quantity"] == "roc_auc_drop_one").any()
    roc, _ = classifier_curves(scored, config, "deepnet", 9.0)
    assert set(roc["score"]) == {"size_baseline"}
    # one more spurious pore and it is fitted
    table.loc[MIN_SPURIOUS_PORES - 1, "matched_gt_label"] = 0
    table.to_csv(tmp_path / "train.csv", index=False)
    fit_trust_model_from_files([tmp_path / "train.csv"], tmp_path / "m.json", config)
    assert not any(note.startswith("not fitted") for note in load_trust_model(tmp_path / "m.json").notes)


def test_the_plan_adds_the_fitting_realization_and_never_flags_it():
    config = load_config(CONFIG)
    plan = trust_plan(config)
    assert plan["classifier"] and plan["fit_realizations"] == ["train"]
    assert plan["realizations"] == ["train", "alternate"] and plan["flag_realizations"] == ["alternate"]
    off = copy.deepcopy(config)
    off["trust"]["classifier"]["enabled"] = False
    plan = trust_plan(off)
    assert not plan["classifier"] and plan["realizations"] == ["alternate"] and plan["fit_realizations"] == []


def test_the_plan_can_fit_on_validation_too_and_still_flags_only_alternate():
    config = load_config(CONFIG)
    config["trust"]["classifier"]["fit_realizations"] = ["validation", "train"]
    plan = trust_plan(config)
    assert plan["fit_realizations"] == ["train", "validation"]  # train first: it calibrates
    assert plan["realizations"] == ["train", "alternate", "validation"] and plan["flag_realizations"] == ["alternate"]


def test_the_plan_fits_on_every_extra_labelled_foam_and_flags_none_of_them():
    config = load_config(CONFIG)
    config["realizations"]["labelled"] = [11, 12]
    config["trust"]["classifier"]["fit_realizations"] = ["labelled", "train"]
    plan = trust_plan(config)
    assert plan["fit_realizations"] == ["train", "labelled1", "labelled2"]  # train first: it calibrates
    assert plan["realizations"] == ["train", "alternate", "labelled1", "labelled2"]
    assert plan["flag_realizations"] == ["alternate"]
    config["realizations"]["labelled"] = []
    with pytest.raises(ConfigError, match=r"^trust.classifier.fit_realizations: .* names 'labelled' but "
                                          r"realizations.labelled is empty"):
        trust_plan(config)


def test_pores_cut_by_an_end_of_the_truth_are_neither_fitted_nor_scored(tmp_path):
    """A pore whose void the truth's edge kill removed (matched_gt_label -1) has no label: the fit,
    the calibration and the reported AUCs leave it out instead of counting it as spurious."""
    config = load_config(CONFIG)
    config["trust"]["classifier"]["bootstrap"] = 20
    clean = _pore_table("train", 9, seed=1)
    cut = clean.copy()
    # 40 real pores marked cut, made to look like the spurious ones (small and shallow): were they
    # counted as spurious, the fit would see 40 more positives
    rows = np.flatnonzero(cut["matched_gt_label"] > 0)[:40]
    cut.loc[rows, ["diameter_um", "contrast_noise"]] = [13.0, 2.0]
    cut.loc[rows, "matched_gt_label"] = CUT_BY_ENDS
    clean.drop(index=rows).to_csv(tmp_path / "clean.csv", index=False)
    cut.to_csv(tmp_path / "cut.csv", index=False)
    fit_trust_model_from_files([tmp_path / "clean.csv"], tmp_path / "clean.json", config)
    fit_trust_model_from_files([tmp_path / "cut.csv"], tmp_path / "cut.json", config)
    a, b = load_trust_model(tmp_path / "clean.json"), load_trust_model(tmp_path / "cut.json")
    assert [e["n"] for e in b.training] == [e["n"] for e in a.training] == [len(clean) - 40]
    np.testing.assert_allclose(b.coef, a.coef)
    scored = flag_pores_from_files(tmp_path / "cut.csv", tmp_path / "cut.json", tmp_path / "cut.csv",
                                   tmp_path / "flags.csv", config)
    assert len(scored) == len(cut)  # every pore is still scored and may be flagged
    rows_cut = pd.DataFrame(classifier_rows(scored, [cut], b, config, "deepnet", "train", 9.0))
    assert set(rows_cut["n"][rows_cut["quantity"] == "expected_calibration_error"]) == {len(clean) - 40}
    assert (rows_cut["quantity"] == "roc_auc_drop_one").sum() == len(b.features)  # refitted on the labelled rows
    with pytest.raises(TrustError, match="cut by an end of the ground truth"):
        spurious_labels(cut)


def test_the_penalty_is_chosen_on_held_out_fitting_tables():
    tables = [_pore_table("train", s, seed=s) for s in (3, 5, 7, 9)]
    features = ["diameter_um", "contrast_noise", "residual_mean"]
    l2, held_out = choose_l2(tables, features, [0.01, 1.0, 1e6], default=2.0)
    assert set(held_out) == {0.01, 1.0, 1e6}
    # held-out tables are scored by models that never saw them, and the rule is learnable
    assert all(0.8 < auc <= 1.0 for auc in held_out.values())
    best = max(held_out.values())
    assert l2 == max(k for k, v in held_out.items() if v == best)  # ties: the larger penalty
    assert choose_l2(tables, features, [1.0], default=2.0) == (2.0, {})  # nothing to choose from
    assert choose_l2(tables[:1], features, [0.1, 1.0], default=2.0) == (2.0, {})  # nothing to hold out
