"""Where tiles start and how their predictions are blended: the plan of a tiled inference.

Pure functions of lengths, tile sizes and overlaps (no arrays of the volume): tile origins that
cover an axis with at least the asked overlap, and the blending weights (triangular or uniform
ramps over the overlap) whose sums normalize the accumulated predictions
(:mod:`resrecover.methods.tiling`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from resrecover import ResrecoverError


class TilingError(ResrecoverError):
    """Tiling parameters that cannot work, or a predictor that cannot fit even one small tile."""


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Origins of the tiles covering ``range(length)`` along one axis.

    Consecutive tiles share ``overlap`` voxels (stride ``tile - overlap``); the last tile is shifted
    back to end exactly at ``length`` (so it may share more). A ``length`` not above ``tile`` gives a
    single tile at 0 (the caller pads the volume to the tile).

    >>> tile_starts(10, 4, 1)
    [0, 3, 6]
    >>> tile_starts(3, 4, 1)
    [0]
    """
    length, tile, overlap = int(length), int(tile), int(overlap)
    if length < 1 or tile < 1:
        raise TilingError(f"tile_starts: length {length} and tile {tile} must be >= 1")
    if not 0 <= overlap < tile:
        raise TilingError(f"tile_starts: overlap {overlap} must be in [0, tile {tile})")
    if length <= tile:
        return [0]
    stride = tile - overlap
    return [*range(0, length - tile, stride), length - tile]


def blending_profile(tile: int, overlap: int, mode: str = "triangular") -> np.ndarray:
    """1D weights of one tile along one axis, float64, all > 0.

    ``triangular``: ``min(1, (i + 1) / (overlap + 1), (tile - i) / (overlap + 1))``, linear ramps
    over the ``overlap`` voxels at each end and 1 inside; ``uniform``: ones.
    """
    if mode == "uniform" or overlap == 0:
        return np.ones(tile)
    if mode != "triangular":
        raise TilingError(f"blending: {mode!r} is not allowed; expected 'triangular' or 'uniform'")
    i = np.arange(tile, dtype=np.float64)
    return np.minimum(1.0, np.minimum(i + 1.0, tile - i) / (overlap + 1.0))


def blending_weights(
    tile_shape: Sequence[int], overlap: int | Sequence[int], mode: str | Sequence[str] = "triangular"
) -> np.ndarray:
    """Weight map of one tile: the outer product of :func:`blending_profile` along each axis.

    Parameters
    ----------
    tile_shape : tile size per axis (voxels), any number of axes.
    overlap : voxels shared by neighbouring tiles, one for all axes or one per axis.
    mode : ``'triangular'`` or ``'uniform'``, one for all axes or one per axis.

    Returns
    -------
    float32 array of ``tile_shape``, strictly positive. Accumulated over a tile layout and divided
    by its sum it gives blending weights that sum to 1 at every voxel (see :func:`weight_sums`).
    """
    ndim = len(tile_shape)
    overlaps = per_axis(overlap, ndim)
    modes = [mode] * ndim if isinstance(mode, str) else list(mode)
    weights = np.ones((), dtype=np.float64)
    for tile, ov, md in zip(tile_shape, overlaps, modes):
        weights = np.multiply.outer(weights, blending_profile(int(tile), int(ov), md))
    return weights.astype(np.float32)


def weight_sums(length: int, tile: int, overlap: int, mode: str = "triangular") -> np.ndarray:
    """Sum of the 1D blending profiles of all tiles along one axis (float64, length ``max(length, tile)``).

    The weight accumulated at a voxel of a tile grid is the product of these sums over the axes,
    because the weights are separable and the layout is a Cartesian grid.
    """
    profile = blending_profile(tile, overlap, mode)
    sums = np.zeros(max(length, tile))
    for start in tile_starts(length, tile, overlap):
        sums[start : start + tile] += profile
    return sums


def per_axis(value, ndim: int) -> list[int]:
    """``value`` as ``ndim`` integers: a scalar repeated, or a sequence of exactly ``ndim`` values."""
    if np.ndim(value) == 0:
        return [int(value)] * ndim
    value = [int(v) for v in value]
    if len(value) != ndim:
        raise TilingError(f"expected {ndim} values (one per axis), got {value}")
    return value

