"""Phantoms (docs/phantom.md): foams by seeded greedy void placement and supersampled voxelization, and
the transfer structure, ellipsoidal voids in the foam's placement (:mod:`.ellipsoids`)."""

from .ellipsoids import (
    ELLIPSOIDS_COLUMNS,
    generate_ellipsoids,
    make_ellipsoid_phantom,
    read_ellipsoids,
    voxelize_ellipsoids,
)
from .foam import (
    SPHERES_COLUMNS,
    PhantomError,
    analytic_porosity,
    foam_zrange,
    generate_foam,
    make_phantom,
    place_voids,
    read_spheres,
    voxel_centres_um,
    voxelize_foam,
    write_phantom,
)

__all__ = [
    "ELLIPSOIDS_COLUMNS",
    "SPHERES_COLUMNS",
    "PhantomError",
    "analytic_porosity",
    "foam_zrange",
    "generate_ellipsoids",
    "generate_foam",
    "make_ellipsoid_phantom",
    "make_phantom",
    "place_voids",
    "read_ellipsoids",
    "read_spheres",
    "voxel_centres_um",
    "voxelize_ellipsoids",
    "voxelize_foam",
    "write_phantom",
]
