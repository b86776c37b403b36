"""NumPy reader: a ``.npy`` array, memory-mapped. NumPy has no place for a voxel size: it must be given."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..volume import InputError
from .base import ArraySource, VolumeSource, resolve_voxel_size


def open_npy(path: Path, voxel_size_um, check_finite) -> VolumeSource:
    """A 3D numeric ``.npy`` array as a source, memory-mapped (read only where indexed)."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise InputError(f"{path}: not a readable .npy file: {exc}") from exc
    if array.ndim != 3:
        raise InputError(f"{path}: array of shape {array.shape}; expected a 3D z-y-x volume")
    if array.dtype.kind not in "fiub":
        raise InputError(f"{path}: array of dtype {array.dtype}; expected numbers")
    # .npy carries no voxel size: it must be given.
    voxel = resolve_voxel_size(path, None, voxel_size_um)
    return ArraySource(path, array, voxel, check_finite, fmt="npy")
