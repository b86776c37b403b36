"""Tiled, out-of-core application of any volume-to-volume predictor (docs/design.md#recovery; paper §2.1.1).

One reusable module for both networks, independent of them, after MONAI's
``sliding_window_inference`` (a function of volume, tile, overlap, weight map and predictor) and
CSBDeep's prediction (automatic tiling, back-off on out-of-memory).

The scheme
----------
The volume is covered by a Cartesian grid of tiles of shape ``(tz, ty, tx)``. Along each axis the
tile origins come from :func:`tile_starts`: consecutive tiles share ``overlap`` voxels, and the last
tile is shifted back so it ends at the volume's edge (so any size is covered, not only multiples of
the tile). A volume smaller than the tile along an axis is padded by reflection at its far end and
the padding is cropped from the result. For a network that needs sizes divisible by
``size_multiple`` (``2**depth`` for a U-Net), tiles, the padded volume and the stride (hence every
tile origin) are multiples of it: a U-Net is shift-equivariant only for such shifts, so aligned tiles
reproduce the whole-volume prediction exactly wherever the network's receptive field stays inside
the tiles (the overlap is enlarged to the next aligned value if needed).

Every tile prediction is multiplied by a separable weight map (:func:`blending_weights`),
accumulated, and finally divided by the accumulated weight, so the blended result is a weighted mean
of the predictions covering each voxel with weights that sum to 1 everywhere. ``triangular`` weights
are linear ramps over the overlap (``(i + 1) / (overlap + 1)``) and 1 inside, so two tiles that meet
with exactly ``overlap`` shared voxels cross-fade with raw weights already summing to 1 (the paper's
"linear blending with a triangular weight profile"); ``uniform`` weights give a plain mean.

* **2.5D (DeepNet)**, :func:`predict_volume_25d`: a z "tile" is a stack of ``n_slices`` consecutive
  slices and stacks start at every slice (stride 1, overlap ``n_slices - 1``) with uniform z weights,
  so every output slice is the mean of its up-to-``n_slices`` predictions, times the in-plane
  triangular blending of 2D tiles (paper: 576 x 576 tiles, 32 px overlap, stacks of 5, stride 1).
  Edges are handled by **clamping**: stacks never leave the volume, so slice 0 gets one prediction,
  slice 1 two, ... (no mirrored slices are invented). Only a volume with fewer than ``n_slices``
  slices is padded (by reflection) to one stack.
* **3D (SRCNN)**, :func:`predict_volume_3d`: cubic tiles with overlap and triangular blending along
  all three axes.

Streaming and memory
--------------------
``source`` is anything that can be sliced ``source[z0:z1]`` to a ``(z1 - z0, ny, nx)`` array and has
``.shape`` (an ndarray or :func:`resrecover.io.read_volume_lazy`); ``sink`` is anything that accepts
``sink[z0:z1] = block`` (an ndarray or an ``h5py.Dataset``). The z tile origins are processed in
groups ("slabs") whose input spans at most ``slab_slices`` slices; after each slab the slices that
no later tile touches are final and are written to ``sink``, and only the partial sums of the
``tz - stride`` slices still to be touched are carried over (moved to the front of the one
accumulator, which is reused for every slab, as is the batch buffer; an in-memory float32 sink of
the padded shape is used as the accumulator itself). The buffers held at once are at most::

    bytes ~= 4 * (2 * slab_slices * Hp * Wp      # input slab + weighted-sum accumulator
                  + tz * Hp * Wp                 # carried-over partial sums
                  + 3 * batch_size * tz * ty * tx)   # batch in, prediction out, weighted copy

with ``Hp, Wp`` the slice size padded to at least one tile (and to a multiple of ``size_multiple``).
:func:`streaming_memory_bytes` returns it and :func:`slab_slices_for_memory` picks the largest slab
that fits a budget. The predictor's own memory (model weights and activations, on the GPU, and its
temporaries) comes on top; so does a boolean slab (1 byte per voxel) of the lazy reader's finite check.

Out of memory
-------------
When the predictor raises ``torch.OutOfMemoryError`` (or a ``RuntimeError``/``MemoryError`` saying
"out of memory"), the batch is split in halves (the tiles already computed are kept); when a single
tile does not fit, the tile is halved (keeping it a multiple of ``size_multiple`` and larger than
twice the overlap) and the volume is started again. Each back-off is logged.

The predictor
-------------
``predictor(batch) -> prediction``: ``batch`` is a float32 array ``(B, tz, ty, tx)``; the prediction
must have the same shape. For 2.5D, ``tz = n_slices`` and the slices are the network's channels;
for 3D the caller adds and removes the channel axis (see :mod:`resrecover.methods.infer`).
"""

from __future__ import annotations


import dataclasses
import logging
import math
from typing import Callable, Sequence

import numpy as np

from resrecover.methods.heap import retained_bytes, retained_heap

# the plan (tile origins, blending weights) is re-exported here, the module callers know
from resrecover.methods.tile_plan import (  # noqa: F401
    TilingError,
    blending_weights,
    per_axis,
    tile_starts,
    weight_sums,
)

log = logging.getLogger(__name__)

Predictor = Callable[[np.ndarray], np.ndarray]

#: Tiling buffers budget (GB) used when neither ``slab_slices`` nor ``max_memory_gb`` is given.
DEFAULT_MEMORY_GB = 1.0


@dataclasses.dataclass
class TilingRun:
    """What a tiled prediction did (returned for logs, reports and tests)."""

    output: object = dataclasses.field(repr=False)
    tile_shape: tuple[int, int, int]
    overlap: tuple[int, int, int]
    batch_size: int
    slab_slices: int
    n_tiles: int
    n_predictor_calls: int
    memory_bytes: int
    backoffs: list[str] = dataclasses.field(default_factory=list)


def _effective_tile(length: int, tile: int, multiple: int) -> int:
    """The tile along one axis: a multiple of ``multiple``, no larger than needed to cover ``length``."""
    tile = max(multiple, tile // multiple * multiple)
    return min(tile, math.ceil(length / multiple) * multiple)


def _aligned_overlap(tile: int, overlap: int, multiple: int) -> int:
    """The overlap that makes the stride a multiple of ``multiple`` (at least ``overlap``).

    With the volume padded to a multiple too, every tile origin is then a multiple of ``multiple``:
    a U-Net with ``depth`` poolings is shift-equivariant only for shifts by ``2**depth``, so aligned
    tiles predict exactly what the whole-volume network predicts away from the tile seams.
    """
    stride = max(multiple, (tile - overlap) // multiple * multiple)
    return max(0, tile - stride)


def _padded_length(length: int, tile: int, multiple: int) -> int:
    return max(math.ceil(length / multiple) * multiple, tile)


def streaming_memory_bytes(
    slice_shape: Sequence[int], tile_shape: Sequence[int], slab_slices: int, batch_size: int
) -> int:
    """RAM (bytes) held by the tiling buffers; see the module docstring for the formula.

    ``slice_shape`` is ``(ny, nx)``; it is padded to at least one tile as the tiling does.
    """
    tz, ty, tx = (int(t) for t in tile_shape)
    hp, wp = max(int(slice_shape[0]), ty), max(int(slice_shape[1]), tx)
    return 4 * (2 * int(slab_slices) * hp * wp + tz * hp * wp + 3 * int(batch_size) * tz * ty * tx)


def slab_slices_for_memory(
    volume_shape: Sequence[int], tile_shape: Sequence[int], batch_size: int, max_memory_gb: float
) -> int:
    """Largest slab (in slices, at least one tile deep, at most the volume) whose buffers fit ``max_memory_gb``."""
    nz, ny, nx = (int(s) for s in volume_shape)
    tz, ty, tx = (int(t) for t in tile_shape)
    fixed = streaming_memory_bytes((ny, nx), tile_shape, 0, batch_size)
    per_slice = 8 * max(ny, ty) * max(nx, tx)
    slab = int((max_memory_gb * 1e9 - fixed) // per_slice)
    return int(min(max(slab, tz), max(nz, tz)))


# ---------------------------------------------------------------------------------- out of memory
def is_out_of_memory(exc: BaseException) -> bool:
    """True for a GPU or CPU out-of-memory error raised by torch or NumPy."""
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):  # torch absent, or older than 2.5
        pass
    if isinstance(exc, (RuntimeError, MemoryError)):
        text = str(exc).lower()
        return isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text
    return False


def _release_cached_gpu_memory() -> None:
    """Give the blocks torch cached for the failed call back, so the smaller retry can use them."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class _TileTooLarge(Exception):
    """A batch of one tile ran out of memory: the tile must shrink."""


class _BatchRunner:
    """Calls the predictor on batches, halving the batch on out-of-memory (kept for the rest of the run)."""

    def __init__(self, predictor: Predictor, batch_size: int, backoffs: list[str]):
        self.predictor = predictor
        self.batch_size = int(batch_size)
        self.backoffs = backoffs
        self.n_calls = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        outputs = []
        start = 0
        while start < len(batch):
            part = batch[start : start + self.batch_size]
            failed = False
            try:
                prediction = self.predictor(part)
                self.n_calls += 1
            except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are handled
                if not is_out_of_memory(exc):
                    raise
                failed = True
            if failed:  # outside the except block, so the failed call's tensors are freed
                _release_cached_gpu_memory()
                if len(part) == 1:
                    raise _TileTooLarge
                self.batch_size = max(1, len(part) // 2)
                message = f"out of memory with a batch of {len(part)} tiles; retrying with {self.batch_size}"
                log.warning(message)
                self.backoffs.append(message)
                continue
            prediction = np.asarray(prediction, dtype=np.float32)
            if prediction.shape != part.shape:
                raise TilingError(
                    f"predictor returned shape {prediction.shape} for a batch of shape {part.shape}; "
                    "expected the same shape"
                )
            outputs.append(prediction)
            start += len(part)
        return np.concatenate(outputs) if len(outputs) > 1 else outputs[0]


# -------------------------------------------------------------------------------------- engine
def _read_padded(source, z0: int, z1: int, padded_shape: tuple[int, int, int]) -> np.ndarray:
    """Rows ``z0:z1`` of the source padded by reflection at its far ends to ``padded_shape``."""
    nz, ny, nx = (int(s) for s in source.shape)
    block = np.asarray(source[z0 : min(z1, nz)], dtype=np.float32)
    pad = ((0, (z1 - z0) - block.shape[0]), (0, padded_shape[1] - ny), (0, padded_shape[2] - nx))
    if any(p[1] for p in pad):
        if pad[0][1] and z0 != 0:
            raise TilingError("internal: z padding is only needed for a volume thinner than one tile")
        block = np.pad(block, pad, mode="reflect" if min(block.shape) > 1 else "edge")
    return block


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _zeros(shape) -> np.ndarray:
    """A float32 array of zeros for the output or the accumulator.

    Allocated by torch where it is there: numpy asks the kernel for transparent huge pages on large
    arrays, and first touching fresh huge pages cost 0.3-0.5 s per 256 MB here (compaction), more
    than the whole tiling of a 64×1024×1024 volume once warm (benchmarks/NOTES.md).
    """
    torch = _torch()
    if torch is None:
        return np.zeros(shape, dtype=np.float32)
    return torch.zeros(tuple(int(n) for n in shape), dtype=torch.float32).numpy()


def _fill_batch(batch: np.ndarray, block: np.ndarray, origins) -> None:
    """``batch[i] = block[origin_i + tile]`` (through torch's threaded copies where it can)."""
    tz, ty, tx = batch.shape[1:]
    torch = _torch()
    if torch is None or not block.flags.writeable:  # torch cannot view read-only memory
        for slot, (z, y, x) in enumerate(origins):
            batch[slot] = block[z : z + tz, y : y + ty, x : x + tx]
        return
    source, target = torch.from_numpy(block), torch.from_numpy(batch)
    for slot, (z, y, x) in enumerate(origins):
        target[slot].copy_(source[z : z + tz, y : y + ty, x : x + tx])


def _weighted_accumulate(accumulator: np.ndarray, prediction: np.ndarray, weights: np.ndarray, origins) -> None:
    """``accumulator[origin + tile] += prediction[i] * weights`` for every tile, in place.

    Through torch views of the same memory when torch is there: its in-place ops run on the
    process's torch threads (2x on two cores), numpy's on one; the sums are the same.
    """
    tz, ty, tx = weights.shape
    torch = _torch()
    if torch is None:
        np.multiply(prediction, weights, out=prediction)
        for (z, y, x), tile in zip(origins, prediction):
            accumulator[z : z + tz, y : y + ty, x : x + tx] += tile
        return
    acc = torch.from_numpy(accumulator)
    pred = torch.from_numpy(prediction)
    pred.mul_(torch.from_numpy(weights))
    for (z, y, x), tile in zip(origins, pred):
        acc[z : z + tz, y : y + ty, x : x + tx].add_(tile)


def _normalize(final: np.ndarray, z_factors: np.ndarray, yx_factors: np.ndarray) -> None:
    """``final *= z_factors[:, None, None] * yx_factors`` in place (threaded through torch when there)."""
    torch = _torch()
    if torch is None:
        final *= z_factors[:, None, None]
        final *= yx_factors
        return
    torch.from_numpy(final).mul_(torch.from_numpy(z_factors)[:, None, None]).mul_(torch.from_numpy(yx_factors))


def _slab_groups(starts: list[int], tile: int, slab_slices: int) -> list[list[int]]:
    """Consecutive z origins grouped so that each group's input spans at most ``slab_slices`` slices."""
    groups: list[list[int]] = []
    for start in starts:
        if groups and start + tile - groups[-1][0] <= slab_slices:
            groups[-1].append(start)
        else:
            groups.append([start])
    return groups


def _predict_once(
    runner: _BatchRunner,
    source,
    sink,
    tile: tuple[int, int, int],
    overlap: tuple[int, int, int],
    modes: tuple[str, str, str],
    multiples: Sequence[int],
    slab_slices: int,
    progress: bool,
) -> int:
    nz, ny, nx = (int(s) for s in source.shape)
    padded = tuple(_padded_length(int(source.shape[a]), tile[a], multiples[a]) for a in range(3))
    starts = [tile_starts(padded[a], tile[a], overlap[a]) for a in range(3)]
    sums = [weight_sums(padded[a], tile[a], overlap[a], modes[a]) for a in range(3)]
    norm_yx = (1.0 / np.multiply.outer(sums[1], sums[2])).astype(np.float32)
    weights = blending_weights(tile, overlap, modes)
    yx_origins = [(y, x) for y in starts[1] for x in starts[2]]
    n_tiles = len(starts[0]) * len(yx_origins)
    tz, ty, tx = tile

    from tqdm.auto import tqdm

    bar = tqdm(total=n_tiles, unit="tile", desc="tiled inference", disable=not progress, mininterval=2.0)
    groups = _slab_groups(starts[0], tz, slab_slices)
    # An in-memory float32 sink that needs no padding is its own accumulator: tiles are summed
    # straight into it and normalised in place, which saves a volume-sized buffer and a copy.
    # Otherwise one accumulator and one batch buffer serve the whole run, reused slab after slab
    # (fresh volume-sized arrays per slab cost a page-faulting pass each).
    direct = (
        isinstance(sink, np.ndarray)
        and sink.dtype == np.float32
        and sink.flags.c_contiguous
        and tuple(sink.shape) == padded
    )
    if not direct:
        accumulator_buffer = _zeros((max(g[-1] + tz - g[0] for g in groups), padded[1], padded[2]))
    batch_buffer = np.empty((runner.batch_size, tz, ty, tx), np.float32)
    carried = 0  # leading slices of the accumulator that already hold the previous slab's tiles
    for index, group in enumerate(groups):
        z0, z1 = group[0], group[-1] + tz
        block = _read_padded(source, z0, z1, padded)
        accumulator = sink[z0:z1] if direct else accumulator_buffer[: z1 - z0]
        accumulator[carried:] = 0.0
        items = [(z, y, x) for z in group for (y, x) in yx_origins]
        first = 0
        while first < len(items):
            chunk = items[first : first + runner.batch_size]  # the runner may have halved the batch
            first += len(chunk)
            origins = [(z - z0, y, x) for z, y, x in chunk]  # in the slab's frame
            batch = batch_buffer[: len(chunk)]
            _fill_batch(batch, block, origins)
            prediction = runner(batch)
            if not prediction.flags.writeable:  # e.g. a read-only view of a tensor's memory
                prediction = prediction.copy()
            _weighted_accumulate(accumulator, prediction, weights, origins)
            bar.update(len(chunk))
        # Slices before the next group's first origin receive no more tiles: they are final.
        done = (groups[index + 1][0] if index + 1 < len(groups) else z1) - z0
        final = accumulator[:done]
        _normalize(final, (1.0 / sums[0][z0 : z0 + done]).astype(np.float32), norm_yx)
        carried = len(accumulator) - done
        if not direct:
            write_end = min(z0 + done, nz)
            if write_end > z0:
                sink[z0:write_end] = final[: write_end - z0, :ny, :nx]
            # the unfinished tail moves to the front for the next slab (numpy copes with the overlap)
            accumulator_buffer[:carried] = accumulator[done:]
        del block, accumulator, final
    bar.close()
    return n_tiles


def predict_tiled(
    predictor: Predictor,
    source,
    sink=None,
    *,
    tile_shape: Sequence[int],
    overlap: Sequence[int],
    blending: Sequence[str],
    batch_size: int = 4,
    size_multiple: Sequence[int] = (1, 1, 1),
    shrinkable_axes: Sequence[bool] = (True, True, True),
    slab_slices: int | None = None,
    max_memory_gb: float | None = None,
    progress: bool = True,
) -> TilingRun:
    """Apply ``predictor`` over ``source`` in blended 3D tiles, slab by slab, into ``sink``.

    The engine behind :func:`predict_volume_25d` and :func:`predict_volume_3d` (see the module
    docstring for the scheme, memory and back-off).

    Parameters
    ----------
    predictor : ``(B, tz, ty, tx)`` float32 array -> same shape.
    source : sliceable ``(nz, ny, nx)`` volume (ndarray, lazy HDF5 reader).
    sink : writable ``(nz, ny, nx)`` array (ndarray, ``h5py.Dataset``); ``None`` allocates float32.
    tile_shape, overlap, blending : per axis (z, y, x); blending ``'triangular'`` or ``'uniform'``.
    batch_size : tiles per predictor call (halved on out-of-memory).
    size_multiple : tiles are kept multiples of these per axis (e.g. ``2**depth`` for a U-Net).
    shrinkable_axes : axes along which the tile may be halved on out-of-memory.
    slab_slices : z extent of the input slab held in memory; default from ``max_memory_gb``
        (or :data:`DEFAULT_MEMORY_GB`) with :func:`slab_slices_for_memory`.

    Returns
    -------
    TilingRun with ``output`` (the sink), the tile and batch finally used, and the RAM bound.
    """
    shape = tuple(int(s) for s in source.shape)
    if len(shape) != 3:
        raise TilingError(f"source has shape {shape}; expected a 3D (z, y, x) volume")
    if sink is None:
        sink = _zeros(shape)
    if tuple(sink.shape) != shape:
        raise TilingError(f"sink has shape {tuple(sink.shape)}; expected the source shape {shape}")
    if batch_size < 1:
        raise TilingError(f"batch_size: {batch_size}; expected >= 1")
    multiples = per_axis(size_multiple, 3)
    overlap = tuple(per_axis(overlap, 3))
    modes = tuple(blending)
    requested = per_axis(tile_shape, 3)
    backoffs: list[str] = []
    runner = _BatchRunner(predictor, batch_size, backoffs)
    while True:
        tile = tuple(_effective_tile(shape[a], requested[a], multiples[a]) for a in range(3))
        tile_overlap = tuple(_aligned_overlap(tile[a], min(overlap[a], tile[a] - 1), multiples[a]) for a in range(3))
        slab = slab_slices or slab_slices_for_memory(
            shape, tile, runner.batch_size, max_memory_gb or DEFAULT_MEMORY_GB
        )
        slab = max(int(slab), tile[0])
        log.info(
            "tiling %s: tiles %s, overlap %s, blending %s, batch %d, slabs of %d slices",
            shape, tile, tile_overlap, modes, runner.batch_size, slab,
        )
        try:
            # the predictor's per-batch allocations reuse the heap instead of faulting pages in every batch;
            # under a RAM budget at most half of it stays retained (a whole 1 GB broke the out-of-core
            # row's 143 MB budget: benchmarks/NOTES.md)
            with retained_heap(retained_bytes(max_memory_gb)):
                n_tiles = _predict_once(runner, source, sink, tile, tile_overlap, modes, multiples, slab, progress)
        except _TileTooLarge:
            smaller = [
                max(multiples[a], tile[a] // 2 // multiples[a] * multiples[a]) if shrinkable_axes[a] else tile[a]
                for a in range(3)
            ]
            if all(s == t for s, t in zip(smaller, tile)) or any(
                shrinkable_axes[a] and smaller[a] <= 2 * tile_overlap[a] for a in range(3)
            ):
                raise TilingError(
                    f"out of memory with a batch of one {tile} tile; no smaller tile keeps the overlap "
                    f"{tile_overlap} (lower inference.overlap_px or free the device)"
                ) from None
            message = f"out of memory with one {tile} tile; restarting with {tuple(smaller)} tiles"
            log.warning(message)
            backoffs.append(message)
            requested = smaller
            continue
        return TilingRun(
            output=sink,
            tile_shape=tile,
            overlap=tile_overlap,
            batch_size=runner.batch_size,
            slab_slices=slab,
            n_tiles=n_tiles,
            n_predictor_calls=runner.n_calls,
            memory_bytes=streaming_memory_bytes(shape[1:], tile, slab, runner.batch_size),
            backoffs=backoffs,
        )


# ------------------------------------------------------------------------------------ public API
def predict_volume_25d(
    predictor: Predictor,
    source,
    sink=None,
    *,
    n_slices: int = 5,
    tile_px: int = 576,
    overlap_px: int = 32,
    blending: str = "triangular",
    batch_size: int = 4,
    size_multiple: int = 1,
    slab_slices: int | None = None,
    max_memory_gb: float | None = None,
    progress: bool = True,
) -> TilingRun:
    """2.5D slice-stack inference (DeepNet): stacks of ``n_slices`` at stride 1, 2D tiles blended in-plane.

    ``predictor`` maps ``(B, n_slices, tile, tile)`` to the same shape. Each output slice is the mean
    of the predictions of the up-to-``n_slices`` stacks that contain it (stacks are clamped to the
    volume), each prediction blended in-plane with ``blending`` weights over ``overlap_px``. Tiles
    are ``tile_px`` (a multiple of ``size_multiple``, e.g. ``2**depth``), shrunk to the slice when it
    is smaller and padded by reflection to a multiple. Returns a :class:`TilingRun`.
    """
    n_slices = int(n_slices)
    if n_slices < 1:
        raise TilingError(f"n_slices: {n_slices}; expected >= 1")
    return predict_tiled(
        predictor,
        source,
        sink,
        tile_shape=(n_slices, tile_px, tile_px),
        overlap=(n_slices - 1, overlap_px, overlap_px),
        blending=("uniform", blending, blending),
        batch_size=batch_size,
        size_multiple=(1, size_multiple, size_multiple),
        shrinkable_axes=(False, True, True),
        slab_slices=slab_slices,
        max_memory_gb=max_memory_gb,
        progress=progress,
    )


def predict_volume_3d(
    predictor: Predictor,
    source,
    sink=None,
    *,
    tile_px: int = 128,
    overlap_px: int = 16,
    blending: str = "triangular",
    batch_size: int = 1,
    size_multiple: int = 1,
    slab_slices: int | None = None,
    max_memory_gb: float | None = None,
    progress: bool = True,
) -> TilingRun:
    """3D inference (SRCNN-3D): cubic ``tile_px`` tiles overlapping by ``overlap_px``, blended along all axes.

    ``predictor`` maps ``(B, t, t, t)`` to the same shape (the caller adds the channel axis). Returns
    a :class:`TilingRun`.
    """
    return predict_tiled(
        predictor,
        source,
        sink,
        tile_shape=(tile_px,) * 3,
        overlap=(overlap_px,) * 3,
        blending=(blending,) * 3,
        batch_size=batch_size,
        size_multiple=(size_multiple,) * 3,
        shrinkable_axes=(True, True, True),
        slab_slices=slab_slices,
        max_memory_gb=max_memory_gb,
        progress=progress,
    )
