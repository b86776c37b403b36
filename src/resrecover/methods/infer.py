"""Recover a whole volume with a trained network, out of core (docs/design.md#recovery; paper §2.1.1).

:func:`recover_volume` is what the ``recover_network`` rule calls: it loads the model
(:func:`resrecover.methods.modelio.load_model`, which applies the stored input normalization and
returns material fraction), opens the input lazily, streams it through the tiling of
:mod:`resrecover.methods.tiling` (2.5D slice stacks for DeepNet, cubic tiles for SRCNN-3D) and
writes a chunked float32 HDF5 under a temporary name that is renamed when complete.

:func:`recover_source` is the engine under it, for any lazy source and any writable sink (the
large-FOV recovery of :mod:`resrecover.ownscan` feeds it the low-res volume upsampled slab by slab):
it applies a region of interest (read with a margin of context so that the ROI's faces are not
padded), and splits a RAM budget between the network's activations and the tiling buffers.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from resrecover import ResrecoverError
from resrecover.methods.registry import check_network
from resrecover.methods.tiling import TilingRun, predict_volume_25d, predict_volume_3d

log = logging.getLogger(__name__)


# In-plane transforms averaged at inference, each (flip y, flip x, quarter turns): the networks were
# trained on tiles flipped and turned at random in-plane (``training.tasks``), so every element of
# that dihedral group is an input they know. 'half_turn' is two of the eight (identity and the 180°
# turn, both axes flipped: the cheapest pair, enough for a variance), 'flips' four, 'dihedral' all.
TEST_TIME_AUGMENTATIONS = {
    "none": ((0, 0, 0),),
    "half_turn": ((0, 0, 0), (1, 1, 0)),
    "flips": ((0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0)),
    "dihedral": tuple((fy, fx, turns) for turns in (0, 1) for fy in (0, 1) for fx in (0, 1)),
}


def augmentation_transforms(name: str) -> tuple[tuple[int, int, int], ...]:
    """The in-plane transforms (flip y, flip x, quarter turns) of a ``test_time_augmentation`` name."""
    if name not in TEST_TIME_AUGMENTATIONS:
        raise ResrecoverError(
            f"test_time_augmentation: {name!r} is not allowed; expected one of {', '.join(TEST_TIME_AUGMENTATIONS)}"
        )
    return TEST_TIME_AUGMENTATIONS[name]


def _transform(x, flip_y: int, flip_x: int, turns: int, inverse: bool = False):
    """Apply (or undo) one in-plane transform to a torch tensor's last two axes."""
    if not inverse:
        if flip_y:
            x = x.flip(-2)
        if flip_x:
            x = x.flip(-1)
        return x.rot90(turns, dims=(-2, -1)) if turns else x
    if turns:
        x = x.rot90(-turns, dims=(-2, -1))
    if flip_x:
        x = x.flip(-1)
    return x.flip(-2) if flip_y else x


def torch_predictor(model, device, layout: str, test_time_augmentation: str = "none") -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a torch model as a tiling predictor: float32 ``(B, tz, ty, tx)`` array -> same shape.

    Parameters
    ----------
    model : torch module in eval mode (a ``NormalizedModel``: material fraction in and out).
    device : torch device the model lives on; batches are moved there and back.
    layout : ``'2.5d'`` (the tile's z slices are the network's channels, DeepNet) or ``'3d'``
        (a channel axis of one is added and removed, SRCNN-3D).
    test_time_augmentation : ``'none'``, ``'half_turn'``, ``'flips'`` or ``'dihedral'``
        (:data:`TEST_TIME_AUGMENTATIONS`): the prediction is the mean over the batch transformed
        in-plane, predicted and transformed back (costs one forward pass per transform).
    """
    import torch

    if layout not in ("2.5d", "3d"):
        raise ResrecoverError(f"layout: {layout!r} is not allowed; expected '2.5d' or '3d'")
    device = torch.device(device)
    transforms = augmentation_transforms(test_time_augmentation)

    def forward(x):
        y = model(x)
        if isinstance(y, (tuple, list)):  # (final, intermediate): keep the final output
            y = y[0]
        return y

    def predict(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
        if layout == "3d":
            x = x[:, None]
        with torch.inference_mode():
            y = None
            for transform in transforms:
                part = _transform(forward(_transform(x, *transform)), *transform, inverse=True)
                y = part if y is None else y.add_(part)
            if len(transforms) > 1:
                y = y.div_(len(transforms))
        if layout == "3d":
            y = y[:, 0]
        return y.to("cpu", torch.float32).numpy()

    return predict


# Float32 values per pixel (per tile voxel for SRCNN) that a network's forward pass held on the CPU
# (peak RSS minus resident before; torch 2.13): DeepNet 9-12 per channel of its first level, 4 per
# input slice, plus ~24 that do not grow with the width (a 2-channel DeepNet held ~50 per pixel);
# SRCNN-3D about 2.5 per filter of its first layer. Rounded up.
_DEEPNET_COPIES_PER_BASE_CHANNEL = 12
_DEEPNET_COPIES_FIXED = 24
_SRCNN_COPIES_PER_FILTER = 3
# What a process grows by at its first forward pass whatever the tile (torch's and oneDNN's first
# allocations, thread pools, h5py): 81 MB measured for a 31×256×256 volume under a 4 MB budget.
_PREDICTOR_OVERHEAD_BYTES = 80 * 2**20
# Share of the tiling buffers' budget left after the predictor: the writer may copy a padded slab
# and the source's reader holds its own temporaries (one more slab-sized buffer at most).
_TILING_SHARE = 2.0 / 3.0


def predictor_memory_bytes(settings: dict, tile_shape, batch_size: int) -> int:
    """Approximate peak RAM (bytes) of one forward pass of a batch of tiles on the CPU.

    Parameters
    ----------
    settings : the model's settings (``method``, ``architecture``; see :mod:`.modelio`).
    tile_shape : (tz, ty, tx) tile (for DeepNet ``tz`` is ``n_slices``).
    batch_size : tiles per forward pass.

    Returns
    -------
    bytes; an upper estimate from measured copies per channel (see the constants above it).
    """
    architecture = settings.get("architecture", {})
    tz, ty, tx = (int(t) for t in tile_shape)
    if settings.get("method") == "deepnet":
        per_pixel = (
            _DEEPNET_COPIES_PER_BASE_CHANNEL * int(architecture.get("base_channels", 32))
            + 4 * int(architecture.get("n_slices", tz))
            + _DEEPNET_COPIES_FIXED
        )
        voxels = ty * tx
    else:
        per_pixel = _SRCNN_COPIES_PER_FILTER * int(list(architecture.get("filters", [64]))[0]) + 4
        voxels = tz * ty * tx
    return int(4 * int(batch_size) * voxels * per_pixel + _PREDICTOR_OVERHEAD_BYTES)


def context_margin(settings: dict, inference_config: dict) -> tuple[int, int, int]:
    """Voxels (z, y, x) of context read around a region of interest.

    DeepNet: ``n_slices - 1`` slices (every ROI slice then gets all its slice-stack predictions, as
    in the whole volume) and ``overlap_px`` in-plane (the context a tile seam gets); SRCNN-3D:
    ``srcnn_overlap_px`` along every axis.
    """
    if settings.get("method") == "deepnet":
        overlap = int(inference_config.get("overlap_px", 32))
        return (int(settings.get("architecture", {}).get("n_slices", 5)) - 1, overlap, overlap)
    overlap = int(inference_config.get("srcnn_overlap_px", 16))
    return (overlap, overlap, overlap)


def check_roi(roi, shape) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """``((z0, z1), (y0, y1), (x0, x1))`` checked inside ``shape``; ``None`` is the whole volume.

    Raises :class:`~resrecover.ResrecoverError` naming the ROI and the volume's shape when a range
    is empty or leaves the volume.
    """
    shape = tuple(int(n) for n in shape)
    if roi is None:
        return tuple((0, n) for n in shape)
    ranges = tuple((int(a), int(b)) for a, b in roi)
    if len(ranges) != 3 or any(not 0 <= a < b <= n for (a, b), n in zip(ranges, shape)):
        text = ",".join(f"{a}:{b}" for a, b in ranges)
        raise ResrecoverError(
            f"roi: {text} does not fit the output volume {shape} (z, y, x); expected 0 <= start < stop <= size"
        )
    return ranges


class _Window:
    """``source`` seen through a box: ``window[z0:z1]`` reads ``source[box z0+z0 : .., box y, box x]``."""

    def __init__(self, source, box):
        self.source = source
        self.box = box
        self.shape = tuple(b - a for a, b in box)

    def __getitem__(self, key):
        z0, z1, _ = key.indices(self.shape[0])
        (bz, _), (y0, y1), (x0, x1) = self.box
        return self.source[bz + z0 : bz + z1, y0:y1, x0:x1]


class _CroppedSink:
    """A sink for the ROI plus its context: ``sink[z0:z1] = block`` keeps only the ROI's voxels.

    Slabs arrive in increasing z (as the tiling writes them), so sequential writers (TIFF) work.
    """

    def __init__(self, sink, roi, region):
        self.sink = sink
        self.shape = tuple(b - a for a, b in region)
        self.inner = tuple((ra - ga, rb - ga) for (ra, rb), (ga, _) in zip(roi, region))

    def __setitem__(self, key, block):
        z0, z1, _ = key.indices(self.shape[0])
        (iz0, iz1), (iy0, iy1), (ix0, ix1) = self.inner
        lo, hi = max(z0, iz0), min(z1, iz1)
        if hi > lo:
            self.sink[lo - iz0 : hi - iz0] = block[lo - z0 : hi - z0, iy0:iy1, ix0:ix1]


def recover_source(
    model,
    settings: dict,
    source,
    sink,
    inference_config: dict,
    device,
    *,
    roi=None,
    max_memory_gb: float | None = None,
    progress: bool = True,
) -> TilingRun:
    """Apply a loaded network over a lazy volume (or a region of it) into ``sink``, tiled and streamed.

    Parameters
    ----------
    model, settings : from :func:`resrecover.methods.modelio.load_model`.
    source : sliceable (nz, ny, nx) volume: ``source[z0:z1, y0:y1, x0:x1]`` gives float32 (an
        ndarray, :func:`resrecover.io.read_volume_lazy`, :func:`resrecover.io.open_volume`, or the
        upsampled view of :mod:`resrecover.ownscan`).
    sink : accepts ``sink[z0:z1] = block`` in increasing z, of the ROI's shape.
    inference_config : ``config['inference']`` (see :func:`recover_volume`).
    device : torch device the model is on.
    roi : ``((z0, z1), (y0, y1), (x0, x1))`` voxels of ``source`` to recover (``None``: all). The ROI
        is predicted with :func:`context_margin` voxels of real context around it where the volume
        has them, so its faces are not reflection-padded.
    max_memory_gb : RAM budget (GB) of the recovery on top of what the process holds before: the
        network's activations (:func:`predictor_memory_bytes`), the tiling buffers and the reader's
        and writer's slabs. The batch is reduced to fit; ``None`` keeps the tiling's default
        (:data:`resrecover.methods.tiling.DEFAULT_MEMORY_GB` of tiling buffers).

    Returns
    -------
    The :class:`~resrecover.methods.tiling.TilingRun`.

    Raises
    ------
    ResrecoverError : a bad ROI, a method that is not a network, or a budget too small for one tile.
    """
    from resrecover.methods.tiling import streaming_memory_bytes

    method = check_network(settings["method"])
    architecture = settings.get("architecture", {})
    shape = tuple(int(n) for n in source.shape)
    roi = check_roi(roi, shape)
    margin = context_margin(settings, inference_config)
    region = tuple((max(0, a - m), min(n, b + m)) for (a, b), m, n in zip(roi, margin, shape))
    if region != tuple((0, n) for n in shape):
        source = _Window(source, region)
    if region != roi:
        sink = _CroppedSink(sink, roi, region)
    region_shape = tuple(b - a for a, b in region)

    blending = inference_config.get("blending", "triangular")
    test_time_augmentation = inference_config.get("test_time_augmentation", "none")
    batch_size = int(inference_config.get("batch_size", 4))
    if method == "deepnet":
        multiple = 2 ** int(architecture.get("depth", 0))
        tile_px = int(inference_config.get("tile_px", 576))
        tile = (int(architecture.get("n_slices", 5)),) + tuple(
            min(max(multiple, tile_px // multiple * multiple), -(-n // multiple) * multiple) for n in region_shape[1:]
        )
    else:
        tile = tuple(min(int(inference_config.get("srcnn_tile_px", 128)), n) for n in region_shape)
    tiling_gb = None
    if max_memory_gb is not None:
        budget = float(max_memory_gb) * 1e9
        while True:
            left = (budget - predictor_memory_bytes(settings, tile, batch_size)) * _TILING_SHARE
            needed = streaming_memory_bytes(region_shape[1:], tile, tile[0], batch_size)
            if left >= needed or batch_size == 1:
                break
            batch_size = max(1, batch_size // 2)
        if left < needed:
            least = (needed / _TILING_SHARE + predictor_memory_bytes(settings, tile, 1)) / 1e9
            raise ResrecoverError(
                f"max_memory_gb: {max_memory_gb:g} GB cannot hold one batch of {tile} tiles over slices of "
                f"{region_shape[1:]} voxels; expected at least {least:.2f} GB (or a smaller inference tile)"
            )
        tiling_gb = left / 1e9
        log.info("memory budget %.2f GB: network ~%.2f GB (batch %d of %s tiles), tiling buffers %.2f GB",
                 max_memory_gb, predictor_memory_bytes(settings, tile, batch_size) / 1e9, batch_size, tile, tiling_gb)
    if method == "deepnet":
        return predict_volume_25d(
            torch_predictor(model, device, "2.5d", test_time_augmentation),
            source,
            sink,
            n_slices=int(architecture.get("n_slices", 5)),
            tile_px=int(inference_config.get("tile_px", 576)),
            overlap_px=int(inference_config.get("overlap_px", 32)),
            blending=blending,
            batch_size=batch_size,
            size_multiple=2 ** int(architecture.get("depth", 0)),
            max_memory_gb=tiling_gb,
            progress=progress,
        )
    return predict_volume_3d(
        torch_predictor(model, device, "3d", test_time_augmentation),
        source,
        sink,
        tile_px=int(inference_config.get("srcnn_tile_px", 128)),
        overlap_px=int(inference_config.get("srcnn_overlap_px", 16)),
        blending=blending,
        batch_size=batch_size,
        max_memory_gb=tiling_gb,
        progress=progress,
    )


def recover_volume(
    weights_path: str | Path,
    settings_path: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    inference_config: dict,
    device=None,
    max_memory_gb: float | None = None,
    progress: bool = True,
    roi=None,
    **provenance,
) -> TilingRun:
    """Apply a trained DeepNet or SRCNN-3D to the volume in ``input_path``; write ``output_path``.

    Parameters
    ----------
    weights_path, settings_path : ``model.safetensors`` and ``model.json`` (see :mod:`.modelio`).
    input_path : HDF5 volume (dataset ``volume``, material fraction, attribute ``voxel_size_um``).
    output_path : HDF5 written atomically: dataset ``volume`` (float32, chunked, same shape),
        attributes ``voxel_size_um``, ``method``, ``model_sha256``, ``inference`` (JSON),
        ``domain_check`` (JSON, :mod:`resrecover.methods.domain`: is the input like the model's
        training input? one warning line when not), the software versions and ``provenance``.
    inference_config : ``config['inference']``: ``tile_px``, ``overlap_px``, ``blending``,
        ``batch_size`` (DeepNet); ``srcnn_tile_px``, ``srcnn_overlap_px`` (SRCNN-3D, same blending
        and batch size); ``test_time_augmentation`` (both, see :func:`torch_predictor`).
    device : torch device; ``None`` takes one with :func:`resrecover.methods.device.acquire_device`
        (a free GPU, locked for the job, else the CPU).
    max_memory_gb : RAM budget (GB) of the recovery: network activations, tiling buffers and
        slabs (see :func:`recover_source`); ``None``: the tiling's default buffers.
    roi : ``((z0, z1), (y0, y1), (x0, x1))`` voxels to recover (``None``: the whole volume); the
        output holds only the ROI (attribute ``roi``), predicted with context around it.

    Returns
    -------
    The :class:`~resrecover.methods.tiling.TilingRun` (tile and batch used, memory bound).
    """
    if device is None:
        from resrecover.methods.device import acquire_device

        with acquire_device() as chosen:
            return recover_volume(
                weights_path, settings_path, input_path, output_path, inference_config,
                device=chosen, max_memory_gb=max_memory_gb, progress=progress, roi=roi, **provenance,
            )

    import h5py
    import torch

    from resrecover.io import atomic_output, check_free_disk, read_volume_lazy
    from resrecover.io.hdf5 import create_volume_dataset
    from resrecover.io.hdf5 import provenance as software_versions
    from resrecover.methods.domain import check_input
    from resrecover.methods.modelio import load_model

    model, settings = load_model(weights_path, settings_path, device=device)
    method = settings["method"]
    blending = inference_config.get("blending", "triangular")
    with read_volume_lazy(input_path) as source:
        voxel_size_um = source.attrs.get("voxel_size_um")
        if voxel_size_um is None:
            raise ResrecoverError(f"{input_path}: no attribute 'voxel_size_um'; expected the voxel size in µm")
        roi = check_roi(roi, source.shape)
        domain = check_input(settings, source, input_path, float(voxel_size_um), source.attrs.get("sigma_um"))
        shape = tuple(b - a for a, b in roi)
        check_free_disk(output_path, int(np.prod(shape)) * 4)
        started = time.perf_counter()
        with atomic_output(output_path) as tmp, h5py.File(tmp, "w") as fh:
            sink = create_volume_dataset(fh, "volume", shape=shape)
            check_network(method, f"{settings_path}: method")
            run = recover_source(model, settings, source, sink, inference_config, device, roi=roi,
                                 max_memory_gb=max_memory_gb, progress=progress)
            seconds = time.perf_counter() - started
            attrs = {
                **software_versions(),
                "torch_version": torch.__version__,
                "voxel_size_um": float(voxel_size_um),
                "method": method,
                "model_sha256": settings.get("weights_sha256", ""),
                "model_settings": Path(settings_path).name,
                "input": str(input_path),
                "device": str(device),
                "inference": json.dumps(
                    {
                        "tile_shape": run.tile_shape,
                        "overlap": run.overlap,
                        "blending": blending,
                        "test_time_augmentation": inference_config.get("test_time_augmentation", "none"),
                        "batch_size": run.batch_size,
                        "slab_slices": run.slab_slices,
                        "backoffs": run.backoffs,
                    }
                ),
                "seconds": round(seconds, 3),
                "roi": json.dumps([list(r) for r in roi]),
                "domain_check": domain.to_json(),
                **{k: v for k, v in provenance.items() if v is not None},
            }
            for key, value in attrs.items():
                if isinstance(value, (dict, list, tuple)):
                    value = json.dumps(value, default=str)
                elif isinstance(value, str):
                    value = str(value)  # str subclasses (torch.__version__) have no HDF5 type
                fh.attrs[key] = value
    log.info(
        "%s: %s applied in %.1f s (%d tiles %s, batch %d, tiling buffers <= %.1f MB)",
        output_path, method, seconds, run.n_tiles, run.tile_shape, run.batch_size, run.memory_bytes / 1e6,
    )
    run.output = Path(output_path)
    return run



def recover_volume_job(job, config: dict, **provenance) -> TilingRun:
    """:func:`recover_volume` as a workflow job runs it (rules recover_network, recover_ensemble_member).

    ``job`` is Snakemake's ``snakemake`` object (or any object alike): ``input.weights``,
    ``input.settings``, ``input.volume``, ``output[0]``, ``threads`` and ``wildcards.realization``,
    ``wildcards.sigma``, and ``wildcards.member`` for a trust ensemble's extra network (none, or 0:
    the study's model). Torch runs on :func:`~resrecover.methods.device.torch_thread_count`
    threads of the validated ``config``; the budget is ``config['compute']['max_memory_gb']``; the
    provenance holds the config hash, the seed, the realization and σ, ``ensemble_member`` (members
    1, 2, ... only), then ``provenance`` in the order given.
    """
    from resrecover.config import config_hash
    from resrecover.methods.device import torch_runtime, torch_thread_count
    from resrecover.snakemake_support import ensemble_member

    member = ensemble_member(job.wildcards)
    with torch_runtime(torch_thread_count(config, job.threads)):
        return recover_volume(
            job.input.weights,
            job.input.settings,
            job.input.volume,
            job.output[0],
            config["inference"],
            max_memory_gb=config["compute"]["max_memory_gb"],
            config_hash=config_hash(config),
            seed=config["seed"],
            realization=job.wildcards.realization,
            sigma_um=float(job.wildcards.sigma),
            **({"ensemble_member": member} if member else {}),
            **provenance,
        )
