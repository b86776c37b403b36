"""Ellipsoidal-void phantoms (docs/phantom.md#the-transfer-structure): the structure the foam-trained
models and the foam-fitted spurious-pore classifier are tried on, never trained or fitted on.

The foam's voids are spheres of nearly one shape; a porous material a microscopist scans as often has
elongated, flattened pores (porous ceramics, rocks, extruded or compressed polymer foams). This
family keeps everything else of the foam and changes the pores' shape:

1. **Bounding spheres.** The foam's own greedy placement (:func:`.foam.place_voids`, unchanged) puts
   ``phantom.n_voids`` non-overlapping spheres in the same cylinder with the realization's seed.
2. **One ellipsoid per sphere.** Each sphere of radius R holds a triaxial ellipsoid with semi-axes
   ``(R, R/√q, R/q)``: its longest axis spans the sphere, its aspect ratio (longest / shortest
   semi-axis) is ``q``, drawn uniformly in ``transfer.aspect_ratio`` = [q_min, q_max], and its
   axes point in a uniformly random direction (a random rotation, uniform on SO(3)). An ellipsoid
   lies inside its sphere, so the voids never overlap, and none crosses the cylinder wall.
3. **Voxelization** as the foam's: the fraction of ``phantom.supersampling``³ sub-samples per voxel
   that lie in the cylinder and outside every void, counted as integers (exact and reproducible);
   only the voxels that straddle a void's surface are sub-sampled.

Compared with the foam built from the same spheres, pores are elongated and flattened (aspect ratios
q_min..q_max instead of 1), their volumes shrink by q^1.5 (porosity about a third of the foam's for
q in [1.5, 3]) and their walls thicken: neighbours no longer touch. The shapes come from a random
stream of their own (``default_rng([seed, SHAPE_STREAM])``), so a seed gives bit-identical voids and
volumes, and the foam's code and random streams are untouched.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from .carving import PhantomError, VoidShape, carve_voids
from .foam import half_height_um, place_config_voids, read_void_table, voxel_porosity, write_void_phantom

log = logging.getLogger(__name__)

#: Column names of an ellipsoid table in µm, as stored with the phantom (dataset ``ellipsoids``):
#: centre, the three semi-axes (longest first) and the unit vector of each semi-axis.
ELLIPSOIDS_COLUMNS = (
    "x_um,y_um,z_um,semi_a_um,semi_b_um,semi_c_um,a_x,a_y,a_z,b_x,b_y,b_z,c_x,c_y,c_z"
)
#: The second random stream's key: the shapes are drawn from ``default_rng([seed, SHAPE_STREAM])``.
SHAPE_STREAM = 0xE11


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3, 3) rotation matrices uniform on SO(3); row k of each is the unit vector of axis k.

    From unit quaternions: four standard normal values per rotation, normalized (uniform on the
    3-sphere, hence uniform rotations).
    """
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], axis=-1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], axis=-1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=-1),
        ],
        axis=1,
    )


def ellipsoids_in_spheres(
    spheres: np.ndarray, aspect_ratio: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """One randomly oriented ellipsoid inscribed in each sphere: the (n, 15) table of :data:`ELLIPSOIDS_COLUMNS`.

    Sphere (x, y, z, R) gets semi-axes ``(R, R/√q, R/q)`` with ``q`` uniform in ``aspect_ratio``
    (q_min ≤ q_max, q_min ≥ 1) and a uniform random orientation; lengths in the spheres' units.
    """
    spheres = np.asarray(spheres, dtype=np.float64).reshape(-1, 4)
    lo, hi = (float(v) for v in aspect_ratio)
    if not 1.0 <= lo <= hi:
        raise PhantomError(f"aspect_ratio: [{lo:g}, {hi:g}]; expected [min, max] with 1 <= min <= max")
    n = len(spheres)
    q = rng.uniform(lo, hi, size=n)
    axes = random_rotations(rng, n)
    r = spheres[:, 3]
    semi = np.column_stack([r, r / np.sqrt(q), r / q])
    return np.column_stack([spheres[:, :3], semi, axes.reshape(n, 9)])


def aspect_ratios(table: np.ndarray) -> np.ndarray:
    """Longest / shortest semi-axis of each ellipsoid of a table (:data:`ELLIPSOIDS_COLUMNS`)."""
    table = np.asarray(table, dtype=np.float64).reshape(-1, 15)
    return table[:, 3:6].max(axis=1) / table[:, 3:6].min(axis=1)


def _z_half_extent(table: np.ndarray) -> np.ndarray:
    """Half-extent of each ellipsoid along z: sqrt(Σ_k (s_k · u_k,z)²) (its support function on ±z)."""
    semi = table[:, 3:6]
    uz = table[:, 6:15].reshape(-1, 3, 3)[:, :, 2]
    return np.sqrt(np.sum((semi * uz) ** 2, axis=1))


def ellipsoid_porosity(table_um: np.ndarray, cylinder_radius_um: float, half_height_um: float) -> float:
    """Exact void fraction of the cylinder slab ``|z| ≤ half_height_um`` (ellipsoids cut at its ends).

    The affine map taking an ellipsoid to the unit ball takes a plane z = h to a plane at distance
    (h − z0) / e_z from the centre (e_z: the ellipsoid's half-extent along z), so the part between
    two planes is abc · π [(t₂ − t₁) − (t₂³ − t₁³)/3] with t clipped to [−1, 1].
    """
    table_um = np.asarray(table_um, dtype=np.float64).reshape(-1, 15)
    ez = _z_half_extent(table_um)
    z0 = table_um[:, 2]
    t1 = np.clip((-half_height_um - z0) / ez, -1.0, 1.0)
    t2 = np.clip((half_height_um - z0) / ez, -1.0, 1.0)
    abc = np.prod(table_um[:, 3:6], axis=1)
    void = np.pi * np.sum(abc * ((t2 - t1) - (t2**3 - t1**3) / 3.0))
    return float(void / (np.pi * cylinder_radius_um**2 * 2.0 * half_height_um))


# --------------------------------------------------------------------------------------------
# Voxelization (µm)
# --------------------------------------------------------------------------------------------


def voxelize_ellipsoids(
    table_um: np.ndarray,
    shape: tuple[int, int, int],
    voxel_size_um: float,
    cylinder_radius_um: float,
    supersampling: int = 2,
) -> np.ndarray:
    """Material-fraction volume: 1 in the cylinder's material, 0 in the ellipsoidal voids and outside.

    Parameters as :func:`.foam.voxelize_foam`, with ``table_um`` the (n, 15) ellipsoids
    (:data:`ELLIPSOIDS_COLUMNS`, µm relative to the grid centre; they must not overlap).

    Notes
    -----
    A point p is in an ellipsoid when ρ(p) = ‖(u_k · (p − c) / s_k)_k‖ < 1. A voxel's sub-samples lie
    within ``half_diag`` of its centre, and ρ changes by at most distance / s_min, so a voxel whose
    centre has ρ + half_diag / s_min < 1 is wholly void and one with ρ − half_diag / s_min ≥ 1 is
    untouched; only the others are sub-sampled.
    """
    return carve_voids(table_um, 15, ELLIPSOID, shape, voxel_size_um, cylinder_radius_um, supersampling,
                       "voxelize_ellipsoids")


def _semi_and_axes(row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Semi-axes (3,) and their unit vectors (3, 3; row k: semi-axis k as x, y, z) of a table row."""
    return row[3:6], row[6:15].reshape(3, 3)


def _ellipsoid_half_extents(row):
    semi, axes = _semi_and_axes(row)
    extent = np.sqrt(((semi[:, None] * axes) ** 2).sum(axis=0))  # half-extent along x, y, z
    return extent[2], extent[1], extent[0]


def _ellipsoid_split(row, dz, dy, dx, half_diag, eps):
    semi, axes = _semi_and_axes(row)
    # scaled coordinates t_k = u_k · d / s_k on the box, summed in squares: ρ²
    rho2 = np.zeros((dz.size, dy.size, dx.size))
    for k in range(3):
        u = axes[k] / semi[k]
        t = (u[2] * dz)[:, None, None] + (u[1] * dy)[None, :, None] + (u[0] * dx)[None, None, :]
        rho2 += t * t
    rho = np.sqrt(rho2)
    margin = (half_diag + eps) / semi.min()
    return rho + margin < 1.0, (rho - margin < 1.0) & (rho + margin >= 1.0)


def _ellipsoid_contains(row, pz, py, px):
    semi, axes = _semi_and_axes(row)
    scaled = axes / semi[:, None]
    cx, cy, cz = row[:3]
    inside = np.zeros(pz.shape)
    for k in range(3):
        t = scaled[k, 0] * (px - cx) + scaled[k, 1] * (py - cy) + scaled[k, 2] * (pz - cz)
        inside += t * t
    return inside < 1.0


#: ellipsoidal voids (rows of :data:`ELLIPSOIDS_COLUMNS`). A point p is in one when
#: ρ(p) = ‖(u_k · (p − c) / s_k)_k‖ < 1; ρ changes by at most distance / s_min, so a voxel whose
#: centre has ρ + half_diag / s_min < 1 is wholly void and one with ρ − half_diag / s_min ≥ 1 untouched
ELLIPSOID = VoidShape(_ellipsoid_half_extents, _ellipsoid_split, _ellipsoid_contains)


# --------------------------------------------------------------------------------------------
# From a config to a stored phantom
# --------------------------------------------------------------------------------------------


def generate_ellipsoids(config: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Build the ellipsoidal-void phantom of a validated config with ``seed``.

    Reads ``config['phantom']`` (the cylinder, the bounding spheres' placement, supersampling, as
    for the foam) and ``config['transfer']['aspect_ratio']``.

    Returns
    -------
    volume : (nz, ny, nx) float32 material fraction.
    table_um : (n_voids, 15) float64 ellipsoids (:data:`ELLIPSOIDS_COLUMNS`), in placement order.
    """
    ph = config["phantom"]
    radius_um = float(ph["cylinder_radius_um"])
    shape = tuple(int(n) for n in config["volume_shape"])
    t0 = time.perf_counter()
    spheres = place_config_voids(config, seed)
    rng = np.random.default_rng([int(seed), SHAPE_STREAM])
    table_um = ellipsoids_in_spheres(spheres * radius_um, config["transfer"]["aspect_ratio"], rng)
    t1 = time.perf_counter()
    volume = voxelize_ellipsoids(table_um, shape, config["voxel_size_um"], radius_um, int(ph["supersampling"]))
    log.info(
        "ellipsoids seed %d: %d voids (aspect ratio %s) placed in %.1f s; %s voxels in %.1f s",
        seed, len(table_um), config["transfer"]["aspect_ratio"], t1 - t0, "x".join(map(str, shape)),
        time.perf_counter() - t1,
    )
    return volume, table_um


def void_aspect_ratios(volume: np.ndarray, voxel_size_um: float, cylinder_radius_um: float,
                       min_voxels: int = 100) -> np.ndarray:
    """Measured aspect ratio of each void of a voxelized phantom: sqrt(λ_max / λ_min) of its voxels'
    second moments (for an ellipsoid, the ratio of its longest to its shortest semi-axis).

    Voids are the connected voxels below 0.5 inside the cylinder (less one voxel at its wall); those
    touching the top or bottom slice (cut) or smaller than ``min_voxels`` are left out.
    """
    from scipy import ndimage as ndi

    from ..masks import cylinder_mask

    inner = cylinder_mask(volume.shape, cylinder_radius_um - voxel_size_um, voxel_size_um)
    labels, n = ndi.label((np.asarray(volume) < 0.5) & inner)
    cut = np.union1d(np.unique(labels[0]), np.unique(labels[-1]))
    ratios = []
    for label, where in enumerate(ndi.find_objects(labels), start=1):
        if where is None or label in cut:
            continue
        coords = np.argwhere(labels[where] == label).astype(np.float64)
        if len(coords) < min_voxels:
            continue
        eig = np.linalg.eigvalsh(np.cov(coords.T))
        ratios.append(np.sqrt(eig[-1] / max(eig[0], 1e-12)))
    return np.asarray(ratios)


def write_ellipsoid_phantom(
    path: str | Path, volume: np.ndarray, table_um: np.ndarray, config: dict, seed: int
) -> float:
    """Store the phantom as HDF5 (docs/results.md#phantoms): dataset ``volume``, dataset ``ellipsoids``
    (n, 15) in µm (:data:`ELLIPSOIDS_COLUMNS`).

    Attributes as the foam's (``voxel_size_um``, ``seed``, ``phantom``, ``config_hash``, ``n_voids``,
    ``zrange``, ``analytic_porosity``, software versions), plus ``structure`` = ``ellipsoids``,
    ``transfer`` (the config's ``transfer:`` block as JSON) and ``ellipsoids_columns``
    (:func:`.foam.write_void_phantom`). Returns the analytic porosity it stored.
    """
    table_um = np.asarray(table_um, dtype=np.float64).reshape(-1, 15)
    porosity = ellipsoid_porosity(table_um, config["phantom"]["cylinder_radius_um"], half_height_um(config))
    write_void_phantom(
        path, volume, "ellipsoids", table_um, porosity, config, seed, structure="ellipsoids",
        transfer=json.dumps(config["transfer"], sort_keys=True), ellipsoids_columns=ELLIPSOIDS_COLUMNS,
    )
    return porosity


def read_ellipsoids(path: str | Path) -> np.ndarray:
    """The (n, 15) float64 ellipsoid table stored with an ellipsoidal-void phantom."""
    return read_void_table(path, "ellipsoids", 15, ELLIPSOIDS_COLUMNS, "write_ellipsoid_phantom")


def make_ellipsoid_phantom(path: str | Path, config: dict, seed: int) -> dict:
    """Generate the ellipsoidal-void phantom of ``config`` with ``seed`` and write it; returns a summary.

    The summary holds ``n_voids``, ``analytic_porosity``, ``voxel_porosity``,
    ``aspect_ratio_quartiles`` (min, 25 %, 50 %, 75 %, max of the drawn ratios),
    ``measured_aspect_ratio_median`` (:func:`void_aspect_ratios` of the voids of at least 100
    voxels) and ``seconds``.
    """
    t0 = time.perf_counter()
    volume, table_um = generate_ellipsoids(config, seed)
    porosity = write_ellipsoid_phantom(path, volume, table_um, config, seed)
    measured = void_aspect_ratios(volume, config["voxel_size_um"], config["phantom"]["cylinder_radius_um"])
    summary = {
        "n_voids": int(len(table_um)),
        "analytic_porosity": porosity,
        "voxel_porosity": voxel_porosity(volume, config),
        "aspect_ratio_quartiles": [float(q) for q in np.percentile(aspect_ratios(table_um), [0, 25, 50, 75, 100])],
        "measured_aspect_ratio_median": float(np.median(measured)) if measured.size else float("nan"),
        "seconds": time.perf_counter() - t0,
    }
    log.info(
        "%s: %d ellipsoidal voids, aspect ratios (min, quartiles, max) %s, measured median %.2f over %d voids, "
        "porosity %.4f (analytic %.4f), %.1f s",
        path, summary["n_voids"], ", ".join(f"{q:.2f}" for q in summary["aspect_ratio_quartiles"]),
        summary["measured_aspect_ratio_median"], measured.size, summary["voxel_porosity"],
        summary["analytic_porosity"], summary["seconds"],
    )
    return summary
