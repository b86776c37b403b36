"""Frames, grids and the resampling of the low-res scan onto high-res voxels (docs/own_scans.md).

Frames and the offset: each volume's frame has its origin at the **outer corner of its voxel
(0, 0, 0)**; voxel ``i`` spans ``[i·Δ, (i+1)·Δ)`` µm along each axis (its centre is at
``(i + ½)·Δ``). ``offset_um`` is the position (z, y, x, µm) of the high-res volume's origin in the
low-res volume's frame: high-res voxel ``i`` is centred at ``offset + (i + ½)·Δ_high`` in the
low-res frame, i.e. at the continuous low-res index ``(offset + (i + ½)·Δ_high)/Δ_low − ½``.
Axes are assumed aligned (no rotation) and voxels cubic.

A :class:`HighResGrid` is a grid of high-res voxels placed in the low-res frame: the whole low-res
field of view (:func:`large_fov_grid`, the output of a large-FOV recovery, in phase with the
registered high-res scan so that its voxels *are* output voxels) or the registered high-res scan
itself (:func:`scan_grid`). :class:`UpsampledLow` is the low-res volume on such a grid, resampled
block by block on demand (:func:`resample_low_to_high`, a cubic spline): the training pairs, the
recovery and the trust maps all read it, so a network sees at inference the interpolation it was
trained on. Regions of interest are given in output voxels (:func:`parse_roi`).
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
from scipy import ndimage

from .. import ResrecoverError
from ..methods.infer import check_roi

#: Spline order of the low-res -> high-res-grid resampling, for training pairs and recovery alike
#: (a network must see at inference the interpolation it was trained on).
UPSAMPLING_ORDER = 3
# Extra low-res voxels read around a resampled region so the spline prefilter sees no crop edge.
_SPLINE_MARGIN = {0: 1, 1: 2, 2: 12, 3: 12, 4: 16, 5: 16}
_ROI_PATTERN = re.compile(r"^\s*(\d*)\s*:\s*(\d*)\s*,\s*(\d*)\s*:\s*(\d*)\s*,\s*(\d*)\s*:\s*(\d*)\s*$")


class RegistrationError(ResrecoverError):
    """The pair cannot be registered or resampled (no overlap, or a correlation too weak to trust)."""


# --------------------------------------------------------------------------------------------
# Checked numbers
# --------------------------------------------------------------------------------------------


def zyx_triple(value, name: str) -> tuple[float, float, float]:
    """``value`` (one number or three) as finite (z, y, x); ResrecoverError naming ``name`` otherwise."""
    arr = np.asarray(value, dtype=np.float64).ravel()
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.size != 3 or not np.all(np.isfinite(arr)):
        raise ResrecoverError(f"{name}={value!r}; expected three finite numbers (z, y, x)")
    return tuple(float(v) for v in arr)


def voxel_edge_um(value, name: str) -> float:
    """``value`` as a positive voxel edge (µm); ResrecoverError naming ``name`` otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not math.isfinite(v) or v <= 0:
        raise ResrecoverError(f"{name}={value!r}; expected a positive voxel size in µm")
    return v


# --------------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------------


def block_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    """Mean over non-overlapping ``factor``³ blocks; trailing voxels that fill no block are dropped.

    Output voxel ``k`` is the mean of input voxels ``[k·factor, (k+1)·factor)`` along each axis, so
    both grids share their corner origin.
    """
    factor = int(factor)
    if factor < 1:
        raise ResrecoverError(f"block_mean: factor={factor}; expected an integer >= 1")
    volume = np.asarray(volume, dtype=np.float32)
    n = [s // factor for s in volume.shape]
    if min(n) < 1:
        raise ResrecoverError(f"block_mean: volume {volume.shape} is smaller than one {factor}³ block")
    v = volume[: n[0] * factor, : n[1] * factor, : n[2] * factor]
    return v.reshape(n[0], factor, n[1], factor, n[2], factor).mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)


def high_to_low_index(offset_um, low_voxel_um: float, high_voxel_um: float, index) -> np.ndarray:
    """Continuous low-res index (z, y, x) of the centre of high-res voxel ``index`` (module frames)."""
    offset = np.asarray(offset_um, dtype=np.float64)
    return (offset + (np.asarray(index, dtype=np.float64) + 0.5) * high_voxel_um) / low_voxel_um - 0.5


def resample_low_to_high(
    low,
    offset_um,
    low_voxel_um: float,
    high_voxel_um: float,
    out_shape,
    out_start_vox=(0, 0, 0),
    order: int = UPSAMPLING_ORDER,
) -> np.ndarray:
    """The low-res volume sampled on the high-res grid (the training input of a registered pair).

    Only the low-res region under the requested high-res block is read (plus a margin for the
    spline), so ``low`` may be a large lazy :class:`~resrecover.io.readers.base.VolumeSource`.

    Parameters
    ----------
    low : (Nz, Ny, Nx) array or VolumeSource, voxel ``low_voxel_um``.
    offset_um : (z, y, x) µm of the high-res origin in the low-res frame (module docstring).
    low_voxel_um, high_voxel_um : voxel edges (µm).
    out_shape : (nz, ny, nx) of the high-res block to produce.
    out_start_vox : (z, y, x) high-res voxel index of the block's first voxel (for slab-wise work).
    order : spline order of the interpolation (3 cubic, 1 linear).

    Returns
    -------
    (nz, ny, nx) float32.

    Raises
    ------
    RegistrationError : the block reaches outside the low-res volume (by more than its outer half
        voxel, where the edge value is repeated).
    """
    low_voxel_um = voxel_edge_um(low_voxel_um, "low_voxel_um")
    high_voxel_um = voxel_edge_um(high_voxel_um, "high_voxel_um")
    offset = np.asarray(zyx_triple(offset_um, "offset_um"))
    out_shape = tuple(int(n) for n in out_shape)
    start = np.asarray(out_start_vox, dtype=np.float64)
    first = high_to_low_index(offset, low_voxel_um, high_voxel_um, start)
    scale = high_voxel_um / low_voxel_um
    last = first + (np.asarray(out_shape) - 1) * scale
    n_low = np.asarray(low.shape)
    tol = 1e-6
    if np.any(first < -0.5 - tol) or np.any(last > n_low - 0.5 + tol):
        lo_um = offset + start * high_voxel_um
        hi_um = lo_um + np.asarray(out_shape) * high_voxel_um
        raise RegistrationError(
            f"high-res block {tuple(np.round(lo_um, 3))}..{tuple(np.round(hi_um, 3))} µm (z, y, x) leaves the "
            f"low-res volume 0..{tuple(np.round(n_low * low_voxel_um, 3))} µm; expected the high-res scan inside "
            "the low-res field of view"
        )
    margin = _SPLINE_MARGIN.get(int(order), 16)
    lo = np.maximum(np.floor(first).astype(int) - margin, 0)
    hi = np.minimum(np.ceil(last).astype(int) + margin + 1, n_low)
    crop = np.asarray(low[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], dtype=np.float32)
    out = ndimage.affine_transform(
        crop, matrix=np.full(3, scale), offset=first - lo, output_shape=out_shape,
        output=np.float32, order=int(order), mode="nearest", prefilter=order > 1,
    )
    return out


# --------------------------------------------------------------------------------------------
# High-res grids in the low-res frame and the lazy upsampling onto them
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HighResGrid:
    """A grid of high-res voxels placed in the low-res frame (:func:`large_fov_grid`, :func:`scan_grid`).

    Attributes
    ----------
    origin_um : (z, y, x) µm of the grid's voxel-0 outer corner in the low-res frame.
    shape : (nz, ny, nx) voxels.
    voxel_um : voxel edge (µm), the high-res voxel.
    low_voxel_um : the low-res voxel (µm).
    low_shape : (Nz, Ny, Nx) of the low-res volume.
    high_start_vox : (z, y, x) grid voxel of the high-res scan's voxel 0 (None without a registration).
    high_shape : (nz, ny, nx) of the high-res scan (None without a registration).
    """

    origin_um: tuple[float, float, float]
    shape: tuple[int, int, int]
    voxel_um: float
    low_voxel_um: float
    low_shape: tuple[int, int, int]
    high_start_vox: tuple[int, int, int] | None = None
    high_shape: tuple[int, int, int] | None = None

    @property
    def ratio(self) -> float:
        """Low-res voxel / high-res voxel."""
        return self.low_voxel_um / self.voxel_um

    @property
    def is_identity(self) -> bool:
        """True when the grid is the low-res grid itself (no resampling needed)."""
        return abs(self.ratio - 1) < 1e-9 and all(abs(o) < 1e-9 * self.voxel_um for o in self.origin_um)


def large_fov_grid(low_shape, low_voxel_um: float, high_voxel_um: float | None = None, offset_um=None,
                   high_shape=None) -> HighResGrid:
    """The high-res grid over the whole low-res field of view (the output grid of a large-FOV recovery).

    Parameters
    ----------
    low_shape : (Nz, Ny, Nx) of the low-res volume; low_voxel_um its voxel (µm).
    high_voxel_um : output voxel (µm); default the low-res voxel (no upsampling).
    offset_um : registered (z, y, x) µm of the high-res origin in the low-res frame
        (:class:`resrecover.ownscan.registration.RegistrationResult`); the grid is put in phase with it:
        its origin is the high-res origin moved by a whole number of high-res voxels, to within half
        a voxel of the low-res corner. ``None``: the grid starts at the low-res corner.
    high_shape : the high-res scan's shape (recorded with its place on the grid).

    Returns
    -------
    :class:`HighResGrid`: every voxel whose centre lies inside the low-res FOV, ``r·N`` voxels per
    axis for an integer ratio ``r`` (``N·Δlow/Δhigh`` rounded to the nearest integer).
    """
    low_voxel_um = voxel_edge_um(low_voxel_um, "low_voxel_um")
    high_voxel_um = low_voxel_um if high_voxel_um is None else voxel_edge_um(high_voxel_um, "high_voxel_um")
    if high_voxel_um > low_voxel_um * (1 + 1e-6):
        raise ResrecoverError(
            f"high_voxel_um={high_voxel_um:g} is larger than low_voxel_um={low_voxel_um:g}; expected the output "
            "(high-res) voxel to be the smaller"
        )
    low_shape = tuple(int(n) for n in low_shape)
    if offset_um is None:
        origin = np.zeros(3)
        start = None
    else:
        offset = np.asarray(offset_um, dtype=np.float64)
        steps = np.round(offset / high_voxel_um)
        origin = offset - steps * high_voxel_um  # in [-Δh/2, Δh/2]: in phase with the high-res scan
        start = tuple(int(s) for s in steps)
    extent = np.asarray(low_shape) * low_voxel_um
    # Every voxel whose centre lies inside the low-res FOV (the resampling repeats the edge value
    # over the outer half voxel), so a registration a hair off the grid loses no slice.
    shape = tuple(int(n) for n in np.floor((extent - origin) / high_voxel_um + 0.5 - 1e-6))
    if min(shape) < 1:
        raise ResrecoverError(f"low-res volume {low_shape} of {low_voxel_um:g} µm holds no output voxel")
    return HighResGrid(
        origin_um=tuple(float(o) for o in origin), shape=shape, voxel_um=float(high_voxel_um),
        low_voxel_um=float(low_voxel_um), low_shape=low_shape, high_start_vox=start,
        high_shape=None if high_shape is None else tuple(int(n) for n in high_shape),
    )


def scan_grid(registration) -> HighResGrid:
    """The registered high-res scan's own voxels: the grid the low-res scan is resampled onto to
    compare with (or train against) the whole high-res scan (``resrecover register --low-on-high``)."""
    return HighResGrid(
        origin_um=tuple(float(o) for o in registration.offset_um), shape=tuple(registration.high_shape),
        voxel_um=float(registration.high_voxel_um), low_voxel_um=float(registration.low_voxel_um),
        low_shape=tuple(registration.low_shape), high_start_vox=(0, 0, 0), high_shape=tuple(registration.high_shape),
    )


def contiguous_ranges(key, shape) -> tuple[tuple[int, int], ...]:
    """``view[z0:z1, y0:y1, x0:x1]``'s key as three ``(start, stop)`` ranges inside ``shape`` (missing axes: whole)."""
    if not isinstance(key, tuple):
        key = (key,)
    key = key + (slice(None),) * (3 - len(key))
    out = []
    for k, n in zip(key, shape):
        if not isinstance(k, slice) or k.step not in (None, 1):
            raise IndexError("only contiguous slices index an upsampled view, e.g. view[z0:z1]")
        a, b, _ = k.indices(n)
        out.append((a, max(a, b)))
    return tuple(out)


class UpsampledLow:
    """The low-res volume on a :class:`HighResGrid`, computed block by block on demand.

    ``view[z0:z1]`` (or ``view[z0:z1, y0:y1, x0:x1]``) resamples just that block with a spline of
    order ``order`` (:func:`resample_low_to_high`), reading only the low-res voxels under it. A grid
    that is the low-res grid itself is read through unchanged. Pass it to
    :func:`resrecover.io.write_volume_as` to write it slab by slab, whatever its size.

    Attributes
    ----------
    shape, voxel_size_um : of the grid; ``grid``; ``low`` (the low-res source); ``order``.
    """

    def __init__(self, low, grid: HighResGrid, order: int = UPSAMPLING_ORDER):
        if tuple(int(n) for n in low.shape) != grid.low_shape:
            raise ResrecoverError(f"low-res volume {tuple(low.shape)}; the grid was made for {grid.low_shape}")
        self.low = low
        self.grid = grid
        self.order = int(order)
        self.shape = grid.shape
        self.voxel_size_um = grid.voxel_um

    def __getitem__(self, key) -> np.ndarray:
        (z0, z1), (y0, y1), (x0, x1) = contiguous_ranges(key, self.shape)
        if self.grid.is_identity:
            return np.asarray(self.low[z0:z1, y0:y1, x0:x1], dtype=np.float32)
        if z1 == z0 or y1 == y0 or x1 == x0:
            return np.zeros((z1 - z0, y1 - y0, x1 - x0), dtype=np.float32)
        return resample_low_to_high(
            self.low, self.grid.origin_um, self.grid.low_voxel_um, self.grid.voxel_um,
            (z1 - z0, y1 - y0, x1 - x0), out_start_vox=(z0, y0, x0), order=self.order,
        )


# --------------------------------------------------------------------------------------------
# Regions of interest (output voxels)
# --------------------------------------------------------------------------------------------


def parse_roi(roi) -> tuple[tuple[int | None, int | None], ...] | None:
    """``'z0:z1,y0:y1,x0:x1'`` (output voxels; an empty bound is the volume's edge) as three ranges.

    Also accepts three ``(start, stop)`` pairs or ``None`` (the whole volume, returned as ``None``).

    Raises
    ------
    ResrecoverError : text that is not three ``start:stop`` ranges of non-negative integers.
    """
    if roi is None:
        return None
    if isinstance(roi, str):
        match = _ROI_PATTERN.match(roi)
        if not match:
            raise ResrecoverError(
                f"roi: {roi!r} is not a region of interest; expected 'z0:z1,y0:y1,x0:x1' in output voxels"
            )
        bounds = [int(g) if g else None for g in match.groups()]
        return tuple((bounds[i], bounds[i + 1]) for i in (0, 2, 4))
    try:
        ranges = tuple((None if a is None else int(a), None if b is None else int(b)) for a, b in roi)
    except (TypeError, ValueError):
        raise ResrecoverError(f"roi: {roi!r}; expected three (start, stop) pairs in output voxels") from None
    if len(ranges) != 3:
        raise ResrecoverError(f"roi: {roi!r}; expected three (start, stop) pairs (z, y, x)")
    return ranges


def resolve_roi(roi, shape) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """The ROI (text, pairs or None) as ``((z0, z1), (y0, y1), (x0, x1))`` checked inside ``shape``."""
    parsed = parse_roi(roi)
    if parsed is None:
        return check_roi(None, shape)
    filled = tuple((0 if a is None else a, n if b is None else b) for (a, b), n in zip(parsed, shape))
    return check_roi(filled, shape)


def roi_text(roi) -> str:
    """``((z0, z1), ...)`` as ``'z0:z1,y0:y1,x0:x1'``."""
    return ",".join(f"{a}:{b}" for a, b in roi)
