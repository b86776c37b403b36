"""Large-FOV recovery (docs/own_scans.md): the whole low-res field of view on the high-res grid, out of core.

The output grid has the high-res voxel over the whole low-res FOV
(:func:`resrecover.ownscan.grid.large_fov_grid`), so a voxel ratio ``r`` makes it ``r³`` times
larger than the input. The low-res volume is upsampled onto it lazily, slab by slab
(:class:`~resrecover.ownscan.grid.UpsampledLow`), streamed through the tiled network
(:func:`resrecover.methods.infer.recover_source`) and written slab by slab to HDF5, Zarr, TIFF or
.npy (:func:`resrecover.io.volume_sink`); RAM stays within ``max_memory_gb`` whatever the volume's
size. A region of interest (``roi``, in output voxels) recovers only that box (read with
context). The output size is estimated first (:func:`plan_large_fov`), logged, and the run
refused when the disk cannot hold it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from .. import ResrecoverError
from ..io import check_free_disk, open_volume, volume_sink
from ..io.atomic import format_bytes
from ..io.readers.base import VolumeSource
from ..io.sinks import output_bytes, output_format
from ..methods.device import acquire_device
from ..methods.infer import recover_source
from .grid import UPSAMPLING_ORDER, HighResGrid, UpsampledLow, large_fov_grid, resolve_roi, roi_text
from .registration import as_registration

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RecoveryPlan:
    """What a large-FOV recovery will write (see :func:`plan_large_fov`)."""

    grid: HighResGrid
    roi: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    low_path: str
    format: str = "hdf5"

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in self.roi)

    @property
    def nbytes(self) -> int:
        """Bytes the float32 output takes on disk in its format (:func:`resrecover.io.sinks.output_bytes`)."""
        return output_bytes(self.out_shape, self.format)

    @property
    def origin_um(self) -> tuple[float, float, float]:
        """(z, y, x) µm of the output's voxel-0 outer corner in the low-res frame."""
        return tuple(o + a * self.grid.voxel_um for o, (a, _) in zip(self.grid.origin_um, self.roi))

    def describe(self) -> str:
        """One line for the log: the output's shape, voxel, region, size and format, and its source."""
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
    registration : :class:`~resrecover.ownscan.registration.RegistrationResult` or its JSON path: sets both voxel
        sizes and the grid's phase. Without it, ``high_voxel_um`` (default: the low-res voxel, i.e.
        a plain recovery on the input grid) and ``low_voxel_um`` (default: the file's).
    roi : ``'z0:z1,y0:y1,x0:x1'`` or pairs, in output voxels; ``None`` the whole grid.
    out_path : the output (its suffix sets the format whose size ``nbytes`` estimates; default HDF5).
    """
    registration = as_registration(registration)
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
    out_path : ``.h5`` / ``.zarr`` / ``.tif`` / ``.npy`` (:func:`resrecover.io.volume_sink`). HDF5 and Zarr carry
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
        with acquire_device() as chosen:
            return recover_large_fov(
                weights_path, settings_path, low_path, out_path, registration=registration,
                low_voxel_um=low_voxel_um, high_voxel_um=high_voxel_um, roi=roi,
                inference_config=inference_config, max_memory_gb=max_memory_gb, device=chosen,
                low_dataset=low_dataset, order=order, progress=progress, **provenance,
            )
    # torch only here: plan_large_fov serves the torch-free rule pair_trust
    import torch

    from ..methods.domain import check_input
    from ..methods.modelio import load_model

    registration = as_registration(registration)
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
        domain = check_input(settings, low, low_path, grid.voxel_um)
        attrs = {
            "domain_check": domain.to_json(),
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
                "test_time_augmentation": inference_config.get("test_time_augmentation", "none"),
            })
    log.info("%s: %s recovered %s in %.1f s (%d tiles of %s, slabs of %d slices)", out_path, settings["method"],
             plan.out_shape, seconds, run.n_tiles, run.tile_shape, run.slab_slices)
    return LargeFovRun(plan=plan, output=Path(out_path), seconds=seconds, tiling=run)
