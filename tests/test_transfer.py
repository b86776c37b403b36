"""The transfer structure (docs/phantom.md#the-transfer-structure): ellipsoidal voids, deterministic by seed,
unlike the foam in shape; the foam itself unchanged; nothing trained or fitted on transfer or alternate
(rule trust_transfer's DAG); the table's numbers."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from test_tuning import CHOOSING_RULES, _dry_run_jobs, upstream_files

from resrecover.config import load_config
from resrecover.io import read_volume
from resrecover.phantom import generate_foam, voxelize_foam
from resrecover.phantom.ellipsoids import (
    ELLIPSOIDS_COLUMNS,
    aspect_ratios,
    ellipsoid_porosity,
    ellipsoids_in_spheres,
    generate_ellipsoids,
    make_ellipsoid_phantom,
    random_rotations,
    read_ellipsoids,
    void_aspect_ratios,
    voxelize_ellipsoids,
)
from resrecover.phantom.foam import PhantomError, _subsample_offsets, voxel_centres_um
from resrecover.trust.transfer import TRANSFER_COLUMNS, transfer_row, transfer_table_from_files

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "tests" / "config" / "test.yaml"


@pytest.fixture(scope="module")
def config():
    return load_config(TEST_CONFIG)


@pytest.fixture(scope="module")
def fine(config):
    """The test preset on a 1 µm grid with a narrower cylinder: voids 3+ voxels across their short axis."""
    fine = copy.deepcopy(config)
    fine["voxel_size_um"] = 1.0
    fine["volume_shape"] = [48, 48, 48]
    fine["phantom"].update(cylinder_radius_um=22.0, max_void_radius_um=9.0, n_voids=30, n_candidates=5000)
    return fine


# ---------------------------------------------------------------------------------------------
# The foam is not touched
# ---------------------------------------------------------------------------------------------


def test_the_foam_is_bit_for_bit_what_it_was_before_the_transfer_structure(config):
    """SHA-256 of the test preset's foam (seed 1), recorded before the ellipsoids were added."""
    volume, spheres = generate_foam(config, seed=1)
    assert hashlib.sha256(volume.tobytes()).hexdigest() == (
        "17c9f2204c77fd0f0dfee7be06448e14550186f1e4cc4c2142234e68ab2ef5ea"
    )
    assert hashlib.sha256(spheres.tobytes()).hexdigest() == (
        "761fde96536ffa07994139f8b1dd8ebb969cf765fa687cf92fcb678a9a3dcc3f"
    )


# ---------------------------------------------------------------------------------------------
# The ellipsoids
# ---------------------------------------------------------------------------------------------


def test_same_seed_same_ellipsoids_other_seed_other_ellipsoids(config):
    a, ta = generate_ellipsoids(config, seed=4)
    b, tb = generate_ellipsoids(config, seed=4)
    c, tc = generate_ellipsoids(config, seed=5)
    assert a.tobytes() == b.tobytes() and ta.tobytes() == tb.tobytes()
    assert a.tobytes() != c.tobytes() and ta.tobytes() != tc.tobytes()


def test_each_ellipsoid_is_inscribed_in_the_foams_sphere_with_a_ratio_in_the_range(config):
    volume, table = generate_ellipsoids(config, seed=4)
    _, spheres = generate_foam(config, seed=4)  # the same placement, the same seed
    lo, hi = config["transfer"]["aspect_ratio"]
    q = aspect_ratios(table)
    assert table.shape == (config["phantom"]["n_voids"], len(ELLIPSOIDS_COLUMNS.split(",")))
    np.testing.assert_array_equal(table[:, :3], spheres[:, :3])
    np.testing.assert_array_equal(table[:, 3], spheres[:, 3])  # the longest semi-axis spans the sphere
    assert np.all((q >= lo) & (q <= hi)) and q.min() < lo + 0.2 * (hi - lo) and q.max() > hi - 0.2 * (hi - lo)
    np.testing.assert_allclose(table[:, 4], table[:, 3] / np.sqrt(q))
    axes = table[:, 6:].reshape(-1, 3, 3)
    np.testing.assert_allclose(axes @ axes.transpose(0, 2, 1), np.broadcast_to(np.eye(3), axes.shape), atol=1e-12)
    # orientations spread over the sphere: the long axes' mean |z| is near 1/2 (uniform directions)
    assert 0.35 < np.abs(axes[:, 0, 2]).mean() < 0.65
    assert volume.shape == tuple(config["volume_shape"]) and volume.dtype == np.float32


def test_random_rotations_are_uniform_enough_and_proper():
    r = random_rotations(np.random.default_rng(0), 20000)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    # every axis direction has E[u_z²] = 1/3 under the uniform (Haar) distribution
    np.testing.assert_allclose((r[:, :, 2] ** 2).mean(axis=0), 1 / 3, atol=0.01)


def test_voxelization_equals_brute_force_sub_sampling():
    """The full/edge shortcut gives exactly the count of every sub-sample, tested one by one."""
    spheres = np.array([[-3.1, 1.2, 0.4, 4.0], [4.2, -2.0, -1.1, 2.6], [0.7, 4.6, -4.5, 2.2]])
    table = ellipsoids_in_spheres(spheres, (1.5, 3.0), np.random.default_rng(7))
    shape, vs, radius, s = (12, 16, 16), 0.9, 7.3, 2
    got = voxelize_ellipsoids(table, shape, vs, radius, s)
    off = _subsample_offsets(s, vs)
    c = [voxel_centres_um(n, vs) for n in shape]
    z, y, x = np.meshgrid(*[(ci[:, None] + off[None, :]).ravel() for ci in c], indexing="ij")
    material = (x * x + y * y) <= radius * radius
    for row in table:
        d = np.stack([x - row[0], y - row[1], z - row[2]], axis=-1)
        rho2 = sum(((d @ row[6 + 3 * k : 9 + 3 * k]) / row[3 + k]) ** 2 for k in range(3))
        material &= rho2 >= 1.0
    expected = material.reshape(shape[0], s, shape[1], s, shape[2], s).mean(axis=(1, 3, 5)).astype(np.float32)
    np.testing.assert_array_equal(got, expected)


def test_voxel_porosity_matches_the_analytic_one_with_cut_ends(config):
    volume, table = generate_ellipsoids(config, seed=4)
    ph, shape, vs = config["phantom"], config["volume_shape"], config["voxel_size_um"]
    analytic = ellipsoid_porosity(table, ph["cylinder_radius_um"], shape[0] * vs / 2)
    inside = np.pi * ph["cylinder_radius_um"] ** 2 / vs**2 * shape[0]
    assert 1 - volume.sum(dtype=np.float64) / inside == pytest.approx(analytic, rel=0.05)
    # an ellipsoid cut in half by the slab's end counts half
    one = np.array([[0, 0, 10.0, 6.0, 4.0, 2.0, *np.eye(3).ravel()]])
    whole = ellipsoid_porosity(one, 30.0, 50.0)
    assert ellipsoid_porosity(one, 30.0, 10.0) * 10.0 == pytest.approx(whole * 50.0 / 2)


def test_measured_pores_are_elongated_where_the_foams_are_round(fine):
    """Second moments of each voxelized void: the ellipsoids' ratios lie in the stated range, the foam's
    spheres (shrunk so that they do not touch and can be told apart) measure about 1."""
    lo, hi = fine["transfer"]["aspect_ratio"]
    volume, _ = generate_ellipsoids(fine, seed=4)
    measured = void_aspect_ratios(volume, 1.0, 22.0)
    _, spheres = generate_foam(fine, seed=4)
    spheres[:, 3] *= 0.7
    foam = void_aspect_ratios(voxelize_foam(spheres, (48, 48, 48), 1.0, 22.0, 2), 1.0, 22.0)
    assert measured.size >= 8 and foam.size >= 8
    assert np.all((measured > 0.9 * lo) & (measured < 1.15 * hi)) and np.median(measured) > 1.8
    assert foam.max() < 1.3 and np.median(foam) < 1.1
    assert measured.min() > foam.max()


def test_ellipsoid_phantom_file_layout(config, tmp_path):
    path = tmp_path / "transfer.h5"
    summary = make_ellipsoid_phantom(path, config, seed=4)
    volume, attrs = read_volume(path)
    expected_volume, expected = generate_ellipsoids(config, seed=4)
    np.testing.assert_array_equal(read_ellipsoids(path), expected)
    np.testing.assert_array_equal(volume, expected_volume)
    assert attrs["structure"] == "ellipsoids" and attrs["seed"] == 4
    assert attrs["ellipsoids_columns"] == ELLIPSOIDS_COLUMNS
    assert json.loads(attrs["transfer"]) == config["transfer"]
    assert summary["voxel_porosity"] == pytest.approx(summary["analytic_porosity"], rel=0.05)
    with h5py.File(path) as fh:
        assert "spheres" not in fh  # read_spheres refuses it: these voids are no spheres


def test_a_bad_aspect_ratio_is_refused():
    with pytest.raises(PhantomError, match=r"aspect_ratio: \[3, 2\]; expected \[min, max\]"):
        ellipsoids_in_spheres(np.ones((1, 4)), (3, 2), np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------
# The workflow: trust_transfer's DAG
# ---------------------------------------------------------------------------------------------

PRESETS = [REPO / "config" / "quick.yaml", REPO / "config" / "config.yaml"]


# the paper preset's DAG is checked alike by test_tuning.py's DAG test (which includes trust_transfer)
@pytest.mark.parametrize("preset", PRESETS[:1], ids=lambda p: p.name)
def test_nothing_is_trained_fitted_or_chosen_on_transfer_or_alternate(preset):
    jobs = _dry_run_jobs(preset, "all", "learning_curves", "trust_transfer")  # test_tuning's DAG, cached
    producer = {out: job for job in jobs for out in job["output"]}
    rules = {job["rule"] for job in jobs}
    assert {"phantom_transfer", "scan_transfer", "train", "trust_model", "flag_pores", "trust_transfer"} <= rules
    # transfer is recovered, labelled and scored like alternate, by models made on train
    transfer_jobs = {job["rule"] for job in jobs if any("/transfer" in p for p in job["output"])}
    assert {"recover_network", "richardson_lucy", "evaluate_volume", "trust_maps", "trust_pores",
            "flag_pores"} <= transfer_jobs
    # the transfer foam is scanned at the trust σ levels only: no HRES target to train on
    scans = next(job for job in jobs if job["rule"] == "scan_transfer")["output"]
    assert not any(p.endswith(f"sigma{load_config(preset)['scan']['target_sigma_um']:g}.h5") for p in scans)
    choosing = [job for job in jobs if job["rule"] in CHOOSING_RULES]
    assert choosing
    for job in choosing:
        for path in upstream_files(job, producer):
            assert "transfer" not in path and "alternate" not in path, f"{job['rule']} depends on {path}"


def test_the_demo_does_not_simulate_the_transfer_structure():
    jobs = _dry_run_jobs(PRESETS[0])
    assert not [job for job in jobs if any("transfer" in p for p in job["output"] + job["input"])]


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


def _scored(n_real=60, n_spurious=6, seed=0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n_real, bool), np.ones(n_spurious, bool)]
    return pd.DataFrame({
        "matched_gt_label": np.where(y, 0, np.arange(1, y.size + 1)),
        "diameter_um": np.where(y, 8.0, 30.0) + rng.normal(0, 1, y.size),
        "p_spurious": np.where(y, 0.8, 0.1) + rng.normal(0, 0.01, y.size),
        "flagged": np.r_[np.zeros(n_real - 1, bool), True, np.ones(n_spurious - 2, bool), False, False],
        "calibrated": True,
    })


def test_a_row_reports_the_classifier_the_flags_and_the_recovery(config):
    summary = pd.Series({"recovery_pct": 91.5, "n_matched": 60, "n_missed": 5})
    row = transfer_row(_scored(), summary, config, "deepnet", "transfer", 9.0)
    assert set(row) == set(TRANSFER_COLUMNS)
    assert row["structure"] == "ellipsoids" and row["n_gt_pores"] == 65 and row["recovery_pct"] == 91.5
    assert row["matched_pct"] == pytest.approx(100 * 60 / 65)
    assert (row["n_pores"], row["n_spurious"], row["n_flagged"]) == (66, 6, 5)
    assert row["auc_p_spurious"] == 1.0 and row["auc_ci_low"] <= 1.0 and row["auc_size"] == 1.0
    assert row["fdr_achieved"] == pytest.approx(1 / 5) and row["power"] == pytest.approx(4 / 6)
    assert row["fdr_setting"] == config["trust"]["classifier"]["fdr"] and row["in_domain"]
    unscored = _scored().drop(columns=["p_spurious", "flagged"]).assign(calibrated=False)
    row = transfer_row(unscored, summary, config, "rl", "alternate", 3.0)
    assert row["structure"] == "foam" and np.isnan(row["auc_p_spurious"]) and not row["in_domain"]
    # a model not fitted scores every pore alike: it ranks nothing, so no AUC (its ties would read 0.5)
    constant = _scored().assign(p_spurious=0.01, flagged=False)
    row = transfer_row(constant, summary, config, "deepnet", "transfer", 9.0)
    assert np.isnan(row["auc_p_spurious"]) and np.isnan(row["auc_ci_low"]) and row["auc_size"] == 1.0
    # real pores recovered at the wrong size are among the ground truth's pores
    row = transfer_row(_scored(), pd.Series({**summary, "n_mis_sized": 3}), config, "deepnet", "transfer", 9.0)
    assert row["n_gt_pores"] == 68


def test_the_table_puts_alternate_first_and_reads_keys_not_paths(config, tmp_path):
    volumes = []
    for i, (realization, method, sigma) in enumerate([("transfer", "rl", 9.0), ("alternate", "rl", 9.0),
                                                        ("transfer", "deepnet", 3.0)]):
        pores, summary = tmp_path / f"p{i}.csv", tmp_path / f"s{i}.csv"
        _scored(seed=i).to_csv(pores, index=False)
        pd.DataFrame([{"recovery_pct": 90.0, "n_matched": 60, "n_missed": 6}]).to_csv(summary, index=False)
        volumes.append({"method": method, "realization": realization, "sigma_um": sigma, "pores": pores,
                        "summary": summary})
    table = transfer_table_from_files(volumes, tmp_path / "trust_transfer.csv", config)
    assert list(table.columns) == TRANSFER_COLUMNS
    assert list(zip(table["realization"], table["method"])) == [("alternate", "rl"), ("transfer", "deepnet"),
                                                                 ("transfer", "rl")]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "trust_transfer.csv"), table, check_dtype=False)


def test_trust_transfer_target_runs_on_the_test_preset(test_preset_run):
    """`snakemake trust_transfer` in the shared run: the ellipsoids simulated, recovered, scored; the table."""
    from conftest import run_snakemake

    run_snakemake("trust_transfer", "--cores", "2", "--configfile", TEST_CONFIG, "--directory", test_preset_run)
    results = test_preset_run / "results"
    table = pd.read_csv(results / "tables" / "trust_transfer.csv")
    assert list(table.columns) == TRANSFER_COLUMNS
    assert list(table["realization"]) == ["alternate", "transfer"]  # the test preset: DeepNet at 9 µm
    assert table["n_gt_pores"].min() > 0 and (table["n_pores"] >= table["n_spurious"]).all()
    with h5py.File(results / "phantoms" / "transfer.h5") as fh:
        assert fh.attrs["structure"] == "ellipsoids" and "ellipsoids" in fh
    assert sorted(p.name for p in (results / "recon" / "transfer").iterdir()) == ["ground_truth.h5", "sigma9.h5"]
