"""Your own scans (docs/own_scans.md): train on a registered low/high-resolution pair, recover the large FOV.

A microscopist has a low-resolution scan of a whole sample (the large field of view, LFOV) and a
high-resolution scan of an interior region. After :mod:`resrecover.register` has placed the second
inside the first:

1. **training pair** (:func:`write_training_pair`, :func:`registered_training_pair`): the high-res
   voxels inside the low-res FOV, and the low-res volume resampled onto exactly those voxels (cubic
   spline); :func:`train_pair` trains DeepNet or SRCNN-3D on it (tile sizes fitted to the overlap).
2. **large-FOV recovery** (:func:`recover_large_fov`): the output grid has the high-res voxel over
   the whole low-res FOV (:func:`large_fov_grid`), so a voxel ratio ``r`` makes it ``r³`` times
   larger than the input. The low-res volume is upsampled onto it lazily, slab by slab
   (:class:`UpsampledLow`), streamed through the tiled network
   (:func:`resrecover.methods.infer.recover_source`) and written slab by slab to HDF5, Zarr, TIFF
   or .npy (:func:`volume_sink`); RAM stays within ``max_memory_gb`` whatever the volume's size. A
   region of interest (``roi``, in output voxels) recovers only that box (read with context).
   The output size is estimated first, logged, and the run refused when the disk cannot hold it.

Grids and frames follow :mod:`resrecover.register`: a volume's frame has its origin at the outer
corner of its voxel (0, 0, 0). The LFOV grid is in phase with the registered high-res scan: its
origin is the high-res origin moved by a whole number of high-res voxels (to within half a voxel
of the low-res corner), so the high-res scan's voxels *are* output voxels
(``LargeFovGrid.high_start_vox``) and the recovered volume can be compared with it voxel for voxel.

The synthetic example (:func:`write_multiscale_example`) cuts such a pair out of a foam phantom
with a known offset; :func:`registration_error_table` and :func:`example_recovery_metrics` score
the registration and the recovery (inside the training region and, the point of the exercise,
outside it) against the phantom.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import ResrecoverError
from .config import ConfigError

log = logging.getLogger(__name__)

#: Spline order of the low-res -> high-res-grid resampling, for training pairs and recovery alike
#: (a network must see at inference the interpolation it was trained on).
UPSAMPLING_ORDER = 3
#: Where the synthetic multiscale example lives in the workflow.
EXAMPLE_DIR = "results/multiscale_example"
#: Methods a pair can be recovered with (networks trained on the pair).
PAIR_METHODS = ("deepnet", "srcnn")
# Target chunks of the HDF5 and Zarr outputs (z, y, x): a few slices by in-plane blocks.
_HDF5_CHUNKS = (16, 128, 128)
_ZARR_CHUNKS = (16, 256, 256)
# Classic TIFF (and ImageJ's format) holds at most 4 GiB; larger TIFF outputs are BigTIFF.
_CLASSIC_TIFF_LIMIT = 2**32 - 2**25


# --------------------------------------------------------------------------------------------
# Regions of interest
# --------------------------------------------------------------------------------------------

_ROI_PATTERN = re.compile(r"^\s*(\d*)\s*:\s*(\d*)\s*,\s*(\d*)\s*:\s*(\d*)\s*,\s*(\d*)\s*:\s*(\d*)\s*$")


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
    from .methods.infer import check_roi

    parsed = parse_roi(roi)
    if parsed is None:
        return check_roi(None, shape)
    filled = tuple((0 if a is None else a, n if b is None else b) for (a, b), n in zip(parsed, shape))
    return check_roi(filled, shape)


def roi_text(roi) -> str:
    """``((z0, z1), ...)`` as ``'z0:z1,y0:y1,x0:x1'``."""
    return ",".join(f"{a}:{b}" for a, b in roi)


# --------------------------------------------------------------------------------------------
# The large-FOV grid and the lazy upsampling onto it
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LargeFovGrid:
    """The output grid of a large-FOV recovery: the high-res voxel over the whole low-res FOV.

    Attributes
    ----------
    origin_um : (z, y, x) µm of the grid's voxel-0 outer corner in the low-res frame (within half a
        high-res voxel of 0).
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
                   high_shape=None) -> LargeFovGrid:
    """The high-res grid over the whole low-res field of view.

    Parameters
    ----------
    low_shape : (Nz, Ny, Nx) of the low-res volume; low_voxel_um its voxel (µm).
    high_voxel_um : output voxel (µm); default the low-res voxel (no upsampling).
    offset_um : registered (z, y, x) µm of the high-res origin in the low-res frame
        (:class:`resrecover.register.RegistrationResult`); the grid is put in phase with it.
        ``None``: the grid starts at the low-res corner.
    high_shape : the high-res scan's shape (recorded with its place on the grid).

    Returns
    -------
    :class:`LargeFovGrid`: every voxel whose centre lies inside the low-res FOV, ``r·N`` voxels per
    axis for an integer ratio ``r`` (``N·Δlow/Δhigh`` rounded to the nearest integer).
    """
    from .register import _positive

    low_voxel_um = _positive(low_voxel_um, "low_voxel_um")
    high_voxel_um = low_voxel_um if high_voxel_um is None else _positive(high_voxel_um, "high_voxel_um")
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
    return LargeFovGrid(
        origin_um=tuple(float(o) for o in origin), shape=shape, voxel_um=float(high_voxel_um),
        low_voxel_um=float(low_voxel_um), low_shape=low_shape, high_start_vox=start,
        high_shape=None if high_shape is None else tuple(int(n) for n in high_shape),
    )


def _slices3(key, shape) -> tuple[tuple[int, int], ...]:
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
    """The low-res volume on a :class:`LargeFovGrid`, computed block by block on demand.

    ``view[z0:z1]`` (or ``view[z0:z1, y0:y1, x0:x1]``) resamples just that block with a cubic
    spline (:func:`resrecover.register.resample_low_to_high`), reading only the low-res voxels under
    it. A grid that is the low-res grid itself is read through unchanged.

    Attributes
    ----------
    shape, voxel_size_um : of the grid; ``grid``; ``low`` (the low-res source); ``order``.
    """

    def __init__(self, low, grid: LargeFovGrid, order: int = UPSAMPLING_ORDER):
        if tuple(int(n) for n in low.shape) != grid.low_shape:
            raise ResrecoverError(f"low-res volume {tuple(low.shape)}; the grid was made for {grid.low_shape}")
        self.low = low
        self.grid = grid
        self.order = int(order)
        self.shape = grid.shape
        self.voxel_size_um = grid.voxel_um

    def __getitem__(self, key) -> np.ndarray:
        from .register import resample_low_to_high

        (z0, z1), (y0, y1), (x0, x1) = _slices3(key, self.shape)
        if self.grid.is_identity:
            return np.asarray(self.low[z0:z1, y0:y1, x0:x1], dtype=np.float32)
        if z1 == z0 or y1 == y0 or x1 == x0:
            return np.zeros((z1 - z0, y1 - y0, x1 - x0), dtype=np.float32)
        return resample_low_to_high(
            self.low, self.grid.origin_um, self.grid.low_voxel_um, self.grid.voxel_um,
            (z1 - z0, y1 - y0, x1 - x0), out_start_vox=(z0, y0, x0), order=self.order,
        )


# --------------------------------------------------------------------------------------------
# Output sinks written slab by slab
# --------------------------------------------------------------------------------------------

OUTPUT_FORMATS = {".h5": "hdf5", ".hdf5": "hdf5", ".zarr": "zarr", ".tif": "tiff", ".tiff": "tiff", ".npy": "npy"}


def output_chunks(shape, target=(16, 128, 128)) -> tuple[int, int, int]:
    """Chunks of about ``target`` voxels that tile ``shape`` evenly (an edge chunk is nearly full,
    so chunked storage of a 528-voxel axis takes 530 voxels, not the 640 of 128-voxel chunks)."""
    return tuple(int(math.ceil(n / math.ceil(n / min(t, n)))) for n, t in zip(shape, target))


def output_bytes(shape, fmt: str = "hdf5") -> int:
    """Bytes the float32 output takes on disk: chunk-padded for HDF5 and Zarr (uncompressed)."""
    shape = tuple(int(n) for n in shape)
    if fmt in ("hdf5", "zarr"):
        chunks = output_chunks(shape, _ZARR_CHUNKS if fmt == "zarr" else _HDF5_CHUNKS)
        shape = tuple(math.ceil(n / c) * c for n, c in zip(shape, chunks))
    return int(np.prod(shape)) * 4


def output_format(path) -> str:
    """``hdf5``, ``zarr``, ``tiff`` or ``npy`` from the output path's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ResrecoverError(
            f"{path}: cannot write a recovered volume as '{suffix or '(no suffix)'}'; expected .h5, .zarr, .tif or .npy"
        )
    return OUTPUT_FORMATS[suffix]


class _TiffSink:
    """Pages appended in z order (the tiling writes slabs in increasing z)."""

    def __init__(self, writer, shape, voxel_size_um, imagej: bool):
        self.writer = writer
        self.shape = shape
        self.next = 0
        self.imagej = imagej
        self.voxel = float(voxel_size_um)

    def __setitem__(self, key, block):
        z0, z1, _ = key.indices(self.shape[0])
        if z0 != self.next:
            raise ResrecoverError(f"TIFF output: slab {z0}:{z1} out of order (expected slice {self.next} next)")
        resolution = (1.0 / self.voxel, 1.0 / self.voxel)
        for page in np.asarray(block, dtype=np.float32):
            if self.imagej:  # one (1, ny, nx) page per call: ImageJ counts them as slices
                self.writer.write(page[None], contiguous=True, resolution=resolution,
                                  metadata={"spacing": self.voxel, "unit": "micron"})
            else:
                self.writer.write(page, contiguous=True, resolution=resolution, resolutionunit="MICROMETER",
                                  metadata={"axes": "YX"})
        self.next = z1


class VolumeSink:
    """What :func:`volume_sink` yields: ``sink[z0:z1] = block``, ``shape``, and ``attrs`` written at the end."""

    def __init__(self, target, shape, attrs):
        self.target = target
        self.shape = shape
        self.attrs = attrs

    def __setitem__(self, key, block):
        self.target[key] = block


@contextlib.contextmanager
def volume_sink(path, shape, voxel_size_um: float, **attrs: Any):
    """Open an output volume to be written slab by slab; it appears under ``path`` only when complete.

    Parameters
    ----------
    path : ``.h5`` (dataset ``volume``, chunked), ``.zarr``, ``.tif`` (ImageJ stack with the voxel
        size; BigTIFF beyond 4 GB, resolution tags only) or ``.npy``.
    shape : (nz, ny, nx); float32.
    voxel_size_um : voxel edge (µm).
    attrs : metadata (HDF5 / Zarr attributes; TIFF and .npy keep only the voxel size). More can be
        added to ``sink.attrs`` inside the block.

    Yields
    ------
    :class:`VolumeSink`. Every slice must be written (TIFF: in increasing z).
    """
    from .io import atomic_output, check_free_disk
    from .io.formats import _json_safe
    from .io.volume import provenance

    fmt = output_format(path)
    shape = tuple(int(n) for n in shape)
    nbytes = int(np.prod(shape)) * 4
    check_free_disk(path, output_bytes(shape, fmt))
    meta = {"voxel_size_um": float(voxel_size_um), **provenance(), **attrs}
    with atomic_output(path) as tmp:
        if fmt == "hdf5":
            import h5py

            with h5py.File(tmp, "w") as fh:
                ds = fh.create_dataset("volume", shape=shape, dtype=np.float32,
                                       chunks=output_chunks(shape, _HDF5_CHUNKS))
                sink = VolumeSink(ds, shape, meta)
                yield sink
                for key, value in sink.attrs.items():
                    if value is not None:
                        fh.attrs[key] = _json_safe(value)
                ds.attrs["voxel_size_um"] = float(voxel_size_um)
        elif fmt == "zarr":
            import zarr

            tmp.unlink()  # atomic_output made a file; a Zarr array is a folder
            array = zarr.open_array(str(tmp), mode="w", shape=shape, chunks=output_chunks(shape, _ZARR_CHUNKS),
                                    dtype="float32")
            sink = VolumeSink(array, shape, meta)
            yield sink
            array.attrs.update({k: _json_safe(v) for k, v in sink.attrs.items() if v is not None})
        elif fmt == "tiff":
            import tifffile

            imagej = nbytes < _CLASSIC_TIFF_LIMIT
            with tifffile.TiffWriter(tmp, imagej=imagej, bigtiff=not imagej) as writer:
                target = _TiffSink(writer, shape, voxel_size_um, imagej)
                yield VolumeSink(target, shape, meta)
                if target.next != shape[0]:
                    raise ResrecoverError(f"{path}: {target.next} of {shape[0]} slices written")
        else:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
            yield VolumeSink(out, shape, meta)
            out.flush()
            del out


# --------------------------------------------------------------------------------------------
# Large-FOV recovery
# --------------------------------------------------------------------------------------------


def _as_registration(registration):
    from .register import RegistrationResult, load_registration

    if registration is None or isinstance(registration, RegistrationResult):
        return registration
    return load_registration(registration)


@dataclasses.dataclass(frozen=True)
class RecoveryPlan:
    """What a large-FOV recovery will write (see :func:`plan_large_fov`)."""

    grid: LargeFovGrid
    roi: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    low_path: str
    format: str = "hdf5"

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in self.roi)

    @property
    def nbytes(self) -> int:
        """Bytes the float32 output takes on disk in its format (:func:`output_bytes`)."""
        return output_bytes(self.out_shape, self.format)

    @property
    def origin_um(self) -> tuple[float, float, float]:
        """(z, y, x) µm of the output's voxel-0 outer corner in the low-res frame."""
        return tuple(o + a * self.grid.voxel_um for o, (a, _) in zip(self.grid.origin_um, self.roi))

    def describe(self) -> str:
        from .io.atomic import format_bytes

        g = self.grid
        whole = self.out_shape == g.shape
        where = "the whole field of view" if whole else f"ROI {roi_text(self.roi)} of the {g.shape} grid"
        source = (f"on the input's own grid ({g.low_shape} voxels)" if g.is_identity else
                  f"from the low-res {g.low_shape} voxels of {g.low_voxel_um:g} µm upsampled {g.ratio:.3g}x")
        return (
            f"output: {self.out_shape[0]}x{self.out_shape[1]}x{self.out_shape[2]} voxels of {g.voxel_um:g} µm "
            f"({where}), float32, {format_bytes(self.nbytes)} as {self.format}; {source}"
        )


def plan_large_fov(low, registration=None, low_voxel_um=None, high_voxel_um=None, roi=None,
                   low_dataset: str | None = None, out_path=None) -> RecoveryPlan:
    """The output grid, ROI and size of a large-FOV recovery, without reading the volume.

    Parameters
    ----------
    low : low-res volume: a path :func:`resrecover.io.open_volume` reads, or an open source.
    registration : :class:`~resrecover.register.RegistrationResult` or its JSON path: sets both voxel
        sizes and the grid's phase. Without it, ``high_voxel_um`` (default: the low-res voxel, i.e.
        a plain recovery on the input grid) and ``low_voxel_um`` (default: the file's).
    roi : ``'z0:z1,y0:y1,x0:x1'`` or pairs, in output voxels; ``None`` the whole grid.
    out_path : the output (its suffix sets the format whose size ``nbytes`` estimates; default HDF5).
    """
    from .io.formats import VolumeSource, open_volume

    registration = _as_registration(registration)
    if registration is not None:
        low_voxel_um, high_voxel_um = registration.low_voxel_um, registration.high_voxel_um
    if isinstance(low, VolumeSource) or (hasattr(low, "shape") and hasattr(low, "voxel_size_um")):
        source, opened = low, False
    else:
        source, opened = open_volume(low, low_dataset, low_voxel_um), True
    try:
        shape = tuple(int(n) for n in source.shape)
        voxel = float(low_voxel_um if low_voxel_um is not None else source.voxel_size_um)
        path = str(getattr(source, "path", low))
    finally:
        if opened:
            source.close()
    if registration is not None:
        if shape != tuple(registration.low_shape):
            raise ResrecoverError(
                f"{path}: shape {shape} differs from the registered low-res volume {tuple(registration.low_shape)}; "
                "expected the volume the registration was made with"
            )
        grid = large_fov_grid(shape, voxel, high_voxel_um, registration.offset_um, registration.high_shape)
    else:
        grid = large_fov_grid(shape, voxel, high_voxel_um)
    fmt = "hdf5" if out_path is None else output_format(out_path)
    return RecoveryPlan(grid=grid, roi=resolve_roi(roi, grid.shape), low_path=path, format=fmt)


@dataclasses.dataclass
class LargeFovRun:
    """What :func:`recover_large_fov` did."""

    plan: RecoveryPlan
    output: Path
    seconds: float
    tiling: Any  # resrecover.methods.tiling.TilingRun


def recover_large_fov(
    weights_path,
    settings_path,
    low_path,
    out_path,
    *,
    registration=None,
    low_voxel_um: float | None = None,
    high_voxel_um: float | None = None,
    roi=None,
    inference_config: dict | None = None,
    max_memory_gb: float | None = None,
    device=None,
    low_dataset: str | None = None,
    order: int = UPSAMPLING_ORDER,
    progress: bool = True,
    **provenance: Any,
) -> LargeFovRun:
    """Recover the whole low-res field of view (or an ROI of it) on the high-res grid, out of core.

    Parameters
    ----------
    weights_path, settings_path : the trained model (``model.safetensors`` + ``model.json``).
    low_path : the low-res volume (any format of :func:`resrecover.io.open_volume`;
        ``file.h5:/dataset`` or ``low_dataset`` name an inner array).
    out_path : ``.h5`` / ``.zarr`` / ``.tif`` / ``.npy`` (:func:`volume_sink`). HDF5 and Zarr carry
        ``voxel_size_um``, ``origin_um`` (the output's corner in the low-res frame, µm), ``roi``,
        ``grid_shape``, ``high_start_vox`` (the high-res scan's place on the grid), the method,
        model hash, inference settings and ``provenance``.
    registration, low_voxel_um, high_voxel_um, roi : see :func:`plan_large_fov`.
    inference_config : ``config['inference']`` (tiles, overlap, blending, batch); default the
        schema's defaults.
    max_memory_gb : RAM budget (GB) of the recovery on top of the loaded model (see
        :func:`resrecover.methods.infer.recover_source`); ``None``: 1 GB of tiling buffers.
    device : torch device; ``None`` takes a free GPU (locked) or the CPU.
    order : spline order of the upsampling (3, as the training pairs).

    Returns
    -------
    :class:`LargeFovRun` (plan, output path, seconds, tiling details).

    Raises
    ------
    DiskSpaceError : the output would not fit on the disk (checked before any work).
    ResrecoverError : unreadable input, a registration made for another volume, a bad ROI, a budget
        too small for one tile.
    """
    if device is None:
        from .methods.device import acquire_device

        with acquire_device() as chosen:
            return recover_large_fov(
                weights_path, settings_path, low_path, out_path, registration=registration,
                low_voxel_um=low_voxel_um, high_voxel_um=high_voxel_um, roi=roi,
                inference_config=inference_config, max_memory_gb=max_memory_gb, device=chosen,
                low_dataset=low_dataset, order=order, progress=progress, **provenance,
            )
    import torch

    from .io import check_free_disk, open_volume
    from .methods.infer import recover_source
    from .methods.modelio import load_model

    registration = _as_registration(registration)
    inference_config = dict(inference_config or {})
    model, settings = load_model(weights_path, settings_path, device=device)
    voxel = registration.low_voxel_um if registration is not None else low_voxel_um
    with open_volume(low_path, low_dataset, voxel) as low:
        plan = plan_large_fov(low, registration, low_voxel_um, high_voxel_um, roi, out_path=out_path)
        log.info("%s: %s", out_path, plan.describe())
        check_free_disk(out_path, plan.nbytes)
        view = UpsampledLow(low, plan.grid, order=order)
        grid = plan.grid
        high_start = None
        if grid.high_start_vox is not None:
            high_start = [s - a for s, (a, _) in zip(grid.high_start_vox, plan.roi)]
        attrs = {
            "method": settings["method"],
            "model_sha256": settings.get("weights_sha256", ""),
            "input": str(low_path),
            "low_voxel_um": grid.low_voxel_um,
            "origin_um": list(plan.origin_um),
            "grid_origin_um": list(grid.origin_um),
            "grid_shape": list(grid.shape),
            "roi": json.dumps([list(r) for r in plan.roi]),
            "high_start_vox": None if high_start is None else list(high_start),
            "high_shape": None if grid.high_shape is None else list(grid.high_shape),
            "upsampling_order": int(order),
            "registration_offset_um": None if registration is None else list(registration.offset_um),
            "device": str(device),
            "torch_version": str(torch.__version__),
            **provenance,
        }
        started = time.perf_counter()
        with volume_sink(out_path, plan.out_shape, grid.voxel_um, **attrs) as sink:
            run = recover_source(model, settings, view, sink, inference_config, device, roi=plan.roi,
                                 max_memory_gb=max_memory_gb, progress=progress)
            seconds = time.perf_counter() - started
            sink.attrs["seconds"] = round(seconds, 3)
            sink.attrs["inference"] = json.dumps({
                "tile_shape": run.tile_shape, "overlap": run.overlap, "batch_size": run.batch_size,
                "slab_slices": run.slab_slices, "backoffs": run.backoffs,
                "blending": inference_config.get("blending", "triangular"),
            })
    log.info("%s: %s recovered %s in %.1f s (%d tiles of %s, slabs of %d slices)", out_path, settings["method"],
             plan.out_shape, seconds, run.n_tiles, run.tile_shape, run.slab_slices)
    return LargeFovRun(plan=plan, output=Path(out_path), seconds=seconds, tiling=run)


# --------------------------------------------------------------------------------------------
# Training on a registered pair
# --------------------------------------------------------------------------------------------


def overlap_box(registration) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """High-res voxels ``((z0, z1), (y0, y1), (x0, x1))`` whose centres lie inside the low-res FOV.

    Raises :class:`~resrecover.register.RegistrationError` when the scans do not overlap.
    """
    from .register import RegistrationError

    registration = _as_registration(registration)
    dh, dl = registration.high_voxel_um, registration.low_voxel_um
    box = []
    for offset, n_low, n_high in zip(registration.offset_um, registration.low_shape, registration.high_shape):
        lo = max(0, math.ceil(-offset / dh - 0.5 - 1e-9))
        hi = min(n_high, math.floor((n_low * dl - offset) / dh - 0.5 + 1e-9) + 1)
        box.append((lo, hi))
    if any(b - a < 1 for a, b in box):
        raise RegistrationError(f"the registered scans do not overlap (high-res voxels inside the low-res FOV: {box})")
    return tuple(box)


class _Crop:
    """``source`` restricted to a box, read slab by slab (``crop[z0:z1]``)."""

    def __init__(self, source, box):
        self.source = source
        self.box = box
        self.shape = tuple(b - a for a, b in box)

    def __getitem__(self, key):
        (z0, z1), (y0, y1), (x0, x1) = _slices3(key, self.shape)
        (bz, _), (by, _), (bx, _) = self.box
        return np.asarray(self.source[bz + z0 : bz + z1, by + y0 : by + y1, bx + x0 : bx + x1], dtype=np.float32)


def _training_views(low, high, registration, order):
    box = overlap_box(registration)
    grid = large_fov_grid(registration.low_shape, registration.low_voxel_um, registration.high_voxel_um,
                          registration.offset_um, registration.high_shape)
    # The high-res box on the phase-aligned grid: the same samples the large-FOV recovery feeds the network.
    grid_box = tuple((s + a, s + b) for s, (a, b) in zip(grid.high_start_vox, box))
    if any(a < 0 or b > n for (a, b), n in zip(grid_box, grid.shape)):
        grid_box = tuple((max(a, 0), min(b, n)) for (a, b), n in zip(grid_box, grid.shape))
        box = tuple((a - s, b - s) for s, (a, b) in zip(grid.high_start_vox, grid_box))
    return _Crop(UpsampledLow(low, grid, order), grid_box), _Crop(high, box), box


def registered_training_pair(low, high, registration, order: int = UPSAMPLING_ORDER):
    """The training pair of a registered scan pair, in memory.

    Parameters
    ----------
    low, high : the two volumes (arrays or open sources); registration : result or JSON path.

    Returns
    -------
    ``(lres, hres, box)``: the low-res volume resampled onto the high-res voxels of the overlap and
    those voxels (both float32, same shape), and the overlap ``box`` in high-res voxels.
    """
    registration = _as_registration(registration)
    lres, hres, box = _training_views(low, high, registration, order)
    return lres[:], hres[:], box


@contextlib.contextmanager
def open_registered_pair(low_path, high_path, registration, low_dataset=None, high_dataset=None):
    """Open the two scans of a registration (voxel sizes from it), checking their shapes against it.

    Yields ``(low, high, registration)`` (lazy sources and the :class:`RegistrationResult`).
    """
    from .io import open_volume

    registration = _as_registration(registration)
    with open_volume(low_path, low_dataset, registration.low_voxel_um) as low, \
            open_volume(high_path, high_dataset, registration.high_voxel_um) as high:
        for path, source, expected, which in ((low_path, low, registration.low_shape, "low"),
                                              (high_path, high, registration.high_shape, "high")):
            if tuple(source.shape) != tuple(expected):
                raise ResrecoverError(f"{path}: shape {tuple(source.shape)} differs from the registered {which}-res "
                                      f"volume {tuple(expected)}; expected the scans the registration was made with")
        yield low, high, registration


def write_training_pair(low_path, high_path, registration, out_lres, out_hres, *, low_dataset=None,
                        high_dataset=None, order: int = UPSAMPLING_ORDER, **attrs) -> tuple:
    """Write the training pair of a registered scan pair as two HDF5 volumes, slab by slab.

    ``out_lres`` holds the low-res volume resampled onto the high-res voxels inside the low-res FOV,
    ``out_hres`` those high-res voxels; both carry ``voxel_size_um`` (high-res), ``overlap_box`` and
    the registration. Returns the overlap box (high-res voxels).
    """
    from .io import write_volume_as

    with open_registered_pair(low_path, high_path, registration, low_dataset, high_dataset) as (low, high, registration):
        lres, hres, box = _training_views(low, high, registration, order)
        meta = dict(overlap_box=[list(b) for b in box], registration_offset_um=list(registration.offset_um),
                    registration_peak=registration.peak, low_source=str(low_path), high_source=str(high_path),
                    upsampling_order=int(order), **attrs)
        write_volume_as(out_lres, lres, registration.high_voxel_um, **meta)
        write_volume_as(out_hres, hres, registration.high_voxel_um, **meta)
    log.info("training pair: %s high-res voxels of the overlap %s", tuple(b - a for a, b in box), box)
    return box


def pair_training_config(config: dict, method: str, shape, iterations: int | None = None) -> dict:
    """A copy of ``config`` whose ``method`` block fits a training pair of ``shape``.

    The tile (DeepNet ``tile_px``) or patch (SRCNN ``patch_px``) is reduced to the largest that fits
    the overlap (a multiple of ``2**depth`` for DeepNet), with a log line; ``iterations`` replaces the
    block's count when given.
    """
    if method not in PAIR_METHODS:
        raise ResrecoverError(f"method: {method!r} cannot be trained on a pair; expected one of {', '.join(PAIR_METHODS)}")
    config = copy.deepcopy(config)
    block = config[method]
    nz, ny, nx = (int(n) for n in shape)
    if iterations:
        block["iterations"] = int(iterations)
        block["checkpoint_every"] = min(int(block["checkpoint_every"]), int(iterations))
    if method == "deepnet":
        multiple = 2 ** int(block["depth"])
        fit = min(ny, nx) // multiple * multiple
        if fit < multiple or nz < int(block["n_slices"]):
            raise ResrecoverError(
                f"training pair of {shape} voxels is too small for DeepNet (depth {block['depth']}, "
                f"{block['n_slices']} slices); expected at least {block['n_slices']}x{multiple}x{multiple}"
            )
        if block["tile_px"] > fit:
            log.info("deepnet.tile_px %d -> %d: the largest tile inside the %s overlap", block["tile_px"], fit, shape)
            block["tile_px"] = fit
    else:
        patch, stride = min(int(block["patch_px"]), nz, ny, nx), int(block["patch_stride_px"])

        def n_patches(p, s):
            return int(np.prod([(n - p) // s + 1 for n in (nz, ny, nx)]))

        # the training/validation split needs a few patches: shrink the patch until it has them
        while patch != block["patch_px"] or n_patches(patch, stride) < 4:
            stride = max(1, min(stride, patch // 2))
            if n_patches(patch, stride) >= 4 or patch <= 4:
                break
            patch = max(4, patch * 3 // 4)
        if (patch, stride) != (block["patch_px"], block["patch_stride_px"]):
            log.info("srcnn.patch_px %d -> %d, patch_stride_px %d -> %d: patches that fit the %s overlap",
                     block["patch_px"], patch, block["patch_stride_px"], stride, shape)
            block["patch_px"], block["patch_stride_px"] = patch, stride
    return config


def train_pair(method: str, lres, hres, config: dict, out_dir=None, *, out_weights=None, out_settings=None,
               out_log=None, checkpoint_dir=None, seed: int = 0, iterations: int | None = None,
               threads: int | None = None, device=None, prefer_device: str = "auto") -> dict:
    """Train ``method`` on a registered pair: ``lres`` (low-res on the high-res grid) -> ``hres``.

    Parameters
    ----------
    lres, hres : same-shape arrays or HDF5 paths (:func:`write_training_pair`).
    config : validated config (the ``deepnet:``/``srcnn:`` block is fitted with
        :func:`pair_training_config`).
    out_dir : folder for ``model.safetensors``, ``model.json``, ``train_log.csv`` and ``checkpoints/``;
        or give the four paths one by one.
    iterations : replaces the block's iteration count (e.g. a pair's ``iterations``).
    threads : torch CPU threads (``None``: ``compute.torch_threads``, else torch's default).
    device : torch device; ``None`` takes a free GPU (locked) or the CPU.

    The loss counts every voxel of the overlap (no CT field-of-view mask: own scans are already
    cropped to their reconstructed region). Returns :func:`resrecover.methods.training.train_model`'s summary.
    """
    from .io import volume_info
    from .methods.device import torch_thread_count
    from .methods.training import train_model

    if out_dir is not None:
        out_dir = Path(out_dir)
        out_weights = out_weights or out_dir / "model.safetensors"
        out_settings = out_settings or out_dir / "model.json"
        out_log = out_log or out_dir / "train_log.csv"
        checkpoint_dir = checkpoint_dir or out_dir / "checkpoints"
    if None in (out_weights, out_settings, out_log, checkpoint_dir):
        raise ResrecoverError("train_pair: give out_dir, or out_weights, out_settings, out_log and checkpoint_dir")
    threads = threads or torch_thread_count(config)
    if device is None:
        from .methods.device import acquire_device

        with acquire_device(prefer_device) as chosen:
            return train_pair(method, lres, hres, config, out_weights=out_weights, out_settings=out_settings,
                              out_log=out_log, checkpoint_dir=checkpoint_dir, seed=seed, iterations=iterations,
                              threads=threads, device=chosen)
    shape = volume_info(lres)["shape"] if isinstance(lres, (str, Path)) else np.shape(lres)
    fitted = pair_training_config(config, method, shape, iterations)
    return train_model(method, lres, hres, fitted, out_weights, out_settings, out_log, checkpoint_dir, seed,
                       device, mask=None, threads=threads)


# --------------------------------------------------------------------------------------------
# The workflow's pairs: the config block and the synthetic example
# --------------------------------------------------------------------------------------------


def volume_file(spec: str) -> str:
    """The file or folder of a volume spec (``scan.h5:/dataset`` -> ``scan.h5``), for Snakemake inputs."""
    from .io.formats import split_internal_path

    return str(split_internal_path(spec)[0])


def configured_pairs(config: dict) -> dict[str, dict]:
    """The validated ``pairs:`` block by name, plus the pair ``example`` when the example is enabled.

    Every entry has the schema's keys filled (``methods``, ``roi``, ``offset_um`` ...) and
    ``offset_file``: a JSON whose ``stage_offset_um`` gives the stage offset (the example's
    ``truth.json``), else ``None``.

    Raises
    ------
    ConfigError : a repeated name, the reserved name ``example`` while the example is enabled, or a
        malformed ``roi`` (one line naming ``pairs[i].key``).
    """
    pairs: dict[str, dict] = {}
    example = config.get("multiscale_example", {})
    for i, entry in enumerate(config.get("pairs", []) or []):
        name = entry["name"]
        if name in pairs:
            raise ConfigError(f"pairs[{i}].name: {name!r} repeats an earlier pair; expected unique names")
        if name == "example" and example.get("enabled"):
            raise ConfigError(f"pairs[{i}].name: 'example' is the multiscale example's name; choose another")
        try:
            parse_roi(entry.get("roi"))
        except ResrecoverError as exc:
            raise ConfigError(f"pairs[{i}].{exc}") from None
        pairs[name] = {"offset_file": None, **entry}
    if example.get("enabled"):
        try:
            parse_roi(example.get("roi"))
        except ResrecoverError as exc:
            raise ConfigError(f"multiscale_example.{exc}") from None
        pairs["example"] = {
            "name": "example",
            "low": f"{EXAMPLE_DIR}/low.tif",
            "high": f"{EXAMPLE_DIR}/high.h5",
            "low_voxel_um": None,
            "high_voxel_um": None,
            "offset_um": None,
            "offset_file": f"{EXAMPLE_DIR}/truth.json",
            "search": True,
            "min_peak": example.get("min_peak", 0.5),
            "methods": list(example.get("methods", ["deepnet"])),
            "roi": example.get("roi"),
            "iterations": example.get("iterations"),
        }
    return pairs


def pair_targets(config: dict) -> list[str]:
    """The final outputs of the pairs (recovered volumes; the example's scores)."""
    targets = []
    for name, pair in configured_pairs(config).items():
        targets += [f"results/pairs/{name}/recovered/{m}.h5" for m in pair["methods"]]
    if config.get("multiscale_example", {}).get("enabled"):
        targets += ["results/pairs/example/registration_error.csv", "results/pairs/example/recovery_metrics.csv"]
    return targets


def register_configured_pair(pair: dict, low_path, high_path, out_json, offset_file=None):
    """Register one ``pairs:`` entry (:func:`resrecover.register.register_files`); stage offset from
    ``pair['offset_um']`` or from ``stage_offset_um`` in ``offset_file``."""
    from .register import register_files

    offset = pair.get("offset_um")
    if offset is None and offset_file:
        offset = json.loads(Path(offset_file).read_text())["stage_offset_um"]
    low_path = pair.get("low") or low_path
    high_path = pair.get("high") or high_path
    return register_files(low_path, high_path, out_json, low_voxel_um=pair.get("low_voxel_um"),
                          high_voxel_um=pair.get("high_voxel_um"), offset_um=offset,
                          search=pair.get("search", True), min_peak=pair.get("min_peak", 0.5))


def _interior_start(n: int, m: int, ratio: int) -> int:
    """A centred start for an interior box of ``m`` in ``n`` voxels, off the low-res grid."""
    start = (n - m) // 2
    if start % ratio == 0:  # a whole number of low-res voxels would make the registration too easy
        start += 1
    return start


def write_multiscale_example(phantom_path, out_low, out_high, out_truth, *, ratio: int = 3,
                             high_extent_um: float | None = None, noise: float = 0.05,
                             stage_error_um=(4.0, -5.0, 3.0), seed: int = 0) -> dict:
    """A synthetic "own scans" pair cut out of a phantom, with the answer.

    The phantom (material fraction, voxel ``Δ``) is the truth. The low-res scan is the whole
    phantom blurred by a Gaussian of ``ratio·Δ/2`` µm and block-averaged by ``ratio`` (voxel
    ``ratio·Δ``, corners shared), written as an ImageJ TIFF; the high-res scan a centred cube of
    ``high_extent_um`` (default half the FOV) at voxel ``Δ`` whose corner is a non-integer number of
    low-res voxels from the low-res corner, as HDF5. Each gets its own Gaussian noise (``noise``,
    material-fraction units; seeded). ``truth.json`` holds the true offset, a stage offset off by
    ``stage_error_um`` (as motor positions are) and where the high-res scan lies in the phantom.

    Returns the contents of ``truth.json``.
    """
    from .io import atomic_output, read_volume, write_volume_as
    from .multiscale import make_multiscale_pair

    volume, attrs = read_volume(phantom_path)
    voxel = float(attrs["voxel_size_um"])
    ratio = int(ratio)
    n = np.asarray(volume.shape) // ratio * ratio
    volume = volume[: n[0], : n[1], : n[2]]
    if high_extent_um is None:
        m = n // 2
    else:
        m = np.minimum(int(round(high_extent_um / voxel)), n - 4 * ratio)
    m = np.broadcast_to(m, (3,))
    if np.any(m < 8):
        raise ResrecoverError(f"multiscale_example.high_extent_um: a {tuple(m)}-voxel high-res scan is too small; "
                              "expected at least 8 voxels per axis")
    start = tuple(_interior_start(int(a), int(b), ratio) for a, b in zip(n, m))
    low, high, offset = make_multiscale_pair(volume, voxel, ratio=ratio, roi_start_vox=start,
                                             roi_shape_vox=tuple(int(v) for v in m), noise=noise, seed=seed)
    write_volume_as(out_low, low, ratio * voxel)
    write_volume_as(out_high, high, voxel, seed=seed, phantom=str(phantom_path))
    truth = {
        "low": Path(out_low).name, "high": Path(out_high).name, "phantom": str(phantom_path),
        "ratio": ratio, "low_voxel_um": ratio * voxel, "high_voxel_um": voxel,
        "true_offset_um": list(offset),
        "stage_error_um": [float(e) for e in stage_error_um],
        "stage_offset_um": [o + float(e) for o, e in zip(offset, stage_error_um)],
        "high_start_vox": list(start), "high_shape": [int(v) for v in m],
        "blur_sigma_um": ratio * voxel / 2.0, "noise": float(noise), "seed": int(seed),
        "origin": "voxel-0 outer corner (resrecover.register)",
    }
    with atomic_output(out_truth) as tmp:
        Path(tmp).write_text(json.dumps(truth, indent=2) + "\n")
    return truth


def registration_error_table(registration, truth_path, out_csv=None):
    """The registration's error against the known offset, per axis and as a distance.

    Columns: ``axis`` (z, y, x, distance), ``true_offset_um``, ``stage_offset_um``,
    ``registered_offset_um``, ``error_um``, ``error_high_vox``, ``stage_error_um``, ``peak``.
    Written to ``out_csv`` when given; returned as a DataFrame.
    """
    import pandas as pd

    from .io import atomic_write_csv

    registration = _as_registration(registration)
    truth = json.loads(Path(truth_path).read_text())
    true = np.asarray(truth["true_offset_um"], dtype=np.float64)
    stage = np.asarray(truth["stage_offset_um"], dtype=np.float64)
    found = np.asarray(registration.offset_um, dtype=np.float64)
    rows = [
        {"axis": axis, "true_offset_um": t, "stage_offset_um": s, "registered_offset_um": f, "error_um": f - t,
         "error_high_vox": (f - t) / registration.high_voxel_um, "stage_error_um": s - t}
        for axis, t, s, f in zip("zyx", true, stage, found)
    ]
    rows.append({"axis": "distance", "true_offset_um": float(np.linalg.norm(true)),
                 "stage_offset_um": float(np.linalg.norm(stage)), "registered_offset_um": float(np.linalg.norm(found)),
                 "error_um": float(np.linalg.norm(found - true)),
                 "error_high_vox": float(np.linalg.norm(found - true)) / registration.high_voxel_um,
                 "stage_error_um": float(np.linalg.norm(stage - true))})
    table = pd.DataFrame(rows)
    table["peak"] = registration.peak
    if out_csv is not None:
        atomic_write_csv(table, out_csv)
    return table


def example_recovery_metrics(recovered: dict, phantom_path, low_path, out_csv=None, *, data_range: float = 1.0,
                             window_px: int = 7, order: int = UPSAMPLING_ORDER):
    """Score large-FOV recoveries against the phantom, inside and outside the training region.

    Parameters
    ----------
    recovered : ``{method: path}`` of :func:`recover_large_fov` HDF5 outputs (with ``origin_um``,
        ``high_start_vox``, ``high_shape``).
    phantom_path : the truth on the high-res grid (its corner is the low-res corner).
    low_path : the low-res scan; its plain upsampling onto the same grid is scored too (method
        ``upsampled``, the baseline a recovery has to beat).

    Returns
    -------
    DataFrame with ``method``, ``region`` (``training`` = inside the high-res scan the model was
    trained on, ``outside`` = the rest of the field of view), ``mse``, ``psnr``, ``ssim``,
    ``n_voxels``; written to ``out_csv`` when given.
    """
    import pandas as pd

    from .evaluate.metrics import image_metrics
    from .io import atomic_write_csv, open_volume, read_volume
    from .register import resample_low_to_high

    truth_all, truth_attrs = read_volume(phantom_path)
    rows = []
    baseline_done = False
    for method, path in recovered.items():
        volume, attrs = read_volume(path)
        voxel = float(attrs["voxel_size_um"])
        origin = np.asarray(attrs["origin_um"], dtype=np.float64)
        shift = np.round(origin / voxel).astype(int)
        if np.any(np.abs(origin - shift * voxel) > 0.25 * voxel) or abs(voxel - float(truth_attrs["voxel_size_um"])) > 1e-6:
            raise ResrecoverError(f"{path}: grid (origin {origin} µm, voxel {voxel:g} µm) is not the phantom's grid")
        box = [(max(0, s), min(t, s + n)) for s, n, t in zip(shift, volume.shape, truth_all.shape)]
        truth = truth_all[box[0][0] : box[0][1], box[1][0] : box[1][1], box[2][0] : box[2][1]]
        crop = tuple(slice(a - s, b - s) for (a, b), s in zip(box, shift))
        volume = volume[crop]
        training = np.zeros(truth.shape, dtype=bool)
        start = np.asarray(attrs["high_start_vox"], dtype=int) - [c.start for c in crop]
        stop = start + np.asarray(attrs["high_shape"], dtype=int)
        training[tuple(slice(max(a, 0), max(b, 0)) for a, b in zip(start, stop))] = True
        candidates = [(method, volume)]
        if not baseline_done:
            with open_volume(low_path, voxel_size_um=float(attrs["low_voxel_um"])) as low:
                upsampled = resample_low_to_high(low, origin + np.asarray([c.start for c in crop]) * voxel,
                                                 float(attrs["low_voxel_um"]), voxel, truth.shape, order=order)
            candidates.insert(0, ("upsampled", upsampled))
            baseline_done = True
        for name, candidate in candidates:
            for region, mask in (("training", training), ("outside", ~training)):
                if mask.sum() == 0:
                    continue
                scores = image_metrics(candidate, truth, data_range, window_px=window_px, mask=mask)
                rows.append({"method": name, "region": region, **scores, "n_voxels": int(mask.sum())})
    table = pd.DataFrame(rows, columns=["method", "region", "mse", "psnr", "ssim", "n_voxels"])
    if out_csv is not None:
        atomic_write_csv(table, out_csv)
    return table
