"""HDF5 volumes: dataset ``volume`` (float32, z-y-x), ``voxel_size_um``, provenance (docs/results.md#conventions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import ResrecoverError
from .atomic import atomic_output, check_free_disk
from .hdf5 import create_volume_dataset, provenance, set_attrs


class InputError(ResrecoverError):
    """An input file is missing, unreadable, of the wrong shape, or holds non-finite values."""


def write_volume(
    path: str | Path,
    volume: np.ndarray,
    voxel_size_um: float,
    datasets: dict[str, np.ndarray] | None = None,
    **attrs: Any,
) -> None:
    """Write ``volume`` atomically as float32 HDF5 with its voxel size, provenance and ``attrs``.

    Parameters
    ----------
    path : output ``.h5`` file; written under a temporary name and renamed when complete.
    volume : (nz, ny, nx) array.
    voxel_size_um : voxel edge in µm.
    datasets : extra datasets stored beside ``volume`` (e.g. ``spheres``).
    attrs : provenance (config hash, seed, ...) stored as file attributes; dicts become JSON.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ResrecoverError(f"{path}: expected a 3D volume, got shape {volume.shape}")
    nbytes = volume.size * 4 + sum(np.asarray(d).nbytes for d in (datasets or {}).values())
    check_free_disk(path, nbytes)
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as fh:
            create_volume_dataset(fh, "volume", data=volume)
            for name, data in (datasets or {}).items():
                fh.create_dataset(name, data=data)  # side data (e.g. the phantom's spheres): not a volume
            fh.attrs["voxel_size_um"] = float(voxel_size_um)
            set_attrs(fh, provenance())
            set_attrs(fh, attrs)


def open_hdf5_file(path: str | Path, what: str = "file") -> h5py.File:
    """``path`` opened read-only; InputError '``{path}: {what} not found``' or 'not a readable HDF5 file'."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} not found")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {exc}") from exc


def _open(path: str | Path, dataset: str) -> tuple[h5py.File, h5py.Dataset]:
    path = Path(path)
    fh = open_hdf5_file(path)
    if dataset not in fh:
        names = ", ".join(sorted(fh.keys())) or "none"
        fh.close()
        raise InputError(f"{path}: no dataset '{dataset}' (datasets present: {names})")
    ds = fh[dataset]
    if ds.ndim != 3:
        shape = ds.shape
        fh.close()
        raise InputError(f"{path}: dataset '{dataset}' has shape {shape}; expected a 3D z-y-x volume")
    return fh, ds


def volume_info(path: str | Path, dataset: str = "volume") -> dict[str, Any]:
    """Shape, dtype and attributes of a stored volume without reading it."""
    fh, ds = _open(path, dataset)
    try:
        info = dict(fh.attrs)
        info["shape"] = tuple(ds.shape)
        info["dtype"] = str(ds.dtype)
        return info
    finally:
        fh.close()


def read_volume(
    path: str | Path, dataset: str = "volume", check_finite: bool = True
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a whole volume as float32 plus its attributes (``voxel_size_um`` among them).

    Raises :class:`InputError` naming the file for a missing/corrupt file, a missing dataset, a wrong
    dimensionality or NaN/inf values.
    """
    fh, ds = _open(path, dataset)
    try:
        try:
            data = ds[...].astype(np.float32, copy=False)
        except OSError as exc:
            raise InputError(f"{path}: dataset '{dataset}' cannot be read (truncated or corrupt?): {exc}") from exc
        attrs = dict(fh.attrs)
    finally:
        fh.close()
    if check_finite and not np.isfinite(data).all():
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise InputError(f"{path}: dataset '{dataset}' holds {bad} NaN/inf value(s); expected finite values")
    return data, attrs


class LazyVolume:
    """A read-only handle on an HDF5 volume that reads slabs on demand (for out-of-core work)."""

    def __init__(self, path: str | Path, dataset: str = "volume"):
        self.path = Path(path)
        self._fh, self._ds = _open(path, dataset)
        self.shape = tuple(self._ds.shape)
        self.attrs = dict(self._fh.attrs)
        self.dtype = np.float32

    def __getitem__(self, key) -> np.ndarray:
        block = self._ds[key].astype(np.float32, copy=False)
        if not np.isfinite(block).all():
            raise InputError(f"{self.path}: NaN/inf values in the block {key}; expected finite values")
        return block

    def close(self) -> None:
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_volume_lazy(path: str | Path, dataset: str = "volume") -> LazyVolume:
    """Open a volume for slab-wise reading; use as a context manager."""
    return LazyVolume(path, dataset)
