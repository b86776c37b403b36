"""The HDF5 helper every writer uses: one chunking rule, the provenance record, attribute conversion.

A volume's chunks are a few z slices by in-plane blocks (:func:`volume_chunks`), so slab writes
(the tiling writes z slabs) and slice reads (figures, slice viewers) are both cheap. Every output
records the software versions (:func:`provenance`). Attributes are stored two ways:
:func:`set_attrs` keeps numbers, numeric sequences and arrays as HDF5 values (the whole-volume
writers of :mod:`resrecover.io.volume`, trust maps, pore labels); :func:`json_safe` turns a value
into one JSON holds, for Zarr attributes and the slab-by-slab sinks of :mod:`resrecover.io.sinks`
(which write HDF5 and Zarr alike).
"""

from __future__ import annotations

import json
import math
import platform
from typing import Any

import h5py
import numpy as np
import scipy

from .. import __version__

#: Target chunk of an HDF5 volume (z, y, x): a few slices by in-plane blocks.
HDF5_CHUNK_TARGET = (16, 128, 128)
#: Target chunk of a Zarr volume: larger in-plane blocks, since every chunk is a file of its own.
ZARR_CHUNK_TARGET = (16, 256, 256)


def volume_chunks(shape, target=HDF5_CHUNK_TARGET) -> tuple[int, ...]:
    """Chunks of at most ``target`` voxels per axis that tile ``shape`` evenly.

    An axis gets as many chunks as ``target`` needs, made equal: a 528-voxel axis is stored as 5
    chunks of 106 voxels (530), not as 5 of 128 (640), since HDF5 and Zarr store edge chunks whole.
    An axis no longer than the target is one chunk.
    """
    chunks = []
    for n, t in zip(shape, target):
        n = max(int(n), 1)  # an empty axis still needs a chunk of one voxel
        chunks.append(int(math.ceil(n / math.ceil(n / min(int(t), n)))))
    return tuple(chunks)


def create_volume_dataset(group, name: str, *, shape=None, dtype=np.float32, data=None, **options):
    """``group.create_dataset`` chunked by :func:`volume_chunks`; ``options`` (compression ...) pass through.

    Give ``shape`` (an empty dataset, filled slab by slab) or ``data`` (written at once, cast to ``dtype``).
    """
    if data is not None:
        data = np.asarray(data).astype(dtype, copy=False)
        shape = data.shape
    return group.create_dataset(name, shape=shape, dtype=dtype, data=data, chunks=volume_chunks(shape), **options)


def provenance() -> dict[str, str]:
    """Software versions recorded with every output."""
    return {
        "resrecover_version": __version__,
        "numpy_version": np.__version__,
        "scipy_version": scipy.__version__,
        "h5py_version": h5py.__version__,
        "python_version": platform.python_version(),
    }


def set_attrs(obj, attrs: dict[str, Any]) -> None:
    """Store ``attrs`` on an HDF5 file, group or dataset; ``None`` values are skipped.

    Numbers, strings, numeric lists and arrays are stored as they are; dicts and other lists as
    JSON text (HDF5 has no place for nested containers).
    """
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, (dict, list, tuple)) and not (
            isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value)
        ):
            value = json.dumps(value, default=str)
        obj.attrs[key] = value


def json_safe(value):
    """``value`` as an attribute JSON can hold: plain numbers and strings, a numeric list, else JSON text."""
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value):
        return list(value)
    return json.dumps(value, default=str)
