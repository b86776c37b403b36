"""Is this pore real, on an own-scan pair (resrecover.ownscan.pore_flags): the recovery's pores labelled on the
overlap by the high-res scan, the study's classifier fitted and calibrated there, applied to the whole field of
view; its flag list's FDR, the fallback with too few spurious pores, a model file of other features refused."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from resrecover.config import validate_config
from resrecover.evaluate.pores import read_labels
from resrecover.io import write_volume
from resrecover.ownscan.example import random_voids, voxelize_voids
from resrecover.ownscan.pore_flags import (
    MIN_SPURIOUS_PORES,
    apply_pair_model,
    assign_roles,
    fit_pair_model,
    overlap_labels,
    pair_flag_pores_from_files,
    segment_pair_pores,
)
from resrecover.trust.conformal import fdr_and_power
from resrecover.trust.maps import TrustError, write_trust_maps
from resrecover.trust.score import fit_trust_model, load_trust_model, save_trust_model
from resrecover.trust.validate import roc_auc

CONFIG = validate_config({"realizations": {"train": 1, "alternate": 2}})
SHAPE = (64, 64, 64)  # voxels of 1 µm: the recovered field of view
BOX = (slice(12, 52),) * 3  # the high-res scan's overlap, on the recovered grid


def _pair_files(folder, seed: int, spurious_share: float) -> dict:
    """A recovered volume, its trust maps and the overlap's high-res voxels, written as the rules write them.

    The recovery holds every void of a random foam; a share of the voids (mostly small ones) are its
    inventions: absent from the high-res scan and the truth, and with a residual bump (the data do not
    explain them). Returns the paths and each void's truth: spurious or not, by its centre voxel.
    """
    rng = np.random.default_rng(seed)
    voids = random_voids(SHAPE, 420, (1.8, 4.5), seed=seed, gap_um=1.0)
    small = voids[:, 3] < 3.0
    invented = small & (rng.random(len(voids)) < spurious_share * 2)
    recovered_clean = voxelize_voids(voids, SHAPE, 1.0)
    truth = voxelize_voids(voids[~invented], SHAPE, 1.0)
    recovered = recovered_clean + rng.normal(0, 0.04, SHAPE).astype(np.float32)
    high = truth[BOX] + rng.normal(0, 0.04, truth[BOX].shape).astype(np.float32)
    residual = 1.0 + 4.0 * np.abs(ndi.gaussian_filter(recovered_clean - truth, 1.5)) + rng.gamma(4, 0.05, SHAPE)
    paths = {k: folder / f for k, f in (("recovered", "recovered.h5"), ("trust", "trust.h5"), ("high", "hres.h5"))}
    write_volume(paths["recovered"], recovered, 1.0, origin_um=[0.0, 0.0, 0.0], high_start_vox=[12, 12, 12],
                 high_shape=[40, 40, 40])
    write_volume(paths["high"], high, 1.0, overlap_box=[[0, 40], [0, 40], [0, 40]])
    write_trust_maps(paths["trust"], residual.astype(np.float32), None, np.full(SHAPE, 0.04, np.float32), 1.0)
    centres = np.floor(voids[:, [2, 1, 0]]).astype(int).clip(0, SHAPE[0] - 1)  # (z, y, x) voxel of each centre
    return {**paths, "centres": centres, "invented": invented}


def _run(folder, seed=0, spurious_share=0.25):
    files = _pair_files(folder, seed, spurious_share)
    out = {k: folder / f for k, f in (("pores", "pores.csv"), ("model", "model.json"), ("labels", "labels.h5"))}
    table = pair_flag_pores_from_files(files["recovered"], files["trust"], files["high"], out["pores"], out["model"],
                                       out["labels"], CONFIG, seed=seed, pair="synthetic", method="deepnet")
    labels, _ = read_labels(out["labels"])
    # a recovered pore is truly spurious when it sits on an invented void (its label at that void's centre)
    at_centre = labels[tuple(files["centres"].T)]
    truth = pd.Series(False, index=table["label"])
    truth.loc[np.unique(at_centre[files["invented"] & (at_centre > 0)])] = True
    return table, truth.to_numpy(), out


@pytest.fixture(scope="module")
def flagged_pair(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("pair"))


def test_the_pair_model_scores_pores_outside_the_overlap_better_than_chance(flagged_pair):
    table, spurious, out = flagged_pair
    assert set(table["role"]) == {"fit", "calibration", "scored"}
    labelled = table["matched_high_res_label"].notna().to_numpy()
    # the high-res scan's verdict on the overlap is the truth's
    assert ((table["matched_high_res_label"] == 0).to_numpy() == spurious)[labelled].mean() > 0.95
    outside = (table["overlap_share"] == 0).to_numpy()
    assert outside.sum() > 50 and spurious[outside].sum() >= 10
    auc = roc_auc(table["p_spurious"].to_numpy()[outside], spurious[outside])
    assert auc > 0.8, auc
    # the saved model is the one applied: plain JSON, its calibration pores the overlap's held-out real ones
    model = load_trust_model(out["model"])
    np.testing.assert_allclose(model.p_spurious(table), table["p_spurious"])
    calibration = table[table["role"] == "calibration"]
    assert (calibration["matched_high_res_label"] > 0).all() and len(model.calibration_scores) == len(calibration)
    assert "fov_edge_distance_um" not in model.features and "fov_edge_distance_um" in table.columns
    assert not table.loc[table["role"] != "scored", "flagged"].any()
    assert json.loads(out["model"].read_text())["training"][0]["pair"] == "synthetic"


def _synthetic_table(rng, n_overlap=2000, n_outside=1000, share=0.08) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-pore features of an overlap and of the rest of a field of view, drawn alike (exchangeable)."""
    n = n_overlap + n_outside
    spurious = rng.random(n) < share
    table = pd.DataFrame({
        "label": np.arange(1, n + 1),
        "diameter_um": np.where(spurious, rng.normal(9, 3, n), rng.normal(18, 6, n)).clip(4, None),
        "contrast_noise": np.where(spurious, rng.normal(5, 2, n), rng.normal(9, 3, n)),
        "residual_mean": np.where(spurious, rng.normal(1.6, 0.4, n), rng.normal(1.1, 0.3, n)),
        "n_neighbours": rng.poisson(6, n),
        "fov_edge_distance_um": rng.uniform(0, 200, n),
        "centroid_z_vox": rng.uniform(0, 100, n),
        "overlap_share": np.r_[np.ones(n_overlap), np.zeros(n_outside)],
    })
    table["matched_high_res_label"] = np.where(table["overlap_share"] >= 0.5, np.where(spurious, 0, table["label"]),
                                               np.nan)
    return table, spurious


def test_the_flag_list_keeps_its_false_discovery_rate_outside_the_overlap():
    alpha = float(CONFIG["trust"]["classifier"]["fdr"])
    fdrs, powers, aucs = [], [], []
    for rep in range(20):
        table, spurious = _synthetic_table(np.random.default_rng(rep))
        table["role"] = assign_roles(table, seed=rep)
        model, fitted = fit_pair_model(table, CONFIG)
        assert fitted
        scored = apply_pair_model(table, model, alpha)
        outside = (table["overlap_share"] == 0).to_numpy()
        fdr, power, _ = fdr_and_power(scored["flagged"].to_numpy()[outside], spurious[outside])
        fdrs.append(fdr)
        powers.append(power)
        aucs.append(roc_auc(scored["p_spurious"].to_numpy()[outside], spurious[outside]))
    # the FDR is an expectation: its mean over repetitions, with a tolerance of ~3 standard errors; the lists
    # are not empty (an empty list would meet any FDR)
    assert np.mean(fdrs) <= alpha + 0.05, fdrs
    assert np.mean(powers) > 0.2 and np.count_nonzero(powers) >= 12 and min(aucs) > 0.9, (powers, aucs)


def test_too_few_spurious_pores_write_the_table_without_p_spurious_and_one_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        table, _, out = _run(tmp_path, seed=3, spurious_share=0.0)
    written = pd.read_csv(out["pores"])
    assert len(written) == len(table) > 50
    assert written["p_spurious"].isna().all() and written["conformal_p"].isna().all() and not written["flagged"].any()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "not fitted" in warnings[0]
    assert f"at least {MIN_SPURIOUS_PORES} spurious" in warnings[0]
    assert "\n" not in warnings[0]
    assert load_trust_model(out["model"]).notes[0] == warnings[0].split("trust model: ", 1)[1]


def test_a_model_file_of_other_features_is_refused_in_one_line(tmp_path):
    table, _ = _synthetic_table(np.random.default_rng(0), n_overlap=300, n_outside=50)
    fitting = table[table["overlap_share"] > 0].assign(
        matched_gt_label=lambda t: t["matched_high_res_label"], sphericity=np.linspace(0.5, 1, 300))
    path = tmp_path / "other.json"
    save_trust_model(fit_trust_model([fitting], features=["sphericity", "diameter_um"], calibration_frames=[fitting]),
                     path)
    with pytest.raises(TrustError) as err:
        apply_pair_model(table, path, 0.1)
    message = str(err.value)
    assert message.startswith(str(path)) and "sphericity" in message and "\n" not in message


def test_the_recovery_drops_pores_cut_by_its_faces_and_the_overlap_keeps_them():
    volume = np.ones((24, 24, 24), dtype=np.float32)
    volume[8:14, 8:14, 8:14] = 0  # inside
    volume[8:14, 0:5, 8:14] = 0  # cut by a y face
    volume[0:4, 16:21, 16:21] = 0  # cut by the first slice
    assert segment_pair_pores(volume, 1.0, CONFIG).max() == 1
    assert segment_pair_pores(volume, 1.0, CONFIG, keep_cut_pores=True).max() == 3


def test_a_pore_recovered_too_small_in_the_overlap_is_labelled_real():
    """The overlap labels come from the study's matching: a recovered pore wholly inside a larger
    high-res pore (IoU 1/8) is that real pore at the wrong size, so it gets its partner's label, not 0."""
    high = np.zeros((20, 20, 20), np.int32)
    high[2:10, 2:10, 2:10] = 1
    labels = np.zeros((24, 24, 24), np.int32)  # the recovery's grid, the overlap at an offset of 2
    labels[6:10, 6:10, 6:10] = 1  # inside high-res pore 1, an eighth of its volume
    labels[16:20, 16:20, 16:20] = 2  # solid in the high-res scan
    table = overlap_labels(labels, high, (slice(2, 22),) * 3)
    assert table["matched_high_res_label"].tolist() == [1.0, 0.0]
