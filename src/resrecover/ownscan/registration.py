"""Registration of a high-resolution interior scan inside a low-resolution large-FOV scan (docs/own_scans.md).

The pair is placed coarsely from the sample-stage motor positions and then fine-tuned with an
FFT-based 3D registration:

1. **coarse placement**: from the stage offset when one is given; else (or, with ``search=True``,
   around the given offset) a normalized cross-correlation search of the high-res volume,
   downsampled to the low-res voxel, over the low-res volume (binned further when it is large);
2. **fine registration**: the low-res volume is resampled onto the high-res grid over the overlap
   only, and a 3D FFT cross-correlation against (a central crop of) the high-res volume, refined to
   sub-voxel precision by upsampled DFT (``skimage.registration.phase_cross_correlation``), gives the
   remaining shift; resampling and correlation repeat until the shift is below 0.02 voxel;
3. **acceptance**: the normalized correlation between the resampled low-res volume and the high-res
   volume blurred to the low-res resolution, over the crop, must reach ``min_peak``; below it the
   pair is refused (unrelated volumes, wrong voxel sizes, a flipped axis).

Frames and the offset are those of :mod:`resrecover.ownscan.grid` (origin at the outer corner of
voxel (0, 0, 0); ``offset_um`` places the high-res origin in the low-res frame).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.feature import match_template
from skimage.registration import phase_cross_correlation

from .. import ResrecoverError
from ..io import InputError, atomic_output, open_volume, write_volume_as
from .grid import (
    RegistrationError,
    UpsampledLow,
    block_mean,
    resample_low_to_high,
    scan_grid,
    voxel_edge_um,
    zyx_triple,
)

log = logging.getLogger(__name__)

#: Default acceptance threshold on the normalized correlation of the registered overlap.
DEFAULT_MIN_PEAK = 0.5
# Default half-width (in low-res voxels) of the window searched around a given stage offset.
_LOCAL_SEARCH_LOW_VOX = 12
# Sub-voxel precision of the fine step: 1/_UPSAMPLE of a high-res voxel.
_UPSAMPLE = 50
# The fine loop stops when the last correction is below this (high-res voxels).
_CONVERGED_VOX = 0.02
_MAX_FINE_ITERATIONS = 5
_FINE_ORDER = 1  # linear is enough: cubic moved no result by more than 0.02 voxel


@dataclasses.dataclass(frozen=True)
class RegistrationResult:
    """Where the high-res volume lies in the low-res volume (see the module docstring for frames).

    Attributes
    ----------
    offset_um : (z, y, x) µm of the high-res origin (voxel-0 outer corner) in the low-res frame.
    peak : normalized correlation of the registered overlap (1 = identical after blurring the
        high-res volume to the low-res resolution; unrelated volumes give about 0).
    coarse_offset_um : (z, y, x) µm of the coarse placement the fine step started from.
    report : human-readable summary.
    low_voxel_um, high_voxel_um : voxel edges (µm).
    low_shape, high_shape : (nz, ny, nx) of the two volumes.
    coarse_method : ``stage offset``, ``local search`` or ``global search``.
    coarse_peak : normalized cross-correlation of the coarse search (None for ``stage offset``).
    min_peak : the acceptance threshold used.
    """

    offset_um: tuple[float, float, float]
    peak: float
    coarse_offset_um: tuple[float, float, float]
    report: str
    low_voxel_um: float
    high_voxel_um: float
    low_shape: tuple[int, int, int]
    high_shape: tuple[int, int, int]
    coarse_method: str
    coarse_peak: float | None
    min_peak: float
    origin: str = "voxel-0 outer corner"

    @property
    def offset_low_vox(self) -> tuple[float, float, float]:
        """The offset in low-res voxels."""
        return tuple(o / self.low_voxel_um for o in self.offset_um)

    @property
    def offset_high_vox(self) -> tuple[float, float, float]:
        """The offset in high-res voxels."""
        return tuple(o / self.high_voxel_um for o in self.offset_um)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["offset_low_vox"] = list(self.offset_low_vox)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RegistrationResult:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        for key in ("offset_um", "coarse_offset_um"):
            kwargs[key] = tuple(float(v) for v in kwargs[key])
        for key in ("low_shape", "high_shape"):
            kwargs[key] = tuple(int(v) for v in kwargs[key])
        return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# Binning for the coarse search
# --------------------------------------------------------------------------------------------


def _resample_to_voxel(volume: np.ndarray, voxel_um: float, target_um: float) -> np.ndarray:
    """``volume`` (voxel ``voxel_um``) on a coarser grid of voxel ``target_um`` sharing its corner origin.

    Integer ratios are block means; other ratios a Gaussian anti-alias then linear sampling.
    """
    ratio = target_um / voxel_um
    if ratio < 1 + 1e-6:
        return np.asarray(volume, dtype=np.float32)
    if abs(ratio - round(ratio)) < 1e-3:
        return block_mean(volume, int(round(ratio)))
    out_shape = tuple(max(1, int(n // ratio)) for n in volume.shape)
    smooth = ndimage.gaussian_filter(np.asarray(volume, dtype=np.float32), 0.5 * math.sqrt(ratio**2 - 1))
    return ndimage.affine_transform(smooth, matrix=np.full(3, ratio), offset=np.full(3, 0.5 * ratio - 0.5),
                                    output_shape=out_shape, output=np.float32, order=1, mode="nearest")


def _read_binned(volume, factor: int, start, stop) -> np.ndarray:
    """Block mean by ``factor`` of ``volume[start:stop]`` read slab by slab (trailing partial blocks dropped)."""
    start = np.asarray(start, dtype=int)
    n = (np.asarray(stop, dtype=int) - start) // factor
    if factor == 1:
        return np.asarray(volume[start[0] : start[0] + n[0], start[1] : start[1] + n[1], start[2] : start[2] + n[2]],
                          dtype=np.float32)
    out = np.empty(tuple(n), dtype=np.float32)
    rows = max(1, (1 << 26) // max(1, int(n[1] * n[2] * factor**3 * 4)))  # ~64 MB read per step
    for k0 in range(0, n[0], rows):
        k1 = min(k0 + rows, n[0])
        z0 = start[0] + k0 * factor
        block = volume[z0 : start[0] + k1 * factor, start[1] : start[1] + n[1] * factor,
                       start[2] : start[2] + n[2] * factor]
        out[k0:k1] = block_mean(np.asarray(block, dtype=np.float32), factor)
    return out


# --------------------------------------------------------------------------------------------
# Correlation helpers
# --------------------------------------------------------------------------------------------


def normalized_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two same-shape arrays (0 when either is constant)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b / denom) if denom > 0 else 0.0


def _tukey(n: int, alpha: float = 0.5) -> np.ndarray:
    """1D Tukey window: flat in the middle, cosine tapers over ``alpha/2`` of each end."""
    if n < 3:
        return np.ones(n)
    x = np.linspace(0.0, 1.0, n)
    w = np.ones(n)
    edge = alpha / 2.0
    lo = x < edge
    hi = x > 1 - edge
    w[lo] = 0.5 * (1 + np.cos(np.pi * (x[lo] / edge - 1)))
    w[hi] = 0.5 * (1 + np.cos(np.pi * ((x[hi] - 1) / edge + 1)))
    return w


def _windowed(volume: np.ndarray) -> np.ndarray:
    """Mean removed, then tapered to zero at the borders (no wrap-around edges in the FFT)."""
    v = np.asarray(volume, dtype=np.float64)
    v = v - v.mean()
    for axis, n in enumerate(v.shape):
        shape = [1, 1, 1]
        shape[axis] = n
        v = v * _tukey(n).reshape(shape)
    return v


def _parabolic_peak(ncc: np.ndarray, peak: tuple[int, ...]) -> np.ndarray:
    """Sub-voxel position of a correlation maximum by a parabola through it and its two neighbours per axis."""
    pos = np.asarray(peak, dtype=np.float64)
    for axis in range(ncc.ndim):
        i = peak[axis]
        if 0 < i < ncc.shape[axis] - 1:
            idx = list(peak)
            idx[axis] = i - 1
            a = ncc[tuple(idx)]
            idx[axis] = i + 1
            c = ncc[tuple(idx)]
            b = ncc[peak]
            denom = a - 2 * b + c
            if denom < 0:
                pos[axis] += float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5))
    return pos


def _ncc_search(image: np.ndarray, template: np.ndarray) -> tuple[np.ndarray, float]:
    """Sub-voxel position (template corner, image voxels) and value of the best normalized cross-correlation."""
    ncc = match_template(image, template, pad_input=False)
    # Flat (zero-variance) windows come back as nan/inf in some versions: they match nothing.
    ncc = np.where(np.isfinite(ncc), ncc, -1.0)
    peak = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
    return _parabolic_peak(ncc, peak), float(ncc[peak])


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------


def _coarse_search(low, high, low_voxel_um, high_voxel_um, offset_um, radius_um, max_voxels, template_vox):
    """Coarse offset (µm) and its NCC by template matching at the low-res voxel (or a multiple of it).

    ``offset_um`` None searches the whole low-res volume; otherwise a window of ``± radius_um``
    around it. The template is a central crop of the high-res volume, downsampled to the search grid.
    """
    n_low = np.asarray(low.shape)
    n_high = np.asarray(high.shape)
    high_extent = n_high * high_voxel_um
    if offset_um is None:
        region_lo_um = np.zeros(3)
        region_hi_um = n_low * low_voxel_um
    else:
        region_lo_um = np.maximum(np.asarray(offset_um) - radius_um, 0.0)
        region_hi_um = np.minimum(np.asarray(offset_um) + high_extent + radius_um, n_low * low_voxel_um)
    region_lo = np.floor(region_lo_um / low_voxel_um).astype(int)
    region_hi = np.ceil(region_hi_um / low_voxel_um).astype(int)
    region_hi = np.minimum(region_hi, n_low)
    bin_factor = max(1, math.ceil((float(np.prod(region_hi - region_lo)) / max_voxels) ** (1 / 3)))
    grid_um = low_voxel_um * bin_factor
    image = _read_binned(low, bin_factor, region_lo, region_hi)

    # Template: a central crop of the high-res volume no larger than `template_vox` search voxels
    # per axis and smaller than the search image, so that it can slide.
    max_template_um = np.minimum(template_vox, np.asarray(image.shape) - 2) * grid_um
    crop_um = np.minimum(high_extent, max_template_um)
    if np.any(crop_um < 3 * grid_um):
        raise RegistrationError(
            f"the searched low-res region {tuple(image.shape)} (voxels of {grid_um:g} µm) is too small to slide a "
            f"template of the high-res volume {tuple(n_high)} (voxels of {high_voxel_um:g} µm) in; give offset_um "
            "or check the voxel sizes"
        )
    crop = np.floor(crop_um / high_voxel_um).astype(int)
    c0 = (n_high - crop) // 2
    # Bin the crop by the largest integer not above the ratio while reading (bounded memory), then
    # bring it to the exact search grid.
    pre = max(1, int((grid_um / high_voxel_um) + 1e-6))
    binned = _read_binned(high, pre, c0, c0 + crop)
    template = _resample_to_voxel(binned, high_voxel_um * pre, grid_um)
    if min(template.shape) < 3 or np.ptp(template) == 0:
        raise RegistrationError("the high-res volume is flat (or too small) at the low-res voxel; nothing to register")
    pos, value = _ncc_search(image, template)
    # Template voxel 0 starts at the crop corner c0 (high-res voxels); it aligned with image voxel `pos`.
    coarse = region_lo * low_voxel_um + pos * grid_um - c0 * high_voxel_um
    return coarse, value, bin_factor


def _fine_crop(high_shape, offset_um, low_shape, low_voxel_um, high_voxel_um, max_crop):
    """(start, shape) in high-res voxels of the central crop of the high-res volume used for the fine step.

    It lies inside the low-res field of view (with a margin of 2 low-res voxels, which absorbs
    the coarse placement's error).
    """
    n_high = np.asarray(high_shape)
    margin_um = 2 * low_voxel_um
    inside_lo = np.ceil((margin_um - np.asarray(offset_um)) / high_voxel_um).astype(int)
    inside_hi = np.floor((np.asarray(low_shape) * low_voxel_um - margin_um - np.asarray(offset_um)) / high_voxel_um).astype(int)
    lo = np.maximum(inside_lo, 0)
    hi = np.minimum(inside_hi, n_high)
    avail = hi - lo
    if np.any(avail < 16):
        raise RegistrationError(
            f"the high-res volume {tuple(n_high)} placed at {tuple(np.round(offset_um, 2))} µm overlaps the low-res "
            f"volume by only {tuple(np.maximum(avail, 0))} high-res voxels; expected it inside the low-res field of view"
        )
    shape = np.minimum(avail, max_crop)
    start = lo + (avail - shape) // 2
    return start, shape


def register_pair(
    low,
    high,
    low_voxel_um: float | None = None,
    high_voxel_um: float | None = None,
    offset_um=None,
    search: bool = True,
    min_peak: float = DEFAULT_MIN_PEAK,
    search_radius_um: float | None = None,
    fine_crop_vox: int = 128,
    coarse_max_voxels: int = 2**23,
    coarse_template_vox: int = 64,
) -> RegistrationResult:
    """Find where a high-resolution interior scan lies in a low-resolution large-FOV scan.

    Parameters
    ----------
    low : (Nz, Ny, Nx) low-res volume: array or lazy :class:`~resrecover.io.readers.base.VolumeSource`.
    high : (nz, ny, nx) high-res volume: array or VolumeSource (only crops of it are read).
    low_voxel_um, high_voxel_um : voxel edges (µm); default: the sources' ``voxel_size_um``.
    offset_um : approximate (z, y, x) µm of the high-res origin in the low-res frame (module
        docstring), e.g. from the stage coordinates; None searches the whole low-res volume.
    search : with ``offset_um`` given, search a window of ``± search_radius_um`` around it (True)
        or trust it as the coarse placement (False).
    min_peak : refuse the result when the normalized correlation of the registered overlap
        (``peak``) is below this.
    search_radius_um : half-width of the local search (default: 12 low-res voxels).
    fine_crop_vox : largest edge (high-res voxels) of the central crop used for the fine step.
    coarse_max_voxels : the global search bins the low-res volume until it has at most this many voxels.
    coarse_template_vox : largest template edge (search-grid voxels) of the coarse search.

    Returns
    -------
    RegistrationResult (``offset_um`` precise to a small fraction of a high-res voxel on data that
    correlate well).

    Raises
    ------
    RegistrationError : the peak is below ``min_peak`` (the pair does not match), or the volumes
        do not overlap enough.
    """
    t_start = time.perf_counter()
    low_voxel_um = voxel_edge_um(low_voxel_um if low_voxel_um is not None else getattr(low, "voxel_size_um", None),
                             "low_voxel_um")
    high_voxel_um = voxel_edge_um(high_voxel_um if high_voxel_um is not None else getattr(high, "voxel_size_um", None),
                              "high_voxel_um")
    if high_voxel_um > low_voxel_um * (1 + 1e-6):
        raise RegistrationError(
            f"high_voxel_um={high_voxel_um:g} is larger than low_voxel_um={low_voxel_um:g}; expected the high-res "
            "volume to have the smaller voxel (swapped inputs?)"
        )
    if len(low.shape) != 3 or len(high.shape) != 3:
        raise RegistrationError(f"volumes of shapes {tuple(low.shape)} and {tuple(high.shape)}; expected 3D z-y-x")
    if not 0 < min_peak < 1:
        raise ResrecoverError(f"min_peak={min_peak}; expected a correlation between 0 and 1")
    ratio = low_voxel_um / high_voxel_um
    radius_um = (search_radius_um if search_radius_um is not None else _LOCAL_SEARCH_LOW_VOX * low_voxel_um)

    # 1. Coarse placement.
    coarse_peak = None
    if offset_um is not None:
        offset_um = np.asarray(zyx_triple(offset_um, "offset_um"))
    if offset_um is None:
        if not search:
            raise ResrecoverError("register_pair: search=False needs offset_um (the stage offset)")
        coarse, coarse_peak, bin_factor = _coarse_search(
            low, high, low_voxel_um, high_voxel_um, None, 0.0, coarse_max_voxels, coarse_template_vox)
        method = "global search"
        if bin_factor > 1:  # the binned search is good to about a binned voxel: refine it at full res
            coarse, coarse_peak, _ = _coarse_search(
                low, high, low_voxel_um, high_voxel_um, coarse, 2 * bin_factor * low_voxel_um,
                coarse_max_voxels, coarse_template_vox)
            method = f"global search (binned {bin_factor}x, then refined)"
    elif search:
        coarse, coarse_peak, _ = _coarse_search(
            low, high, low_voxel_um, high_voxel_um, offset_um, radius_um, coarse_max_voxels, coarse_template_vox)
        method = "local search"
    else:
        coarse = offset_um
        method = "stage offset"
    coarse = np.asarray(coarse, dtype=np.float64)
    t_coarse = time.perf_counter() - t_start

    # 2. Fine: resample low onto the high-res crop, cross-correlate, repeat.
    offset = coarse.copy()
    steps = []
    start = shape = None
    for _ in range(_MAX_FINE_ITERATIONS):
        # The crop stays inside the low-res field of view as the offset moves.
        new_start, new_shape = _fine_crop(high.shape, offset, low.shape, low_voxel_um, high_voxel_um, fine_crop_vox)
        if start is None or np.any(new_start != start) or np.any(new_shape != shape):
            start, shape = new_start, new_shape
            high_crop = np.asarray(high[start[0] : start[0] + shape[0], start[1] : start[1] + shape[1],
                                        start[2] : start[2] + shape[2]], dtype=np.float32)
            high_w = _windowed(high_crop)
        low_on_high = resample_low_to_high(low, offset, low_voxel_um, high_voxel_um, shape, start, order=_FINE_ORDER)
        # Plain (not phase-normalized) cross-correlation: above the low-res cut-off the low-res
        # spectrum is only noise, which phase normalization would weigh as much as the signal.
        shift, _, _ = phase_cross_correlation(_windowed(low_on_high), high_w, upsample_factor=_UPSAMPLE,
                                              normalization=None)
        shift = np.asarray(shift, dtype=np.float64)
        if np.any(np.abs(shift) > shape / 2 - 1):
            break  # a wrapped peak: no meaningful correction
        # low_on_high(i) ≈ high(i − shift): the high-res origin lies `shift` voxels further on.
        offset = offset + shift * high_voxel_um
        steps.append(float(np.max(np.abs(shift))))
        if steps[-1] < _CONVERGED_VOX:
            break
    final_start, final_shape = _fine_crop(high.shape, offset, low.shape, low_voxel_um, high_voxel_um, fine_crop_vox)
    if np.any(final_start != start) or np.any(final_shape != shape):
        start, shape = final_start, final_shape
        high_crop = np.asarray(high[start[0] : start[0] + shape[0], start[1] : start[1] + shape[1],
                                    start[2] : start[2] + shape[2]], dtype=np.float32)
    t_fine = time.perf_counter() - t_start - t_coarse

    # 3. Acceptance: the overlap at the final offset, the high-res crop blurred to the low-res resolution.
    low_on_high = resample_low_to_high(low, offset, low_voxel_um, high_voxel_um, shape, start, order=1)
    peak = normalized_correlation(low_on_high, ndimage.gaussian_filter(high_crop, 0.5 * ratio))

    fmt = lambda v, d=3: "(" + ", ".join(f"{x:.{d}f}" for x in v) + ")"  # noqa: E731
    change = offset - coarse
    lines = [
        f"registration of a high-res volume {tuple(int(n) for n in high.shape)} of {high_voxel_um:g} µm voxels "
        f"in a low-res volume {tuple(int(n) for n in low.shape)} of {low_voxel_um:g} µm voxels (ratio {ratio:.3g})",
        "frame: offsets are (z, y, x) µm of the high-res voxel-0 outer corner from the low-res voxel-0 outer corner",
        f"coarse ({method}): {fmt(coarse)} µm" + (f", NCC {coarse_peak:.3f}" if coarse_peak is not None else ""),
        f"fine (3D FFT cross-correlation, 1/{_UPSAMPLE} voxel, {len(steps)} step(s), crop {tuple(int(n) for n in shape)} "
        f"at {tuple(int(n) for n in start)}): {fmt(offset)} µm = {fmt(offset / low_voxel_um)} low-res voxels",
        f"fine - coarse: {fmt(change)} µm = {fmt(change / high_voxel_um, 2)} high-res voxels",
        f"peak (normalized correlation of the overlap): {peak:.3f} (threshold {min_peak:g})",
        f"time: coarse {t_coarse:.2f} s, fine {t_fine:.2f} s",
    ]
    report = "\n".join(lines)
    log.info("%s", report)
    if peak < min_peak:
        why = ("inverted contrast in one volume?" if peak < -min_peak
               else "unrelated scans, wrong voxel sizes, a flipped axis?")
        raise RegistrationError(
            f"registration peak {peak:.3f} is below min_peak={min_peak:g} at offset {fmt(offset, 2)} µm "
            f"({method}); the volumes do not match there ({why})"
        )
    return RegistrationResult(
        offset_um=tuple(float(v) for v in offset), peak=peak, coarse_offset_um=tuple(float(v) for v in coarse),
        report=report, low_voxel_um=low_voxel_um, high_voxel_um=high_voxel_um,
        low_shape=tuple(int(n) for n in low.shape), high_shape=tuple(int(n) for n in high.shape),
        coarse_method=method, coarse_peak=None if coarse_peak is None else float(coarse_peak), min_peak=float(min_peak),
    )


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def save_registration(path: str | Path, result: RegistrationResult) -> None:
    """Write ``result`` as JSON atomically."""
    with atomic_output(path) as tmp:
        Path(tmp).write_text(json.dumps(result.to_dict(), indent=2) + "\n")


def load_registration(path: str | Path) -> RegistrationResult:
    """Read a registration written by :func:`save_registration`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: registration file not found")
    try:
        return RegistrationResult.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a registration file written by resrecover ({type(exc).__name__}: {exc})") from exc


def register_files(
    low_path: str | Path,
    high_path: str | Path,
    out_json: str | Path,
    low_voxel_um: float | None = None,
    high_voxel_um: float | None = None,
    offset_um=None,
    search: bool = True,
    min_peak: float = DEFAULT_MIN_PEAK,
    out_low_on_high: str | Path | None = None,
    low_dataset: str | None = None,
    high_dataset: str | None = None,
) -> RegistrationResult:
    """Register two volume files (any format of :func:`resrecover.io.open_volume`).

    Writes the registration JSON to ``out_json`` and, when ``out_low_on_high`` is given, the low-res
    volume resampled onto the high-res grid (cubic spline, slab by slab; format from its suffix),
    which with the high-res volume forms the training pair.
    """
    with open_volume(low_path, low_dataset, low_voxel_um) as low, open_volume(high_path, high_dataset, high_voxel_um) as high:
        result = register_pair(low, high, offset_um=offset_um, search=search, min_peak=min_peak)
        save_registration(out_json, result)
        if out_low_on_high is not None:
            write_volume_as(out_low_on_high, UpsampledLow(low, scan_grid(result)), result.high_voxel_um,
                            registration_offset_um=list(result.offset_um), registration_peak=result.peak,
                            low_source=str(low_path), high_source=str(high_path))
    return result


def as_registration(registration) -> RegistrationResult | None:
    """A :class:`RegistrationResult` given as itself or as its JSON path (``None`` passes through)."""
    if registration is None or isinstance(registration, RegistrationResult):
        return registration
    return load_registration(registration)


def register_configured_pair(pair: dict, low_path, high_path, out_json, offset_file=None) -> RegistrationResult:
    """Register one ``pairs:`` entry (:func:`register_files`, rule ``pair_register``); the stage offset
    comes from ``pair['offset_um']`` or from ``stage_offset_um`` in ``offset_file``."""
    offset = pair.get("offset_um")
    if offset is None and offset_file:
        offset = json.loads(Path(offset_file).read_text())["stage_offset_um"]
    low_path = pair.get("low") or low_path
    high_path = pair.get("high") or high_path
    return register_files(low_path, high_path, out_json, low_voxel_um=pair.get("low_voxel_um"),
                          high_voxel_um=pair.get("high_voxel_um"), offset_um=offset,
                          search=pair.get("search", True), min_peak=pair.get("min_peak", DEFAULT_MIN_PEAK))
