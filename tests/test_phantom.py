"""Foam phantom (docs/phantom.md): placement rule, reproducibility, voxelization accuracy, file layout."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from resrecover.config import load_config
from resrecover.io import read_volume
from resrecover.phantom import (
    SPHERES_COLUMNS,
    analytic_porosity,
    generate_foam,
    make_phantom,
    place_voids,
    read_spheres,
    voxelize_foam,
)
from resrecover.phantom import foam

TEST_CONFIG = Path(__file__).parent / "config" / "test.yaml"


@pytest.fixture(scope="module")
def config():
    return load_config(TEST_CONFIG)


def _reference_place_voids(n_voids, n_candidates, max_radius, zrange, seed):
    """The greedy rule written plainly: every step visits every candidate (no cell index)."""
    rng = np.random.default_rng(seed)
    pts = foam._uniform_in_cylinder(rng, n_candidates, zrange)
    free = 1.0 - np.sqrt(pts[:, 0] ** 2 + pts[:, 1] ** 2)
    spheres = np.empty((n_voids, 4))
    for k in range(n_voids):
        largest = free.max()
        if largest > max_radius:
            above = np.flatnonzero(free > max_radius)
            i, r = above[rng.integers(above.size)], max_radius
        else:
            ties = np.flatnonzero(free == largest)
            i = ties[0] if ties.size == 1 else ties[rng.integers(ties.size)]
            r = largest
        spheres[k] = (*pts[i], r)
        d = pts - pts[i]
        surface = np.sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2]) - r
        free = np.minimum(free, surface)
        gone = np.flatnonzero(surface < 0)
        if gone.size:
            pts[gone], free[gone] = foam._draw_free_candidates(rng, gone.size, zrange, spheres[: k + 1])
    return spheres


# ---------------------------------------------------------------------------------------------
# Placement
# ---------------------------------------------------------------------------------------------


def test_cell_index_gives_exactly_the_full_pass_result():
    fast = place_voids(150, 6000, 0.2, 1.0, seed=11)
    slow = _reference_place_voids(150, 6000, 0.2, 1.0, seed=11)
    np.testing.assert_array_equal(fast, slow)


def test_free_radius_with_kd_tree_equals_brute_force():
    rng = np.random.default_rng(5)
    spheres = place_voids(120, 4000, 0.25, 1.0, seed=2)
    points = foam._uniform_in_cylinder(rng, 3000, 1.0)
    brute = 1.0 - np.sqrt(points[:, 0] ** 2 + points[:, 1] ** 2)
    brute = np.minimum(brute, foam._surface_distances(points, spheres).min(axis=1))
    np.testing.assert_array_equal(foam._free_radius(points, spheres), brute)


def test_free_radius_finds_a_big_sphere_beyond_the_nearest_centres():
    # A big void whose centre is farther than many small voids' centres is still the nearest surface.
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(200, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    small = np.column_stack([0.6 * directions, np.full(200, 0.005)])
    spheres = np.vstack([[0.0, 0.0, 0.0, 0.4], small])
    points = 0.45 * directions[:50]  # 0.05 from the big surface, 0.145 from the nearest small one
    np.testing.assert_allclose(foam._free_radius(points, spheres), 0.05, rtol=1e-12)


def test_spheres_do_not_overlap_and_stay_in_the_cylinder():
    zrange = 0.8
    s = place_voids(250, 8000, 0.2, zrange, seed=4)
    assert s.shape == (250, 4) and s.dtype == np.float64
    xyz, r = s[:, :3], s[:, 3]
    assert np.all(r > 0)
    assert np.all(np.hypot(xyz[:, 0], xyz[:, 1]) + r <= 1.0 + 1e-12)
    assert np.all(np.abs(xyz[:, 2]) <= zrange)
    d = np.sqrt(((xyz[:, None, :] - xyz[None, :, :]) ** 2).sum(-1))
    gap = d - (r[:, None] + r[None, :])
    np.fill_diagonal(gap, np.inf)
    assert gap.min() >= -1e-12
    # The greedy rule makes voids touch: most have a neighbour or the wall at (nearly) zero distance.
    wall = 1.0 - np.hypot(xyz[:, 0], xyz[:, 1]) - r
    contact = np.minimum(gap.min(axis=1), wall)
    assert np.mean(contact < 1e-9) > 0.5


def test_placement_is_largest_first():
    max_radius = 0.2
    r = place_voids(300, 10000, max_radius, 1.0, seed=7)[:, 3]
    n_max = int(np.sum(r == max_radius))
    assert n_max >= 10
    assert np.all(r[:n_max] == max_radius)  # the max-size voids come first, then smaller ones
    assert np.all(r[n_max:] < max_radius)
    assert np.mean(np.diff(r) > 0) < 0.1  # mostly non-increasing (redrawn candidates can jump)
    assert r[-1] < 0.6 * r[n_max]


def test_fewer_voids_is_an_exact_prefix():
    short = place_voids(40, 5000, 0.2, 1.0, seed=3)
    long = place_voids(120, 5000, 0.2, 1.0, seed=3)
    np.testing.assert_array_equal(short, long[:40])


def test_placement_depends_on_the_seed():
    a = place_voids(20, 3000, 0.2, 1.0, seed=1)
    b = place_voids(20, 3000, 0.2, 1.0, seed=2)
    assert not np.array_equal(a, b)


def test_bad_arguments_raise():
    with pytest.raises(foam.PhantomError, match="n_voids"):
        place_voids(0, 100, 0.2, 1.0, seed=0)
    with pytest.raises(foam.PhantomError, match="max_radius"):
        place_voids(5, 100, 0.0, 1.0, seed=0)


# ---------------------------------------------------------------------------------------------
# Voxelization
# ---------------------------------------------------------------------------------------------


def test_voxel_grid_axes_and_centres():
    # One void off-centre along x only: its void centroid must sit 2.5 voxels right of the centre
    # along the last axis, and at the centre along y and z.
    shape, vs = (20, 22, 24), 2.0
    spheres = np.array([[5.0, 0.0, 0.0, 6.0]])
    vol = voxelize_foam(spheres, shape, vs, cylinder_radius_um=19.0, supersampling=3)
    cyl = voxelize_foam(np.empty((0, 4)), shape, vs, cylinder_radius_um=19.0, supersampling=3)
    void = cyl - vol
    idx = np.indices(shape)
    centroid = [(void * i).sum() / void.sum() for i in idx]
    expected = [(shape[0] - 1) / 2, (shape[1] - 1) / 2, (shape[2] - 1) / 2 + 2.5]
    np.testing.assert_allclose(centroid, expected, atol=0.02)


def test_single_sphere_volume_and_partial_voxels():
    r_um = 7.0
    spheres = np.array([[0.3, -0.2, 0.1, r_um]])
    vol = voxelize_foam(spheres, (24, 24, 24), 1.0, cylinder_radius_um=11.5, supersampling=4)
    cyl = voxelize_foam(np.empty((0, 4)), (24, 24, 24), 1.0, cylinder_radius_um=11.5, supersampling=4)
    void_volume = float((cyl - vol).sum(dtype=np.float64))
    assert void_volume == pytest.approx(4 / 3 * np.pi * r_um**3, rel=0.01)
    assert vol.dtype == np.float32 and vol.min() >= 0 and vol.max() <= 1
    partial = (vol > 0) & (vol < 1)
    assert partial.sum() > 100  # supersampling leaves partial-volume values on the void's surface
    assert np.all(np.isin(vol, np.arange(65) / np.float32(64)))  # multiples of 1/s³
    binary = voxelize_foam(spheres, (24, 24, 24), 1.0, cylinder_radius_um=11.5, supersampling=1)
    assert set(np.unique(binary)) <= {0.0, 1.0}


def test_voxelized_void_volume_matches_analytic_spheres():
    # Voids of 2-6 voxels in radius in a 48³ grid, cut at the top and bottom: the voxelized void
    # volume matches the exact volume of the sphere parts inside the grid.
    radius_um, half_height_um = 20.0, 24.0
    spheres_um = place_voids(120, 5000, 6.0 / radius_um, half_height_um / radius_um, seed=0) * radius_um
    assert np.any(np.abs(spheres_um[:, 2]) + spheres_um[:, 3] > half_height_um)  # some voids are cut
    vol = voxelize_foam(spheres_um, (48, 48, 48), 1.0, radius_um, supersampling=2)
    cyl = voxelize_foam(np.empty((0, 4)), (48, 48, 48), 1.0, radius_um, supersampling=2)
    void_voxels = float((cyl - vol).sum(dtype=np.float64))
    analytic = analytic_porosity(spheres_um, radius_um, half_height_um) * np.pi * radius_um**2 * 2 * half_height_um
    assert void_voxels == pytest.approx(analytic, rel=0.01)
    porosity = void_voxels / float(cyl.sum(dtype=np.float64))
    assert porosity == pytest.approx(analytic_porosity(spheres_um, radius_um, half_height_um), rel=0.01)
    assert np.all(vol[:, 0, :] == 0) and np.all(vol[:, :, 0] == 0)  # outside the cylinder


def test_analytic_porosity_cuts_spheres_at_the_slab_ends():
    r = 2.0
    whole = analytic_porosity(np.array([[0.0, 0.0, 0.0, r]]), 5.0, 3.0)
    half = analytic_porosity(np.array([[0.0, 0.0, 3.0, r]]), 5.0, 3.0)
    outside = analytic_porosity(np.array([[0.0, 0.0, 5.5, r]]), 5.0, 3.0)
    slab = np.pi * 25.0 * 6.0
    assert whole == pytest.approx(4 / 3 * np.pi * r**3 / slab)
    assert half == pytest.approx(whole / 2)
    assert outside == 0.0


# ---------------------------------------------------------------------------------------------
# From the config to the file
# ---------------------------------------------------------------------------------------------


def test_generate_foam_follows_the_config(config):
    volume, spheres_um = generate_foam(config, seed=1)
    ph = config["phantom"]
    assert volume.shape == tuple(config["volume_shape"]) and volume.dtype == np.float32
    assert spheres_um.shape == (ph["n_voids"], 4)
    assert spheres_um[:, 3].max() == pytest.approx(ph["max_void_radius_um"])
    half_height = config["volume_shape"][0] * config["voxel_size_um"] / 2
    assert np.abs(spheres_um[:, 2]).max() <= half_height
    assert np.all(np.hypot(spheres_um[:, 0], spheres_um[:, 1]) + spheres_um[:, 3] <= ph["cylinder_radius_um"] + 1e-9)
    assert 0.1 < 1 - volume.mean() / (np.pi * ph["cylinder_radius_um"] ** 2 / (48 * 4.0) ** 2) < 0.9


def test_same_seed_same_file_other_seed_other_file(config, tmp_path):
    paths = [tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "c.h5"]
    summaries = [make_phantom(p, config, seed) for p, seed in zip(paths, (1, 1, 2))]
    with h5py.File(paths[0]) as a, h5py.File(paths[1]) as b, h5py.File(paths[2]) as c:
        for name in ("volume", "spheres"):
            assert a[name][...].tobytes() == b[name][...].tobytes()
            assert a[name][...].tobytes() != c[name][...].tobytes()
    assert summaries[0]["n_voids"] == config["phantom"]["n_voids"]
    assert summaries[0]["voxel_porosity"] == pytest.approx(summaries[0]["analytic_porosity"], rel=0.02)


def test_phantom_file_layout(config, tmp_path):
    path = tmp_path / "train.h5"
    make_phantom(path, config, seed=3)
    volume, attrs = read_volume(path)
    spheres = read_spheres(path)
    _, expected = generate_foam(config, seed=3)
    np.testing.assert_array_equal(spheres, expected)
    assert volume.shape == tuple(config["volume_shape"])
    assert attrs["voxel_size_um"] == config["voxel_size_um"]
    assert attrs["seed"] == 3 and attrs["n_voids"] == len(spheres)
    assert attrs["spheres_columns"] == SPHERES_COLUMNS
    assert json.loads(attrs["phantom"]) == config["phantom"]
    assert len(attrs["config_hash"]) == 16
    assert 0 < attrs["analytic_porosity"] < 1


def test_read_spheres_names_the_file(tmp_path):
    from resrecover.io import InputError, write_volume

    path = tmp_path / "plain.h5"
    write_volume(path, np.zeros((8, 8, 8)), 1.0)
    with pytest.raises(InputError, match="plain.h5.*spheres"):
        read_spheres(path)
    with pytest.raises(InputError, match="missing.h5"):
        read_spheres(tmp_path / "missing.h5")
