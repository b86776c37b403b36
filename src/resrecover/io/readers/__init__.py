"""Volumes in the formats microscopists have (docs/own_scans.md#what-you-need), opened lazily.

:func:`open_volume` opens a 3D z-y-x volume without reading it and returns a
:class:`~resrecover.io.readers.base.VolumeSource`: ``src[z0:z1, y0:y1, x0:x1]`` reads just that
block as float32, ``src.shape``, ``src.voxel_size_um`` (µm, cubic voxels), ``src.path``; it is a
context manager. One module per format reads it (``tiff``, ``hdf5``, ``zarr``, ``npy``, ``txm``);
what they share is in ``base``.

========================  ==============================================  ============================
format                    how to name it                                  voxel size read from
========================  ==============================================  ============================
multi-page TIFF           ``scan.tif`` / ``scan.tiff``                    ImageJ ``spacing``/``unit``
                                                                          and X/YResolution tags
folder of 2D TIFF slices  ``slices/`` (natural order, numbered sequence   the first slice's tags
                          checked for gaps)
HDF5                      ``scan.h5`` + ``dataset=``, or                  attribute ``voxel_size_um``
                          ``scan.h5:/path/to/dataset``                    (or ``element_size_um``)
Zarr (v2 or v3)           ``scan.zarr`` (an array, or a group +           attribute ``voxel_size_um``,
                          ``dataset=``/``scan.zarr:/path``)               or OME-NGFF ``multiscales``
NumPy                     ``scan.npy`` (memory-mapped)                    none: give ``voxel_size_um``
Zeiss reconstruction      ``scan.txm`` (needs ``txrm2tiff``)              ``ImageInfo/PixelSize``
========================  ==============================================  ============================

Where the file carries no voxel size, ``voxel_size_um`` must be given; a missing one raises
:class:`~resrecover.io.InputError` naming the file. A given value overrides the file's (with a
warning), for files whose metadata is known to be wrong. Every block read is checked for NaN/inf
(``check_finite=True``), so a damaged file is refused with its name, not propagated.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..volume import InputError
from .base import FORMAT_SUFFIXES, VolumeSource

__all__ = ["FORMAT_SUFFIXES", "VolumeSource", "detect_format", "open_volume", "split_internal_path"]


def split_internal_path(path: str | Path) -> tuple[Path, str | None]:
    """Split ``file.h5:/group/dataset`` (or ``x.zarr:/path``) into the file and the inner path.

    A path without such a suffix (or one that exists as given) comes back unchanged with ``None``.
    """
    text = str(path)
    if Path(text).exists():
        return Path(text), None
    containers = FORMAT_SUFFIXES["hdf5"] + FORMAT_SUFFIXES["zarr"]
    match = re.match(r"^(.*?(?:" + "|".join(re.escape(s) for s in containers) + r")):(.*)$", text, re.IGNORECASE)
    if match and match.group(2):
        return Path(match.group(1)), match.group(2)
    return Path(text), None


def detect_format(path: str | Path) -> str:
    """Format name (a key of :data:`FORMAT_SUFFIXES` or ``tiff_folder``) from the path's suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    for name, suffixes in FORMAT_SUFFIXES.items():
        if suffix in suffixes:
            return name
    if path.is_dir():
        if (path / "zarr.json").exists() or (path / ".zarray").exists() or (path / ".zgroup").exists():
            return "zarr"
        return "tiff_folder"
    known = ", ".join(s for suffixes in FORMAT_SUFFIXES.values() for s in suffixes)
    raise InputError(f"{path}: unknown volume format '{suffix or '(no suffix)'}'; expected one of {known} or a folder of TIFF slices")


def open_volume(
    path: str | Path,
    dataset: str | None = None,
    voxel_size_um: float | None = None,
    check_finite: bool = True,
) -> VolumeSource:
    """Open a 3D volume lazily in any supported format (see the module docstring).

    Parameters
    ----------
    path : file or folder; ``file.h5:/group/dataset`` and ``store.zarr:/path`` name an inner array.
    dataset : the inner array of an HDF5 file or Zarr group (default: ``volume`` when present, else
        the only 3D array, else the full-resolution level of an OME-NGFF group).
    voxel_size_um : voxel edge (µm); required when the file carries none (.npy, bare TIFF); when
        given, it overrides the file's value (logged).
    check_finite : refuse any block read that holds NaN/inf (InputError naming the file).

    Returns
    -------
    A :class:`VolumeSource`; use it as a context manager (``with open_volume(p) as src:``).

    Raises
    ------
    InputError : the file is missing, unreadable, not 3D, has no voxel size, anisotropic voxels,
        gaps or mismatched slices (TIFF folder), or (on reading) NaN/inf values.
    """
    if isinstance(path, VolumeSource):
        return path
    file, inner = split_internal_path(path)
    if inner is not None:
        if dataset is not None and dataset.strip("/") != inner.strip("/"):
            raise InputError(f"{path}: names dataset '{inner}' but dataset='{dataset}' was also given")
        dataset = inner
    if not file.exists():
        raise InputError(f"{file}: not found")
    fmt = detect_format(file)
    if dataset is not None and fmt not in ("hdf5", "zarr"):
        raise InputError(f"{file}: dataset='{dataset}' given, but a {fmt} file holds a single volume")
    # Each reader is imported with its format: opening an HDF5 file does not load zarr or tifffile.
    if fmt == "hdf5":
        from .hdf5 import open_hdf5

        return open_hdf5(file, dataset, voxel_size_um, check_finite)
    if fmt == "zarr":
        from .zarr import open_zarr

        return open_zarr(file, dataset, voxel_size_um, check_finite)
    if fmt in ("tiff", "tiff_folder"):
        from .tiff import open_tiff, open_tiff_folder

        opener = open_tiff if fmt == "tiff" else open_tiff_folder
        return opener(file, voxel_size_um, check_finite)
    if fmt == "npy":
        from .npy import open_npy

        return open_npy(file, voxel_size_um, check_finite)
    from .txm import open_txm

    return open_txm(file, voxel_size_um, check_finite)
