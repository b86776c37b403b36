"""Recover a whole volume with a trained network, out of core (SPEC §4.3; paper §2.1.1).

:func:`recover_volume` is what the ``recover_network`` rule calls: it loads the model
(:func:`resrecover.methods.modelio.load_model`, which applies the stored input normalization and
returns material fraction), opens the input lazily, streams it through the tiling of
:mod:`resrecover.methods.tiling` (2.5D slice stacks for DeepNet, cubic tiles for SRCNN-3D) and
writes a chunked float32 HDF5 under a temporary name that is renamed when complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from resrecover import ResrecoverError
from resrecover.methods.tiling import TilingRun, predict_volume_25d, predict_volume_3d

log = logging.getLogger(__name__)


def torch_predictor(model, device, layout: str) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a torch model as a tiling predictor: float32 ``(B, tz, ty, tx)`` array -> same shape.

    Parameters
    ----------
    model : torch module in eval mode (a ``NormalizedModel``: material fraction in and out).
    device : torch device the model lives on; batches are moved there and back.
    layout : ``'2.5d'`` (the tile's z slices are the network's channels, DeepNet) or ``'3d'``
        (a channel axis of one is added and removed, SRCNN-3D).
    """
    import torch

    if layout not in ("2.5d", "3d"):
        raise ResrecoverError(f"layout: {layout!r} is not allowed; expected '2.5d' or '3d'")
    device = torch.device(device)

    def predict(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
        if layout == "3d":
            x = x[:, None]
        with torch.inference_mode():
            y = model(x)
        if isinstance(y, (tuple, list)):  # (final, intermediate): keep the final output
            y = y[0]
        if layout == "3d":
            y = y[:, 0]
        return y.to("cpu", torch.float32).numpy()

    return predict


def _output_chunks(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """HDF5 chunks: a few slices by in-plane blocks, so slab writes and slice reads are both cheap."""
    return (min(shape[0], 16), min(shape[1], 128), min(shape[2], 128))


def recover_volume(
    weights_path: str | Path,
    settings_path: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    inference_config: dict,
    device=None,
    max_memory_gb: float | None = None,
    progress: bool = True,
    **provenance,
) -> TilingRun:
    """Apply a trained DeepNet or SRCNN-3D to the volume in ``input_path``; write ``output_path``.

    Parameters
    ----------
    weights_path, settings_path : ``model.safetensors`` and ``model.json`` (see :mod:`.modelio`).
    input_path : HDF5 volume (dataset ``volume``, material fraction, attribute ``voxel_size_um``).
    output_path : HDF5 written atomically: dataset ``volume`` (float32, chunked, same shape),
        attributes ``voxel_size_um``, ``method``, ``model_sha256``, ``inference`` (JSON), the
        software versions and ``provenance``.
    inference_config : ``config['inference']``: ``tile_px``, ``overlap_px``, ``blending``,
        ``batch_size`` (DeepNet); ``srcnn_tile_px``, ``srcnn_overlap_px`` (SRCNN-3D, same blending
        and batch size).
    device : torch device; ``None`` takes one with :func:`resrecover.methods.device.acquire_device`
        (a free GPU, locked for the job, else the CPU).
    max_memory_gb : RAM budget of the tiling buffers (sets the slab depth; see :mod:`.tiling`).

    Returns
    -------
    The :class:`~resrecover.methods.tiling.TilingRun` (tile and batch used, memory bound).
    """
    if device is None:
        from resrecover.methods.device import acquire_device

        with acquire_device() as chosen:
            return recover_volume(
                weights_path, settings_path, input_path, output_path, inference_config,
                device=chosen, max_memory_gb=max_memory_gb, progress=progress, **provenance,
            )

    import h5py
    import torch

    from resrecover.io import atomic_output, check_free_disk, read_volume_lazy
    from resrecover.io.volume import provenance as software_versions
    from resrecover.methods.modelio import load_model

    model, settings = load_model(weights_path, settings_path, device=device)
    method = settings["method"]
    architecture = settings.get("architecture", {})
    blending = inference_config.get("blending", "triangular")
    batch_size = int(inference_config.get("batch_size", 4))
    with read_volume_lazy(input_path) as source:
        shape = tuple(source.shape)
        voxel_size_um = source.attrs.get("voxel_size_um")
        if voxel_size_um is None:
            raise ResrecoverError(f"{input_path}: no attribute 'voxel_size_um'; expected the voxel size in µm")
        check_free_disk(output_path, int(np.prod(shape)) * 4)
        started = time.perf_counter()
        with atomic_output(output_path) as tmp, h5py.File(tmp, "w") as fh:
            sink = fh.create_dataset("volume", shape=shape, dtype=np.float32, chunks=_output_chunks(shape))
            if method == "deepnet":
                run = predict_volume_25d(
                    torch_predictor(model, device, "2.5d"),
                    source,
                    sink,
                    n_slices=int(architecture.get("n_slices", 5)),
                    tile_px=int(inference_config.get("tile_px", 576)),
                    overlap_px=int(inference_config.get("overlap_px", 32)),
                    blending=blending,
                    batch_size=batch_size,
                    size_multiple=2 ** int(architecture.get("depth", 0)),
                    max_memory_gb=max_memory_gb,
                    progress=progress,
                )
            elif method == "srcnn":
                run = predict_volume_3d(
                    torch_predictor(model, device, "3d"),
                    source,
                    sink,
                    tile_px=int(inference_config.get("srcnn_tile_px", 128)),
                    overlap_px=int(inference_config.get("srcnn_overlap_px", 16)),
                    blending=blending,
                    batch_size=batch_size,
                    max_memory_gb=max_memory_gb,
                    progress=progress,
                )
            else:
                raise ResrecoverError(
                    f"{settings_path}: method {method!r} is not a network; expected 'deepnet' or 'srcnn'"
                )
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
                        "batch_size": run.batch_size,
                        "slab_slices": run.slab_slices,
                        "backoffs": run.backoffs,
                    }
                ),
                "seconds": round(seconds, 3),
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


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``torch.set_num_threads(threads)`` (``None`` or 0 leaves torch's default)."""
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(old)
