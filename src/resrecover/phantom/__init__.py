"""Foam phantoms (docs/phantom.md): seeded greedy void placement and supersampled voxelization."""

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
    "SPHERES_COLUMNS",
    "PhantomError",
    "analytic_porosity",
    "foam_zrange",
    "generate_foam",
    "make_phantom",
    "place_voids",
    "read_spheres",
    "voxel_centres_um",
    "voxelize_foam",
    "write_phantom",
]
