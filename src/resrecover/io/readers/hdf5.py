"""HDF5 reader: a 3D dataset of any file (``scan.h5`` + ``dataset=``, or ``scan.h5:/path/to/dataset``).

Without a dataset name: ``volume`` when present, else the only 3D dataset. The voxel size comes
from the dataset's attributes, else the file's (``voxel_size_um`` or ``element_size_um``).
"""

from __future__ import annotations

from pathlib import Path

import h5py

from ..volume import InputError, open_hdf5_file
from .base import ArraySource, VolumeSource, attr_voxel, default_dataset, isotropic_voxel, resolve_voxel_size


def open_hdf5(path: Path, dataset, voxel_size_um, check_finite) -> VolumeSource:
    """One 3D numeric dataset of an HDF5 file as a source (the file stays open until ``close``)."""
    fh = open_hdf5_file(path)
    try:
        candidates: list[str] = []
        fh.visititems(lambda name, obj: candidates.append(name)
                      if isinstance(obj, h5py.Dataset) and obj.ndim == 3 else None)
        if dataset is None:
            has_volume = "volume" in fh and isinstance(fh["volume"], h5py.Dataset)
            dataset = default_dataset(path, candidates, has_volume, "datasets", "file.h5:/path")
        dataset = dataset.strip("/") or "/"
        if dataset not in fh or not isinstance(fh[dataset], h5py.Dataset):
            raise InputError(f"{path}: no dataset '{dataset}' (3D datasets present: {', '.join(candidates) or 'none'})")
        ds = fh[dataset]
        if ds.ndim != 3:
            raise InputError(f"{path}: dataset '{dataset}' has shape {ds.shape}; expected a 3D z-y-x volume")
        if ds.dtype.kind not in "fiub":
            raise InputError(f"{path}: dataset '{dataset}' has dtype {ds.dtype}; expected numbers")
        from_file = attr_voxel(ds.attrs)
        if from_file is None:
            from_file = attr_voxel(fh.attrs)
        voxel = resolve_voxel_size(f"{path}:/{dataset}", isotropic_voxel(path, from_file), voxel_size_um)
    except BaseException:
        fh.close()
        raise
    return ArraySource(path, ds, voxel, check_finite, dataset=dataset, fmt="hdf5", closer=fh.close)
