"""Voxelizing non-overlapping voids in the phantoms' cylinder: :func:`carve_voids`, shared by the foam's
spheres (:func:`resrecover.phantom.foam.voxelize_foam`) and the transfer structure's ellipsoids
(:func:`resrecover.phantom.ellipsoids.voxelize_ellipsoids`); each kind of void is a :class:`VoidShape`.

Lengths in µm relative to the centre of the voxel grid (x = last axis).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from .. import ResrecoverError

# Largest block of elements held at once (candidate × sphere distances while placing; sub-samples × voxels
# while voxelizing).
_BLOCK_ELEMENTS = 1 << 21


class PhantomError(ResrecoverError):
    """A phantom parameter makes the phantom impossible to build (e.g. no free space left)."""


def voxel_centres_um(n: int, voxel_size_um: float) -> np.ndarray:
    """Centres (µm) of ``n`` voxels along one axis of a grid centred on the origin: ``(i - (n-1)/2)·Δ``."""
    return (np.arange(n) - (n - 1) / 2.0) * voxel_size_um


def _subsample_offsets(supersampling: int, voxel_size_um: float) -> np.ndarray:
    """Offsets (µm) of the centres of the ``s`` sub-cells of a voxel along one axis."""
    s = supersampling
    return ((np.arange(s) + 0.5) / s - 0.5) * voxel_size_um


def _cylinder_counts(shape_yx, voxel_size_um, cylinder_radius_um, supersampling) -> np.ndarray:
    """(ny, nx) number of the s² in-plane sub-samples of each voxel that lie inside the cylinder."""
    s = supersampling
    off = _subsample_offsets(s, voxel_size_um)
    ys = (voxel_centres_um(shape_yx[0], voxel_size_um)[:, None] + off[None, :]).ravel()
    xs = (voxel_centres_um(shape_yx[1], voxel_size_um)[:, None] + off[None, :]).ravel()
    inside = (ys[:, None] * ys[:, None] + xs[None, :] * xs[None, :]) <= cylinder_radius_um**2
    return inside.reshape(shape_yx[0], s, shape_yx[1], s).sum(axis=(1, 3))


def _axis_range(centre: float, reach: float, n: int, voxel_size_um: float) -> tuple[int, int]:
    """Index range [lo, hi) of the voxels whose centre is within ``reach`` µm of ``centre`` (clipped)."""
    lo = int(np.ceil((centre - reach) / voxel_size_um + (n - 1) / 2.0))
    hi = int(np.floor((centre + reach) / voxel_size_um + (n - 1) / 2.0)) + 1
    return max(lo, 0), min(hi, n)


class VoidShape(NamedTuple):
    """How :func:`carve_voids` sees one kind of void, each function given one row of the void table
    (its centre x, y, z in µm first).

    - ``half_extents(row)``: the void's half-extent along z, y and x (µm): its bounding box.
    - ``split(row, dz, dy, dx, half_diag, eps)``: two boolean arrays over the box's voxels, whose
      centres lie at offsets ``dz[:, None, None]``, ``dy[None, :, None]``, ``dx[None, None, :]`` from the
      void's centre: those wholly in the void (every sub-sample within ``half_diag`` of the centre;
      None when there are none) and those to sub-sample. ``eps`` keeps voxels on the fence in the
      sub-sampled set.
    - ``contains(row, pz, py, px)``: which sub-sample points (arrays of one shape) are in the void.
    """

    half_extents: Callable
    split: Callable
    contains: Callable


def _sphere_split(row, dz, dy, dx, half_diag, eps):
    r = row[3]
    d2 = (dz * dz)[:, None, None] + (dy * dy)[None, :, None] + (dx * dx)[None, None, :]
    inner = r - half_diag - eps
    edge = d2 < (r + half_diag + eps) ** 2
    if inner <= 0:
        return None, edge
    full = d2 < inner * inner
    edge &= ~full
    return full, edge


#: a foam's voids: rows (x, y, z, radius) in µm
SPHERE = VoidShape(
    half_extents=lambda row: (row[3], row[3], row[3]),
    split=_sphere_split,
    contains=lambda row, pz, py, px: (px - row[0]) ** 2 + (py - row[1]) ** 2 + (pz - row[2]) ** 2 < row[3] * row[3],
)


def carve_voids(
    table_um: np.ndarray,
    columns: int,
    void_shape: VoidShape,
    shape: tuple[int, int, int],
    voxel_size_um: float,
    cylinder_radius_um: float,
    supersampling: int,
    caller: str,
) -> np.ndarray:
    """Material fraction of the cylinder less the voids of ``table_um`` ((n, ``columns``) rows of one
    ``void_shape``; they must not overlap): the voxelization of :func:`voxelize_foam` and of
    :func:`resrecover.phantom.ellipsoids.voxelize_ellipsoids` (whose parameters these are;
    ``caller`` names the function in errors).

    Material sub-samples are counted per voxel, as integers: the cylinder's count once per (y, x)
    column; then, inside each void's bounding box, the voxels wholly in the void are set to 0 and
    only those straddling its surface are sub-sampled.
    """
    nz, ny, nx = (int(n) for n in shape)
    s = int(supersampling)
    if s < 1:
        raise PhantomError(f"{caller}: supersampling={supersampling}; expected an integer >= 1")
    table_um = np.asarray(table_um, dtype=np.float64).reshape(-1, columns)
    vs = float(voxel_size_um)
    r_cyl2 = float(cylinder_radius_um) ** 2
    centres = [voxel_centres_um(n, vs) for n in (nz, ny, nx)]
    off = _subsample_offsets(s, vs)
    oz, oy, ox = (a.ravel() for a in np.meshgrid(off, off, off, indexing="ij"))

    counts = np.empty((nz, ny, nx), dtype=np.int16)
    counts[...] = (_cylinder_counts((ny, nx), vs, cylinder_radius_um, s) * s).astype(np.int16)

    # Sub-samples lie within `spread` of their voxel centre along each axis and within `half_diag`
    # in distance; `eps` keeps voxels on the fence in the exactly sub-sampled set.
    spread = vs / 2.0 * (1.0 - 1.0 / s)
    half_diag = np.sqrt(3.0) * spread
    eps = 1e-6 * vs
    rows = max(1, _BLOCK_ELEMENTS // (s**3))
    for row in table_um:
        cx, cy, cz = row[:3]
        ez, ey, ex = void_shape.half_extents(row)
        z0, z1 = _axis_range(cz, ez + spread + eps, nz, vs)
        y0, y1 = _axis_range(cy, ey + spread + eps, ny, vs)
        x0, x1 = _axis_range(cx, ex + spread + eps, nx, vs)
        if z0 >= z1 or y0 >= y1 or x0 >= x1:
            continue
        box = counts[z0:z1, y0:y1, x0:x1]
        full, edge = void_shape.split(
            row, centres[0][z0:z1] - cz, centres[1][y0:y1] - cy, centres[2][x0:x1] - cx, half_diag, eps
        )
        if full is not None:
            box[full] = 0
        iz, iy, ix = np.nonzero(edge)
        for start in range(0, iz.size, rows):
            bz, by, bx = iz[start : start + rows], iy[start : start + rows], ix[start : start + rows]
            pz = centres[0][z0 + bz][:, None] + oz[None, :]
            py = centres[1][y0 + by][:, None] + oy[None, :]
            px = centres[2][x0 + bx][:, None] + ox[None, :]
            in_void = void_shape.contains(row, pz, py, px)
            in_void &= (py * py + px * px) <= r_cyl2  # samples outside the cylinder were never material
            box[bz, by, bx] -= np.count_nonzero(in_void, axis=1).astype(np.int16)
    # Touching voids can both claim a sub-sample on their contact point under float rounding.
    np.maximum(counts, 0, out=counts)
    volume = counts.astype(np.float32)
    volume /= np.float32(s**3)
    return volume
