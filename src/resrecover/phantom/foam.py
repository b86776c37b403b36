"""Foam phantoms (docs/phantom.md): greedy void placement in a cylinder and supersampled voxelization.

Our own implementation of the algorithm of Pelt, Hendriksen & Batenburg, "Foam-like phantoms for
comparing tomography algorithms", J. Synchrotron Rad. 29:254 (2022), from the facts listed in
docs/phantom.md (no code of their ``foam_ct_phantom`` package is used).

Two coordinate systems are used:

* **cylinder units** (:func:`place_voids`): lengths in units of the foam cylinder's radius, the
  cylinder is ``x² + y² < 1`` around the z axis;
* **µm** (:func:`voxelize_foam`, :func:`generate_foam`): lengths are ``unit × cylinder_radius_um``,
  relative to the centre of the voxel grid.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from .carving import (  # noqa: F401  (PhantomError, voxel_centres_um, _subsample_offsets: public here too)
    _BLOCK_ELEMENTS,
    SPHERE,
    PhantomError,
    _cylinder_counts,
    _subsample_offsets,
    carve_voids,
    voxel_centres_um,
)

log = logging.getLogger(__name__)

#: Column names of a sphere table in µm, as stored with the phantom (dataset ``spheres``).
SPHERES_COLUMNS = "x_um,y_um,z_um,radius_um"

# Nearest sphere centres looked up per point when computing free radii of redrawn candidates.
_KD_NEIGHBOURS = 8


# --------------------------------------------------------------------------------------------
# Placement (cylinder units)
# --------------------------------------------------------------------------------------------


def _uniform_in_cylinder(rng: np.random.Generator, n: int, zrange: float) -> np.ndarray:
    """(n, 3) points uniform in the cylinder ``x² + y² < 1``, ``|z| ≤ zrange``.

    x and y by rejection from the square [-1, 1]², z uniform. The number of random values drawn
    depends only on ``n`` and the stream, so the result is reproducible.
    """
    xy_parts = []
    got = 0
    while got < n:
        need = n - got
        trial = rng.uniform(-1.0, 1.0, size=(int(need * 1.3) + 16, 2))  # π/4 ≈ 0.785 accepted
        keep = trial[np.einsum("ij,ij->i", trial, trial) < 1.0][:need]
        xy_parts.append(keep)
        got += len(keep)
    xy = np.concatenate(xy_parts) if len(xy_parts) > 1 else xy_parts[0]
    z = rng.uniform(-zrange, zrange, size=n)
    return np.column_stack([xy, z])


def _surface_distances(points: np.ndarray, spheres: np.ndarray) -> np.ndarray:
    """(m, k) distances from ``points`` (m, 3) to the surfaces of ``spheres`` (m, k, 4) or (k, 4)."""
    if spheres.ndim == 2:
        spheres = spheres[None, :, :]
    dx = points[:, 0, None] - spheres[..., 0]
    dy = points[:, 1, None] - spheres[..., 1]
    dz = points[:, 2, None] - spheres[..., 2]
    return np.sqrt(dx * dx + dy * dy + dz * dz) - spheres[..., 3]


def _free_radius_brute(points: np.ndarray, spheres: np.ndarray, free: np.ndarray) -> None:
    """Lower ``free`` (m,) in place to the distance from each point to the nearest sphere surface."""
    rows = max(1, _BLOCK_ELEMENTS // max(1, len(spheres)))
    for start in range(0, len(points), rows):
        block = slice(start, start + rows)
        np.minimum(free[block], _surface_distances(points[block], spheres).min(axis=1), out=free[block])


def _free_radius(points: np.ndarray, spheres: np.ndarray) -> np.ndarray:
    """Free radius of each point: min(distance to the wall, distance to the nearest sphere surface).

    ``points`` (m, 3), ``spheres`` (k, 4) in cylinder units; negative inside a sphere. Exactly the
    minimum over all spheres: a k-d tree of the centres supplies the nearest few, whose smallest
    surface distance ``u`` bounds the answer; spheres farther than ``u + max radius`` cannot beat it,
    and points whose near set is not complete by that test are done by brute force.
    """
    free = 1.0 - np.sqrt(points[:, 0] * points[:, 0] + points[:, 1] * points[:, 1])
    if len(spheres) == 0 or len(points) == 0:
        return free
    if len(spheres) <= _KD_NEIGHBOURS:
        _free_radius_brute(points, spheres, free)
        return free
    from scipy.spatial import cKDTree

    centre_dist, nearest = cKDTree(spheres[:, :3]).query(points, k=_KD_NEIGHBOURS)
    np.minimum(free, _surface_distances(points, spheres[nearest]).min(axis=1), out=free)
    # Any sphere outside the queried set has centre distance >= centre_dist[:, -1]; it cannot be
    # nearer than `free` when that exceeds free + max radius (with a margin for rounding).
    bound = (free + spheres[:, 3].max()) * (1.0 + 1e-9) + 1e-12
    unsure = np.flatnonzero(centre_dist[:, -1] <= bound)
    if unsure.size:
        part = free[unsure]
        _free_radius_brute(points[unsure], spheres, part)
        free[unsure] = part
    return free


def _draw_free_candidates(
    rng: np.random.Generator, n: int, zrange: float, spheres: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` fresh candidates uniform in the cylinder *outside* every sphere, with their free radii.

    Returns ``(points (n, 3), free_radius (n,))``. Points are drawn in batches sized by the current
    void fraction and rejected when inside a sphere (free radius < 0).
    """
    void_volume = 4.0 / 3.0 * np.pi * float(np.sum(spheres[:, 3] ** 3))
    free_fraction = max(0.05, 1.0 - void_volume / (np.pi * 2.0 * zrange))
    points_parts, free_parts = [], []
    got = 0
    while got < n:
        need = n - got
        trial = _uniform_in_cylinder(rng, int(need / free_fraction * 1.05) + 4, zrange)
        free = _free_radius(trial, spheres)
        outside = free >= 0.0
        points_parts.append(trial[outside][:need])
        free_parts.append(free[outside][:need])
        got += len(points_parts[-1])
    return np.concatenate(points_parts), np.concatenate(free_parts)


class _CandidateCells:
    """Candidate slots bucketed in cubic cells, to find those near a point without a full pass.

    Slots are sorted by cell key (z-major, then y, then x) so that a box of cells is a few
    contiguous runs. Slots whose candidate was redrawn ("moved") are kept aside and always
    returned, until enough have piled up to merge them back into the sorted order.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, zrange: float, cell: float):
        self.x, self.y, self.z = x, y, z
        self.cell = cell
        self.origin = (-1.0, -1.0, -zrange)
        self.counts = (
            max(1, int(np.ceil(2.0 / cell))),
            max(1, int(np.ceil(2.0 / cell))),
            max(1, int(np.ceil(2.0 * zrange / cell))),
        )
        keys = self._keys(np.arange(len(x)))
        self.order = np.argsort(keys, kind="stable")
        self.sorted_keys = keys[self.order]
        self._update_bounds()
        self.is_moved = np.zeros(len(x), dtype=bool)
        self.moved = np.empty(0, dtype=np.intp)
        self.max_moved = max(1024, len(x) // 64)

    def _cell(self, coord, axis: int):
        c = np.floor((coord - self.origin[axis]) / self.cell).astype(np.intp)
        return np.clip(c, 0, self.counts[axis] - 1)

    def _keys(self, slots: np.ndarray) -> np.ndarray:
        nx, ny, _ = self.counts
        ix, iy, iz = (self._cell(c[slots], a) for a, c in enumerate((self.x, self.y, self.z)))
        return (iz * ny + iy) * nx + ix

    def _update_bounds(self) -> None:
        n_cells = self.counts[0] * self.counts[1] * self.counts[2]
        self.bounds = np.searchsorted(self.sorted_keys, np.arange(n_cells + 1))

    def near(self, centre: tuple[float, float, float], reach: float) -> np.ndarray:
        """Slots of all candidates within ``reach`` of ``centre`` along every axis (and some more)."""
        nx, ny, _ = self.counts
        lo = [int(self._cell(c - reach, a)) for a, c in enumerate(centre)]
        hi = [int(self._cell(c + reach, a)) for a, c in enumerate(centre)]
        iz, iy = np.meshgrid(np.arange(lo[2], hi[2] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
        row = (iz.ravel() * ny + iy.ravel()) * nx
        starts = self.bounds[row + lo[0]]
        lengths = self.bounds[row + hi[0] + 1] - starts
        ends = np.cumsum(lengths)
        positions = np.arange(ends[-1]) + np.repeat(starts - (ends - lengths), lengths)
        slots = self.order[positions]
        if self.moved.size:
            slots = np.concatenate([slots[~self.is_moved[slots]], self.moved])
        return slots

    def mark_moved(self, slots: np.ndarray) -> None:
        """Record that the candidates in ``slots`` have new positions."""
        newly = slots[~self.is_moved[slots]]
        self.is_moved[newly] = True
        self.moved = np.concatenate([self.moved, newly])
        if self.moved.size > self.max_moved:
            self._merge_moved()

    def _merge_moved(self) -> None:
        keep = ~self.is_moved[self.order]
        order, keys = self.order[keep], self.sorted_keys[keep]
        moved_keys = self._keys(self.moved)
        by_key = np.argsort(moved_keys, kind="stable")
        at = np.searchsorted(keys, moved_keys[by_key], side="right")
        self.order = np.insert(order, at, self.moved[by_key])
        self.sorted_keys = np.insert(keys, at, moved_keys[by_key])
        self._update_bounds()
        self.is_moved[:] = False
        self.moved = np.empty(0, dtype=np.intp)


def place_voids(n_voids: int, n_candidates: int, max_radius: float, zrange: float, seed: int) -> np.ndarray:
    """Place non-overlapping spherical voids in a cylinder, greedily and biggest first.

    The placement rule of Pelt et al. (2022): ``n_candidates`` points are drawn uniformly in the
    cylinder of radius 1 (z in [-zrange, zrange]); each keeps its *free radius*, the distance to the
    wall or to the nearest sphere surface, whichever is smaller. Each step places one sphere:

    * if any candidate's free radius exceeds ``max_radius``, one of those candidates is chosen
      uniformly at random and gets radius ``max_radius``;
    * otherwise the candidate with the largest free radius (ties broken at random) gets exactly its
      free radius, so the new sphere touches its nearest neighbour or the wall.

    Then every candidate's free radius is lowered where the new sphere is nearer, and the
    candidates that fell inside it are redrawn at fresh random positions outside all spheres.

    Parameters
    ----------
    n_voids : number of spheres to place.
    n_candidates : number of candidate centres kept at all times.
    max_radius : largest void radius, in cylinder radii.
    zrange : half-height of the sampled part of the cylinder, in cylinder radii.
    seed : seed of ``np.random.default_rng``.

    Returns
    -------
    (n_voids, 4) float64 array of (x, y, z, radius) in cylinder radii, in placement order. The
    result is bit-reproducible for a given seed, and the spheres of a run with fewer voids are an
    exact prefix of those of a longer run (same seed, candidates and sizes).

    Notes
    -----
    Each step only visits the candidates within ``r + M`` of the new centre along every axis
    (``r`` its radius, ``M`` the largest free radius before the step), found through a grid of
    cells: no other candidate can be nearer to the new sphere than to its current nearest obstacle.
    This gives exactly the result of a pass over all candidates.
    """
    if n_voids < 1 or n_candidates < 1:
        raise PhantomError(f"place_voids: n_voids={n_voids}, n_candidates={n_candidates}; expected both >= 1")
    if not (0 < max_radius) or not (0 < zrange):
        raise PhantomError(f"place_voids: max_radius={max_radius}, zrange={zrange}; expected both > 0")
    rng = np.random.default_rng(seed)
    points = _uniform_in_cylinder(rng, n_candidates, zrange)
    x, y, z = (np.ascontiguousarray(points[:, a]) for a in range(3))
    free = 1.0 - np.sqrt(x * x + y * y)
    cells = _CandidateCells(x, y, z, zrange, cell=min(max_radius, 0.5))
    spheres = np.empty((n_voids, 4))

    for k in range(n_voids):
        largest = free.max()
        if largest > max_radius:
            above = np.flatnonzero(free > max_radius)
            chosen = above[rng.integers(above.size)]
            radius = max_radius
        elif largest > 0.0:
            ties = np.flatnonzero(free == largest)
            chosen = ties[0] if ties.size == 1 else ties[rng.integers(ties.size)]
            radius = largest
        else:
            raise PhantomError(
                f"place_voids: no free space left after {k} voids (n_candidates={n_candidates}); "
                "expected fewer voids or more candidates"
            )
        centre = (x[chosen], y[chosen], z[chosen])
        spheres[k] = (*centre, radius)

        # Candidates farther than radius + largest along any axis keep their free radius (see
        # Notes); the tiny widening keeps that true under float rounding.
        reach = (radius + largest) * (1.0 + 1e-9) + 1e-12
        near = cells.near(centre, reach)
        dx = x[near] - centre[0]
        dy = y[near] - centre[1]
        dz = z[near] - centre[2]
        surface = np.sqrt(dx * dx + dy * dy + dz * dz) - radius
        free[near] = np.minimum(free[near], surface)
        swallowed = np.sort(near[surface < 0.0])

        if swallowed.size:
            new_points, new_free = _draw_free_candidates(rng, swallowed.size, zrange, spheres[: k + 1])
            x[swallowed], y[swallowed], z[swallowed] = new_points[:, 0], new_points[:, 1], new_points[:, 2]
            free[swallowed] = new_free
            cells.mark_moved(swallowed)
    return spheres


# --------------------------------------------------------------------------------------------
# Voxelization (µm)
# --------------------------------------------------------------------------------------------


def voxelize_foam(
    spheres_um: np.ndarray,
    shape: tuple[int, int, int],
    voxel_size_um: float,
    cylinder_radius_um: float,
    supersampling: int = 2,
) -> np.ndarray:
    """Material-fraction volume of the foam: 1 in the cylinder's material, 0 in voids and outside.

    Parameters
    ----------
    spheres_um : (n, 4) voids as (x, y, z, radius) in µm relative to the grid centre; they must not
        overlap (as :func:`place_voids` guarantees).
    shape : (nz, ny, nx) grid; voxel centres at ``(i - (n-1)/2) · voxel_size_um`` (x = last axis).
    voxel_size_um : voxel edge (µm).
    cylinder_radius_um : radius (µm) of the foam cylinder about the z axis.
    supersampling : s; each voxel is the mean of s³ point samples at the centres of its s×s×s
        sub-cells (partial-volume values on void and cylinder edges). 1 gives a binary volume.

    Returns
    -------
    (nz, ny, nx) float32 array in [0, 1].

    Notes
    -----
    Material sub-samples are counted per voxel (integers, so the result is exact and
    reproducible): the cylinder's count is computed once per (y, x) column; then, inside each
    void's bounding box, voxels whose sub-samples are all inside the void are set to 0 and only the
    voxels straddling the void surface are sub-sampled.
    """
    return carve_voids(spheres_um, 4, SPHERE, shape, voxel_size_um, cylinder_radius_um, supersampling, "voxelize_foam")


# --------------------------------------------------------------------------------------------
# From a config to a stored phantom
# --------------------------------------------------------------------------------------------


def foam_zrange(config: dict) -> float:
    """Half-height of the volume's z extent in cylinder radii (void centres are drawn within it)."""
    nz = config["volume_shape"][0]
    return nz * config["voxel_size_um"] / 2.0 / config["phantom"]["cylinder_radius_um"]


def analytic_porosity(spheres_um: np.ndarray, cylinder_radius_um: float, half_height_um: float) -> float:
    """Exact void fraction of the cylinder slab ``|z| ≤ half_height_um`` (spheres cut at its ends).

    The spheres must lie inside the cylinder and not overlap. The volume of a sphere (centre z0,
    radius r) between a and b is π [r²(b−a) − ((b−z0)³ − (a−z0)³)/3].
    """
    spheres_um = np.asarray(spheres_um, dtype=np.float64).reshape(-1, 4)
    z0, r = spheres_um[:, 2], spheres_um[:, 3]
    a = np.clip(z0 - r, -half_height_um, half_height_um) - z0
    b = np.clip(z0 + r, -half_height_um, half_height_um) - z0
    void = np.pi * np.sum(r * r * (b - a) - (b**3 - a**3) / 3.0)
    return float(void / (np.pi * cylinder_radius_um**2 * 2.0 * half_height_um))


def place_config_voids(config: dict, seed: int) -> np.ndarray:
    """The voids :func:`place_voids` puts with ``config['phantom']`` and ``seed``: (n, 4) in cylinder radii."""
    ph = config["phantom"]
    return place_voids(
        n_voids=int(ph["n_voids"]),
        n_candidates=int(ph["n_candidates"]),
        max_radius=float(ph["max_void_radius_um"]) / float(ph["cylinder_radius_um"]),
        zrange=foam_zrange(config),
        seed=seed,
    )


def voxel_porosity(volume: np.ndarray, config: dict) -> float:
    """Void fraction of the voxelized cylinder: 1 − the volume's material / the cylinder's voxels."""
    ph = config["phantom"]
    shape = tuple(config["volume_shape"])
    cyl = _cylinder_counts(shape[1:], config["voxel_size_um"], ph["cylinder_radius_um"], ph["supersampling"])
    cylinder_voxels = float(cyl.sum()) / ph["supersampling"] ** 2 * shape[0]
    return 1.0 - float(volume.sum(dtype=np.float64)) / cylinder_voxels


def generate_foam(config: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Build the foam phantom of a validated config.

    Reads ``config['phantom']`` (cylinder_radius_um, max_void_radius_um, n_voids, n_candidates,
    supersampling), ``config['voxel_size_um']`` and ``config['volume_shape']``. Void centres are
    drawn within the volume's z extent, so the voids at both ends are cut, as in the paper.

    Returns
    -------
    volume : (nz, ny, nx) float32 material fraction (see :func:`voxelize_foam`).
    spheres_um : (n_voids, 4) float64 (x_um, y_um, z_um, radius_um) relative to the volume centre,
        in placement order.
    """
    ph = config["phantom"]
    radius_um = float(ph["cylinder_radius_um"])
    shape = tuple(int(n) for n in config["volume_shape"])
    if radius_um > min(shape[1:]) * config["voxel_size_um"] / 2.0:
        log.warning(
            "phantom.cylinder_radius_um %.2f is wider than half the volume (%s voxels of %g µm): the "
            "cylinder is cut by the volume's sides",
            radius_um,
            shape,
            config["voxel_size_um"],
        )
    t0 = time.perf_counter()
    spheres = place_config_voids(config, seed)
    t1 = time.perf_counter()
    spheres_um = spheres * radius_um
    volume = voxelize_foam(spheres_um, shape, config["voxel_size_um"], radius_um, int(ph["supersampling"]))
    t2 = time.perf_counter()
    log.info(
        "foam seed %d: %d voids placed from %d candidates in %.1f s; %s voxels (supersampling %d) in %.1f s",
        seed,
        len(spheres_um),
        ph["n_candidates"],
        t1 - t0,
        "x".join(map(str, shape)),
        ph["supersampling"],
        t2 - t1,
    )
    return volume, spheres_um


def half_height_um(config: dict) -> float:
    """Half the volume's z extent (µm): the slab ``|z| ≤`` it is what the analytic porosity covers."""
    return config["volume_shape"][0] * config["voxel_size_um"] / 2.0


def write_void_phantom(path: str | Path, volume: np.ndarray, table_name: str, table_um: np.ndarray,
                       porosity: float, config: dict, seed: int, **attrs) -> None:
    """Store a phantom and its void table as HDF5 (docs/results.md#phantoms), for every void family.

    Datasets ``volume`` and ``table_name`` (the table in µm). Attributes: ``voxel_size_um``,
    ``seed``, ``phantom`` (the phantom parameters as JSON), ``attrs`` (the family's own, e.g. its
    columns), ``config_hash``, ``n_voids``, ``zrange`` (cylinder radii), ``analytic_porosity``
    (``porosity``: the exact void fraction of the cylinder within the volume's z extent) and the
    software versions.
    """
    from ..config import config_hash
    from ..io import write_volume

    write_volume(
        path,
        volume,
        config["voxel_size_um"],
        datasets={table_name: table_um},
        seed=int(seed),
        phantom=json.dumps(config["phantom"], sort_keys=True),
        **attrs,
        config_hash=config_hash(config),
        n_voids=int(len(table_um)),
        zrange=foam_zrange(config),
        analytic_porosity=float(porosity),
    )


def read_void_table(path: str | Path, table_name: str, n_columns: int, columns: str, writer: str) -> np.ndarray:
    """The (n, ``n_columns``) float64 void table ``table_name`` stored with a phantom by ``writer``."""
    from ..io import InputError
    from ..io.volume import open_hdf5_file

    path = Path(path)
    try:
        with open_hdf5_file(path, "phantom") as fh:
            if table_name not in fh:
                raise InputError(f"{path}: no dataset '{table_name}'; expected a phantom written by {writer}")
            table = np.asarray(fh[table_name][...], dtype=np.float64)
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {exc}") from exc
    if table.ndim != 2 or table.shape[1] != n_columns:
        raise InputError(
            f"{path}: dataset '{table_name}' has shape {table.shape}; expected (n, {n_columns}) ({columns})"
        )
    return table


def write_phantom(path: str | Path, volume: np.ndarray, spheres_um: np.ndarray, config: dict, seed: int) -> float:
    """Store a foam phantom (:func:`write_void_phantom`): dataset ``spheres`` (n, 4) in µm, attribute
    ``spheres_columns``. Returns the analytic porosity it stored."""
    spheres_um = np.asarray(spheres_um, dtype=np.float64).reshape(-1, 4)
    porosity = analytic_porosity(spheres_um, config["phantom"]["cylinder_radius_um"], half_height_um(config))
    write_void_phantom(path, volume, "spheres", spheres_um, porosity, config, seed, spheres_columns=SPHERES_COLUMNS)
    return porosity


def read_spheres(path: str | Path) -> np.ndarray:
    """The (n, 4) float64 sphere table (x_um, y_um, z_um, radius_um) stored with a phantom."""
    return read_void_table(path, "spheres", 4, SPHERES_COLUMNS, "write_phantom")


def make_phantom(path: str | Path, config: dict, seed: int) -> dict:
    """Generate the foam of ``config`` with ``seed`` and write it to ``path``; returns a summary.

    The summary holds ``n_voids``, ``analytic_porosity``, ``voxel_porosity`` (void fraction of the
    voxelized cylinder), ``diameter_quartiles_um`` (min, 25 %, 50 %, 75 %, max of the void
    diameters) and ``seconds``.
    """
    t0 = time.perf_counter()
    volume, spheres_um = generate_foam(config, seed)
    porosity = write_phantom(path, volume, spheres_um, config, seed)
    summary = {
        "n_voids": int(len(spheres_um)),
        "analytic_porosity": porosity,
        "voxel_porosity": voxel_porosity(volume, config),
        "diameter_quartiles_um": [float(q) for q in np.percentile(2.0 * spheres_um[:, 3], [0, 25, 50, 75, 100])],
        "seconds": time.perf_counter() - t0,
    }
    log.info(
        "%s: %d voids, diameters (min, quartiles, max) %s µm, porosity %.4f (analytic %.4f), %.1f s",
        path,
        summary["n_voids"],
        ", ".join(f"{q:.1f}" for q in summary["diameter_quartiles_um"]),
        summary["voxel_porosity"],
        summary["analytic_porosity"],
        summary["seconds"],
    )
    return summary
