"""Training on a registered scan pair (docs/own_scans.md): the overlap as a training pair, and the training.

The training pair is the high-res voxels inside the low-res field of view (:func:`overlap_box`) and
the low-res volume resampled onto exactly those voxels: the same samples of the phase-aligned
large-FOV grid that the recovery feeds the network (:mod:`resrecover.ownscan.grid`).
:func:`write_training_pair` writes it slab by slab (rule ``pair_training_data``);
:func:`train_pair` trains DeepNet or SRCNN-3D on it with tile sizes fitted to the overlap.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from pathlib import Path

import numpy as np

from .. import ResrecoverError
from ..io import open_volume, volume_info, write_volume_as
from ..methods.device import acquire_device, torch_thread_count
from ..methods.registry import NETWORKS
from .grid import UPSAMPLING_ORDER, RegistrationError, UpsampledLow, contiguous_ranges, large_fov_grid
from .registration import as_registration

log = logging.getLogger(__name__)

#: Methods a pair can be recovered with (networks trained on the pair).
PAIR_METHODS = NETWORKS


def overlap_box(registration) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """High-res voxels ``((z0, z1), (y0, y1), (x0, x1))`` whose centres lie inside the low-res FOV.

    Raises :class:`~resrecover.ownscan.grid.RegistrationError` when the scans do not overlap.
    """
    registration = as_registration(registration)
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
        (z0, z1), (y0, y1), (x0, x1) = contiguous_ranges(key, self.shape)
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
    registration = as_registration(registration)
    lres, hres, box = _training_views(low, high, registration, order)
    return lres[:], hres[:], box


@contextlib.contextmanager
def open_registered_pair(low_path, high_path, registration, low_dataset=None, high_dataset=None):
    """Open the two scans of a registration (voxel sizes from it), checking their shapes against it.

    Yields ``(low, high, registration)`` (lazy sources and the
    :class:`~resrecover.ownscan.registration.RegistrationResult`).
    """
    registration = as_registration(registration)
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
    # torch only here: the rest of the module serves the torch-free rule pair_training_data
    from ..methods.training import train_model

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
        with acquire_device(prefer_device) as chosen:
            return train_pair(method, lres, hres, config, out_weights=out_weights, out_settings=out_settings,
                              out_log=out_log, checkpoint_dir=checkpoint_dir, seed=seed, iterations=iterations,
                              threads=threads, device=chosen)
    shape = volume_info(lres)["shape"] if isinstance(lres, (str, Path)) else np.shape(lres)
    fitted = pair_training_config(config, method, shape, iterations)
    return train_model(method, lres, hres, fitted, out_weights, out_settings, out_log, checkpoint_dir, seed,
                       device, mask=None, threads=threads)
