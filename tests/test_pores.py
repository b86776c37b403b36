"""Segmentation recipe, pore tables, matching and the per-volume evaluation on small synthetic foams."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from resrecover import ResrecoverError
from resrecover.evaluate.pores import (
    CUT_BY_ENDS,
    MIS_SIZED,
    PORE_COLUMNS,
    annotate_matches,
    match_pores,
    pore_table,
    pores_summary,
    porosity,
    read_edge_cut,
    read_labels,
)
from resrecover.evaluate.pores import size_histogram, sphericity, write_labels
from resrecover.evaluate.segmentation import (
    estimate_noise_sigma,
    fill_small_holes,
    segment_pores,
    split_touching_pores,
)
from resrecover.masks import cylinder_mask

SHAPE = (64, 64, 64)
RADIUS_VOX = 29.0  # foam cylinder radius


def centre_offsets(shape):
    """Voxel-centre coordinates relative to the grid centre (voxels), z-y-x."""
    return [np.arange(n) - (n - 1) / 2 for n in shape]


def sphere_volume(spheres, shape=SHAPE, cylinder_vox=RADIUS_VOX):
    """Material 1 inside the cylinder, 0 in the spheres and outside; spheres (cz, cy, cx, r) in voxels
    from the grid centre. Also returns the ground-truth labels (sphere i -> i + 1)."""
    z, y, x = centre_offsets(shape)
    mask = cylinder_mask(shape, cylinder_vox, 1.0)
    volume = mask.astype(np.float32)
    labels = np.zeros(shape, np.int32)
    for i, (cz, cy, cx, r) in enumerate(spheres):
        inside = (z[:, None, None] - cz) ** 2 + (y[None, :, None] - cy) ** 2 + (x[None, None, :] - cx) ** 2 <= r * r
        volume[inside] = 0.0
        labels[inside & mask] = i + 1
    return volume, mask, labels


def lattice_spheres(seed=0):
    """12 separated spheres of radius 5 to 7 voxels, none touching the top or bottom slice."""
    rng = np.random.default_rng(seed)
    spheres = []
    for cz in (-16.0, 0.0, 16.0):
        for cy, cx in ((-10, -10), (-10, 10), (10, -10), (10, 10)):
            jitter = rng.uniform(-0.5, 0.5, 3)
            spheres.append((cz + jitter[0], cy + jitter[1], cx + jitter[2], rng.uniform(5.0, 7.0)))
    return spheres


@pytest.fixture(scope="module")
def lattice():
    spheres = lattice_spheres()
    volume, mask, truth = sphere_volume(spheres)
    return spheres, volume, mask, truth


def test_known_spheres_count_porosity_sphericity(lattice):
    spheres, volume, mask, truth = lattice
    labels = segment_pores(volume, mask, voxel_size_um=2.0)
    assert labels.dtype == np.int32
    assert labels.max() == len(spheres)
    assert set(np.unique(labels)) == set(range(len(spheres) + 1))
    # the segmentation recovers exactly the digitized voids
    assert porosity(labels, mask) == pytest.approx(porosity(truth, mask), rel=1e-9)
    # and the analytic void fraction within 1%
    analytic = sum(4 / 3 * math.pi * s[3] ** 3 for s in spheres) / mask.sum()
    assert porosity(labels, mask) == pytest.approx(analytic, rel=0.01)
    table = pore_table(labels, voxel_size_um=2.0)
    assert list(table.columns) == PORE_COLUMNS
    assert len(table) == len(spheres)
    assert table["sphericity"].mean() > 0.9
    assert table["sphericity"].max() <= 1.0


def test_pore_table_geometry_in_micrometres():
    voxel = 2.5
    centre = (3.3, -4.2, 6.7)  # voxels from the grid centre
    radius = 10.0
    _, _, truth = sphere_volume([(*centre, radius)])
    table = pore_table(truth, voxel_size_um=voxel)
    row = table.iloc[0]
    n_vox = np.count_nonzero(truth)
    assert row["volume_um3"] == pytest.approx(n_vox * voxel**3)
    assert row["diameter_um"] == pytest.approx((6 * n_vox * voxel**3 / math.pi) ** (1 / 3))
    for axis, name in enumerate(("centroid_z_um", "centroid_y_um", "centroid_x_um")):
        assert row[name] == pytest.approx(centre[axis] * voxel, abs=0.05 * voxel)
    # marching cubes on a digitized sphere: within a few % of 4πr²
    assert row["surface_um2"] == pytest.approx(4 * math.pi * (radius * voxel) ** 2, rel=0.04)
    assert 0.95 < row["sphericity"] <= 1.0


@pytest.mark.parametrize("smoothing_vox", [0.7, 0.0])
def test_compiled_pore_measures_equal_the_scikit_image_recipe(lattice, smoothing_vox):
    """The compiled engine (classic marching cubes) against the scipy + scikit-image one (Lewiner's).

    Pores cut by the array's faces, touching pores, a one-voxel speck (meshed unsmoothed) and a
    label gap are in; the thread count must not change anything.
    """
    from resrecover.evaluate.pore_surface import measure_pores

    _, _, _, truth = lattice
    labels = truth.copy()
    labels[0:4, 0:5, 30:36] = 20  # cut by three faces
    labels[40:44, 0:3, 0:3] = 21
    labels[40:44, 3:6, 0:3] = 22  # touches 21
    labels[63, 63, 63] = 23  # a speck in the corner
    reference = measure_pores(labels, smoothing_vox, 1, engine="skimage")
    for threads in (1, 2, 3):
        present, counts, sums, area_volume = measure_pores(labels, smoothing_vox, threads)
        np.testing.assert_array_equal(present, reference[0])
        np.testing.assert_array_equal(counts, reference[1])
        np.testing.assert_allclose(sums, reference[2], rtol=0, atol=0)
        np.testing.assert_allclose(area_volume, reference[3], rtol=1e-4)


def test_pore_surface_of_a_cube_is_not_a_sphere():
    labels = np.zeros((30, 30, 30), np.int32)
    labels[5:25, 5:25, 5:25] = 1  # a cube: sphericity 0.806 exactly, smoothing rounds it a bit
    table = pore_table(labels, voxel_size_um=1.0)
    assert 0.78 < table["sphericity"].iloc[0] < 0.93


def test_sphericity_is_clipped_to_one():
    v = 4 / 3 * math.pi * 5.0**3
    assert sphericity(v, 4 * math.pi * 25.0) == pytest.approx(1.0)
    assert sphericity(v, 0.9 * 4 * math.pi * 25.0) == 1.0
    assert sphericity(v, 2 * 4 * math.pi * 25.0) == pytest.approx(0.5)


@pytest.mark.parametrize("gap", [0.0, -1.5])
def test_touching_spheres_are_split(gap):
    r = 7.0
    half = r + gap / 2  # gap < 0: the spheres overlap, joined by a neck wider than the contact point
    spheres = [(0.0, 0.0, -half, r), (0.0, 0.0, half, r)]
    volume, mask, _ = sphere_volume(spheres)
    pores = (volume < 0.5) & mask
    assert ndi.label(pores)[1] == 1, "the two voids must touch in the test volume"
    labels = segment_pores(volume, mask, voxel_size_um=1.0)
    assert labels.max() == 2
    sizes = np.bincount(labels.ravel())[1:]
    assert abs(sizes[0] - sizes[1]) < 0.1 * sizes.mean()


def test_a_large_h_merges_touching_spheres():
    """The h of the split is live: a neck 1.5 voxels below the radius is kept whole with h = 3."""
    r = 7.0
    spheres = [(0.0, 0.0, -(r - 0.75), r), (0.0, 0.0, r - 0.75, r)]
    volume, mask, _ = sphere_volume(spheres)
    assert segment_pores(volume, mask, 1.0, marker_h_um=0.25).max() == 2
    assert segment_pores(volume, mask, 1.0, marker_h_um=6.0).max() == 1


def test_voxel_size_does_not_change_the_segmentation(lattice):
    _, volume, mask, _ = lattice
    a = segment_pores(volume, mask, voxel_size_um=1.0)
    b = segment_pores(volume, mask, voxel_size_um=3.2)
    np.testing.assert_array_equal(a, b)


def test_edge_kill_top_and_bottom_but_not_the_wall():
    nz = SHAPE[0]
    top = -(nz - 1) / 2
    spheres = [
        (top + 3.0, 0.0, 0.0, 6.0),  # cut by the first slice
        (-top - 2.0, 10.0, 0.0, 5.0),  # cut by the last slice
        (0.0, 0.0, RADIUS_VOX - 6.0, 6.0),  # touching the cylinder wall from inside
        (0.0, -12.0, 0.0, 5.0),  # plain interior pore
    ]
    volume, mask, truth = sphere_volume(spheres)
    labels = segment_pores(volume, mask, voxel_size_um=1.0)
    assert labels.max() == 2
    kept = {int(np.bincount(truth[labels == k]).argmax()) for k in (1, 2)}
    assert kept == {3, 4}


def test_a_void_cut_by_an_end_in_the_truth_only_is_neither_spurious_nor_matched(tmp_path):
    """The edge kill acts on each volume alone: a void that reaches the first slice in the truth but
    stops short of it in a blurred (shrunk) recovery is kept in one and removed in the other. The
    matching must not call it a hallucination, and must still call a void in solid material one."""
    top = -(SHAPE[0] - 1) / 2
    truth_volume, mask, _ = sphere_volume([(top + 3.0, 0.0, 0.0, 6.0), (0.0, -12.0, 0.0, 5.0)])
    # the recovery: the end void shrunk so that it no longer reaches the first slice, plus a void
    # where the truth is solid
    recovered_volume, _, _ = sphere_volume([(top + 5.0, 0.0, 0.0, 3.5), (0.0, -12.0, 0.0, 5.0), (0.0, 12.0, 0.0, 4.0)])
    gt_labels, gt_cut = segment_pores(truth_volume, mask, 1.0, return_edge_cut=True)
    labels, cut = segment_pores(recovered_volume, mask, 1.0, return_edge_cut=True)
    assert gt_labels.max() == 1 and gt_cut[0].any() and not gt_cut[SHAPE[0] // 2].any()
    assert labels.max() == 3 and not cut.any()
    np.testing.assert_array_equal(segment_pores(truth_volume, mask, 1.0), gt_labels)  # same labels either way

    old = match_pores(labels, gt_labels)
    assert (old.n_matched, old.n_spurious) == (1, 2)  # without the masks: the end void counts as spurious
    m = match_pores(labels, gt_labels, edge_cut=cut, gt_edge_cut=gt_cut)
    end_void = int(labels[int(round(top + 5.0 + (SHAPE[0] - 1) / 2)), SHAPE[1] // 2, SHAPE[2] // 2])
    assert m.n_matched == 1 and m.cut.tolist() == [end_void] and m.n_spurious == 1 and m.n_missed == 0
    assert end_void not in m.spurious.tolist()
    assert m.gt_label_of([end_void]).tolist() == [CUT_BY_ENDS]
    table = annotate_matches(pore_table(labels, 1.0), m, pore_table(gt_labels, 1.0))
    assert sorted(table["matched_gt_label"].tolist()) == [CUT_BY_ENDS, 0, 1]
    summary = pores_summary(table, labels, mask, pore_table(gt_labels, 1.0), 0.1, m)
    assert (summary["n_spurious"], summary["n_cut_by_ends"], summary["n_gt_cut_by_ends"]) == (1, 1, 0)
    assert summary["n_matched"] + summary["n_spurious"] + summary["n_cut_by_ends"] == summary["n_pores"] == 3

    # the other way round, a truth void the recovery's edge kill removed is not missed
    m = match_pores(gt_labels * 0, gt_labels, edge_cut=gt_labels > 0, gt_edge_cut=None)
    assert m.n_missed == 0 and m.gt_cut.tolist() == [1]
    summary = pores_summary(pore_table(gt_labels * 0, 1.0), gt_labels * 0, mask, pore_table(gt_labels, 1.0), 0.1, m)
    assert summary["n_matched"] + summary["n_missed"] + summary["n_gt_cut_by_ends"] == gt_labels.max() == 1

    # the mask travels with the labels file
    write_labels(tmp_path / "gt.h5", gt_labels, 1.0, edge_cut=gt_cut)
    np.testing.assert_array_equal(read_edge_cut(tmp_path / "gt.h5"), gt_cut)
    write_labels(tmp_path / "old.h5", gt_labels, 1.0)
    assert read_edge_cut(tmp_path / "old.h5") is None
    with pytest.raises(ResrecoverError, match="gt_edge_cut: shape"):
        match_pores(labels, gt_labels, gt_edge_cut=np.zeros((2, 2, 2), bool))


def test_small_regions_and_holes():
    spheres = [(0.0, 0.0, 0.0, 8.0), (0.5, 18.5, 0.5, 1.0)]  # a 7-voxel speck (centre + 6 faces)
    volume, mask, _ = sphere_volume(spheres)
    volume[32, 32, 32] = 1.0  # one bright noise voxel inside the big pore: a hole
    labels = segment_pores(volume, mask, 1.0, min_pore_volume_voxels=8)
    assert labels.max() == 1
    assert labels[32, 32, 32] == 1, "the closing fills the one-voxel hole"
    assert segment_pores(volume, mask, 1.0, min_pore_volume_voxels=1).max() == 2


def test_fill_small_holes_keeps_thin_walls():
    pores = np.zeros((20, 20, 20), bool)
    pores[4:16, 4:16, 4:9] = True
    pores[4:16, 4:16, 10:16] = True  # a one-voxel wall at x = 9
    pores[8, 8, 6] = False  # an enclosed speck
    filled = fill_small_holes(pores, 1.0)
    assert filled[8, 8, 6]
    assert not filled[4:16, 4:16, 9].any(), "a wall is not a hole"
    assert ndi.binary_closing(pores, np.ones((3, 3, 3)))[10, 10, 9], "a plain closing would erase it"


def test_split_touching_pores_single_component_is_one_label():
    pores = np.zeros((20, 20, 20), bool)
    pores[5:15, 5:15, 5:15] = True
    labels = split_touching_pores(pores, 1.0, 0.25)
    assert set(np.unique(labels)) == {0, int(labels.max())}


def test_matching_reports_missed_and_spurious(lattice):
    spheres, volume, mask, truth = lattice
    gt_labels = segment_pores(volume, mask, voxel_size_um=1.0)
    # recovered volume: sphere 3 lost, one new void in the material
    deleted = spheres[3]
    extra = (0.0, 0.0, 0.0, 4.0)
    recovered, _, _ = sphere_volume([s for i, s in enumerate(spheres) if i != 3] + [extra])
    labels = segment_pores(recovered, mask, voxel_size_um=1.0)
    assert labels.max() == len(spheres)  # the count alone hides both errors
    m = match_pores(labels, gt_labels)
    assert (m.n_matched, m.n_missed, m.n_spurious) == (len(spheres) - 1, 1, 1)
    missed_gt = m.missed[0]
    z, y, x = [int(round(c + (n - 1) / 2)) for c, n in zip(deleted[:3], SHAPE)]
    assert gt_labels[z, y, x] == missed_gt
    zc = (SHAPE[0] - 1) // 2
    assert labels[zc, zc, zc] == m.spurious[0] or labels[zc + 1, zc + 1, zc + 1] == m.spurious[0]
    assert (m.pairs["iou"] > 0.99).all()
    assert np.allclose(m.pairs["diameter_rel_error"], 0.0)
    # summary: count ratio 100% yet one missed and one spurious
    gt_table = pore_table(gt_labels, 1.0)
    table = pore_table(labels, 1.0)
    summary = pores_summary(table, labels, mask, gt_table, porosity(gt_labels, mask), m)
    assert summary["recovery_pct"] == pytest.approx(100.0)
    assert (summary["n_matched"], summary["n_missed"], summary["n_spurious"]) == (11, 1, 1)
    expected_porosity = porosity(labels, mask)
    assert summary["porosity_error_pct"] == pytest.approx(
        100 * (expected_porosity - porosity(gt_labels, mask)) / porosity(gt_labels, mask)
    )
    assert summary["sphericity_mean"] == pytest.approx(table["sphericity"].mean())


def test_matching_is_one_to_one_for_merged_pores():
    gt = np.zeros((10, 10, 20), np.int32)
    gt[2:8, 2:8, 2:9] = 1
    gt[2:8, 2:8, 10:18] = 2
    merged = np.where(gt > 0, 1, 0).astype(np.int32)
    merged[2:8, 2:8, 9] = 1
    m = match_pores(merged, gt, min_iou=0.3)
    assert m.n_matched == 1 and m.n_missed == 1 and m.n_spurious == 0
    assert m.pairs["gt_label"].iloc[0] == 2  # the larger overlap wins
    # IoU 8/15 with min_iou 0.6 matches nothing; the merged pore still holds the larger real pore
    # whole, so the two are one real pore at the wrong size, and the other real pore is missed
    m = match_pores(merged, gt, min_iou=0.6)
    assert (m.n_matched, m.n_missed, m.n_spurious, m.n_mis_sized) == (0, 1, 0, 1)
    assert m.mis_sized[["label", "gt_label"]].values.tolist() == [[1, 2]]


def test_a_real_pore_recovered_too_small_is_neither_spurious_nor_missed():
    """IoU punishes size as much as position: a real pore recovered at an eighth of its volume, wholly
    inside itself, has IoU 1/8. It is a real pore at the wrong size, not a hallucination beside a
    miss. A void in solid material and a fragment inside a matched pore (a wall that is not there)
    stay spurious; a same-size pore shifted off its partner does not become mis-sized."""
    gt = np.zeros((20, 20, 60), np.int32)
    gt[2:10, 2:10, 2:10] = 1  # recovered at an eighth of its volume
    gt[2:10, 2:10, 20:30] = 2  # matched, with a spurious fragment beside it
    gt[12:16, 12:16, 40:44] = 3  # recovered shifted by its own width: missed
    labels = np.zeros_like(gt)
    labels[4:8, 4:8, 4:8] = 1  # 64 voxels inside the 512 of real pore 1
    labels[2:10, 2:10, 20:27] = 2
    labels[4:6, 4:6, 28:30] = 3  # fragment: a wall invented inside real pore 2
    labels[12:16, 12:16, 44:48] = 4  # touches nothing of real pore 3
    labels[12:16, 2:6, 50:54] = 5  # solid material in the truth
    m = match_pores(labels, gt)
    assert m.pairs[["label", "gt_label"]].values.tolist() == [[2, 2]]
    assert m.mis_sized[["label", "gt_label"]].values.tolist() == [[1, 1]]
    assert m.mis_sized["iou"].iloc[0] == pytest.approx(64 / 512)
    assert m.spurious.tolist() == [3, 4, 5] and m.missed.tolist() == [3]
    assert m.gt_label_of([1, 2, 3]).tolist() == [MIS_SIZED, 2, 0]
    table = annotate_matches(pore_table(labels, 1.0), m, pore_table(gt, 1.0))
    assert table["matched_gt_label"].tolist() == [MIS_SIZED, 2, 0, 0, 0]
    assert np.isnan(table["diameter_error_um"].iloc[0])  # a size error is not a matched pore's error
    mask = np.ones(gt.shape, bool)
    summary = pores_summary(table, labels, mask, pore_table(gt, 1.0), porosity(gt, mask), m)
    assert (summary["n_matched"], summary["n_spurious"], summary["n_mis_sized"], summary["n_missed"]) == (1, 3, 1, 1)
    assert summary["n_matched"] + summary["n_spurious"] + summary["n_cut_by_ends"] + summary["n_mis_sized"] == 5
    assert summary["n_matched"] + summary["n_missed"] + summary["n_gt_cut_by_ends"] + summary["n_mis_sized"] == 3
    # one to one: a second small piece inside the same real pore is spurious, not a second real pore
    labels[4:6, 4:6, 8:10] = 6
    m = match_pores(labels, gt)
    assert m.mis_sized["label"].tolist() == [1] and 6 in m.spurious.tolist()
    # a share just under the rule is not enough: a pore with less than half of itself inside
    near = np.zeros_like(gt)
    near[4:8, 4:8, 7:11] = 1  # 3 of its 4 columns inside real pore 1 (48 of 64 voxels) ...
    assert match_pores(near, gt).n_mis_sized == 1
    near[:] = 0
    near[4:8, 4:8, 9:13] = 1  # ... and 1 of 4 (16 of 64)
    assert match_pores(near, gt).n_mis_sized == 0


def test_matching_with_a_shifted_copy():
    _, _, truth = sphere_volume([(0.0, 0.0, 0.0, 6.0)])
    shifted = np.roll(truth, 2, axis=2)
    m = match_pores(shifted, truth)
    assert m.n_matched == 1 and 0.3 < m.pairs["iou"].iloc[0] < 1
    far = np.roll(truth, 9, axis=2)  # shifted by 1.5 radii: IoU < 0.1
    assert match_pores(far, truth).n_matched == 0


def test_nlm_path_runs_and_keeps_the_pores(lattice):
    spheres, volume, mask, _ = lattice
    rng = np.random.default_rng(3)
    noisy = (volume + rng.normal(0, 0.15, volume.shape)).astype(np.float32)
    assert estimate_noise_sigma(noisy, mask) == pytest.approx(0.15, rel=0.15)
    labels = segment_pores(noisy, mask, voxel_size_um=1.0, denoise=True)
    assert labels.max() == len(spheres)


def test_size_histogram_bins():
    hist = size_histogram([1.0, 4.9, 5.0, 12.0], bin_um=5.0, max_um=20.0)
    assert list(hist.columns) == ["bin_start_um", "bin_end_um", "count"]
    assert hist["bin_start_um"].tolist() == [0.0, 5.0, 10.0, 15.0, 20.0]
    assert hist["count"].tolist() == [2, 1, 1, 0, 0]
    assert hist["count"].sum() == 4
    assert size_histogram([], bin_um=5.0)["count"].sum() == 0


def test_labels_round_trip_as_int32(tmp_path):
    labels = np.arange(4 * 5 * 6, dtype=np.int32).reshape(4, 5, 6)
    path = tmp_path / "labels.h5"
    write_labels(path, labels, 2.0, method="x")
    back, attrs = read_labels(path)
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, labels)
    assert attrs["voxel_size_um"] == 2.0


def test_errors_name_the_problem():
    from resrecover import ResrecoverError

    with pytest.raises(ResrecoverError, match="constant"):
        segment_pores(np.ones(SHAPE, np.float32), cylinder_mask(SHAPE, 20, 1.0), 1.0)
    with pytest.raises(ResrecoverError, match="shape"):
        segment_pores(np.ones(SHAPE, np.float32), np.ones((4, 4, 4), bool), 1.0)
    with pytest.raises(ResrecoverError, match="integer"):
        pore_table(np.zeros(SHAPE, np.float32), 1.0)


# --------------------------------------------------------------------------------------------
# The per-volume adapter and the collector on the test preset's grid
# --------------------------------------------------------------------------------------------


def test_evaluate_volume_end_to_end(tmp_path):
    from resrecover.config import load_config
    from resrecover.evaluate.stages import (
        PORES_SUMMARY_COLUMNS,
        collect_pore_tables,
        evaluate_volume,
        segment_ground_truth,
    )
    from resrecover.io import write_volume

    config = load_config(Path(__file__).parent / "config" / "test.yaml")
    shape = tuple(config["volume_shape"])
    vox = config["voxel_size_um"]
    cyl_vox = config["phantom"]["cylinder_radius_um"] / vox
    spheres = [(cz, cy, cx, 3.5) for cz in (-9.0, 0.0, 9.0) for cy, cx in ((-5, -5), (5, 5), (-5, 5))]
    gt, _, _ = sphere_volume(spheres, shape, cyl_vox)
    recovered, _, _ = sphere_volume(spheres[:-1] + [(0.0, 0.0, 0.0, 2.5)], shape, cyl_vox)
    recovered = ndi.gaussian_filter(recovered, 0.5)
    write_volume(tmp_path / "gt.h5", gt, vox)
    write_volume(tmp_path / "rec.h5", recovered, vox)
    out = {k: tmp_path / f"{k}.csv" for k in ("pores", "metrics", "gaussian_fit", "fsc", "summary")}

    gt_summary = segment_ground_truth(
        tmp_path / "gt.h5",
        tmp_path / "gt_pores.csv",
        tmp_path / "gt_labels.h5",
        tmp_path / "gt_summary.csv",
        config,
        "alternate",
    )
    assert gt_summary["n_pores"] == len(spheres)
    result = evaluate_volume(
        tmp_path / "rec.h5",
        tmp_path / "gt.h5",
        tmp_path / "gt_labels.h5",
        tmp_path / "gt_pores.csv",
        config,
        "deepnet",
        "alternate",
        3.0,
        False,
        out["pores"],
        tmp_path / "labels.h5",
        out["metrics"],
        out["gaussian_fit"],
        out["fsc"],
        out["summary"],
    )
    assert (result["n_matched"], result["n_missed"], result["n_spurious"]) == (8, 1, 1)
    labels, _ = read_labels(tmp_path / "labels.h5")
    assert labels.dtype == np.int32 and labels.max() == 9
    pores = pd.read_csv(out["pores"])
    assert (pores["matched_gt_label"] == 0).sum() == 1
    assert pores[["method", "realization", "sigma_um"]].drop_duplicates().values.tolist() == [
        ["deepnet", "alternate", 3.0]
    ]
    assert list(pd.read_csv(out["metrics"]).columns) == ["method", "realization", "sigma_um", "mse", "psnr", "ssim"]
    assert list(pd.read_csv(out["gaussian_fit"]).columns) == [
        "method",
        "realization",
        "sigma_um",
        "blur_sigma_um",
        "mse",
    ]
    assert list(pd.read_csv(out["fsc"]).columns) == ["method", "realization", "sigma_um", "frequency", "fsc"]

    tables = {k: tmp_path / f"table_{k}.csv" for k in ("summary", "hist", "best", "fsc")}
    collect_pore_tables(
        [out["summary"]],
        [tmp_path / "gt_summary.csv"],
        [out["pores"]],
        [tmp_path / "gt_pores.csv"],
        out["gaussian_fit"],
        out["fsc"],
        tables["summary"],
        tables["hist"],
        tables["best"],
        tables["fsc"],
        bin_um=5.0,
    )
    summary = pd.read_csv(tables["summary"])
    assert list(summary.columns) == PORES_SUMMARY_COLUMNS
    assert summary["method"].tolist() == ["ground_truth", "deepnet"]
    assert summary.loc[0, "recovery_pct"] == 100 and np.isnan(summary.loc[0, "sigma_um"])
    hist = pd.read_csv(tables["hist"])
    assert list(hist.columns) == ["method", "realization", "sigma_um", "bin_start_um", "bin_end_um", "count"]
    edges = hist.groupby("method")["bin_start_um"].apply(tuple)
    assert edges["ground_truth"] == edges["deepnet"]
    assert hist.groupby("method")["count"].sum().to_dict() == {"deepnet": 9, "ground_truth": 9}
    best = pd.read_csv(tables["best"])
    assert list(best.columns) == ["method", "realization", "sigma_um", "best_blur_sigma_um", "best_fwhm_um", "mse"]
    fsc = pd.read_csv(tables["fsc"])
    assert list(fsc.columns) == ["method", "realization", "sigma_um", "fsc_threshold", "resolution_um"]

    # a summary written before a column existed (results of an earlier version): one line, and how to rebuild
    pd.read_csv(out["summary"]).drop(columns=["n_mis_sized"]).to_csv(tmp_path / "old_summary.csv", index=False)
    with pytest.raises(ResrecoverError, match=r"missing column\(s\) n_mis_sized; .* --forcerun segment_ground_truth"):
        collect_pore_tables([tmp_path / "old_summary.csv"], [tmp_path / "gt_summary.csv"], [out["pores"]],
                            [tmp_path / "gt_pores.csv"], out["gaussian_fit"], out["fsc"], *tables.values(), bin_um=5.0)


def test_compiled_marching_cubes_is_scikit_images_classic_one():
    """Same triangles as ``marching_cubes(method='lorensen')``: equal area and volume to the rounding
    of scikit-image's float32 vertices."""
    pytest.importorskip("numba")
    from skimage.measure import marching_cubes

    from resrecover.evaluate import pore_surface

    kernels, tables = pore_surface.compiled()
    rng = np.random.default_rng(3)
    field = ndi.gaussian_filter(rng.random((18, 21, 24)), 1.5).astype(np.float32)
    field[[0, -1]] = field[:, [0, -1]] = field[:, :, [0, -1]] = 0.0  # a closed surface
    level = float(np.median(field[1:-1, 1:-1, 1:-1]))
    verts, faces, _, _ = marching_cubes(field, level, method="lorensen")
    area, volume = kernels.mesh_area_volume(field, level, *tables)
    expected = pore_surface.mesh_area_volume(verts.astype(np.float64), faces)
    assert area == pytest.approx(expected[0], rel=1e-6)
    assert volume == pytest.approx(expected[1], rel=1e-6)
