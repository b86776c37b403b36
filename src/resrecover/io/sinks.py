"""Volume sinks: every volume written slab by slab goes through :func:`volume_sink`.

A sink opens an output in the format its suffix names (``.h5``/``.hdf5``, ``.zarr``, ``.tif``,
``.npy``, or ``format='tiff_folder'``), takes ``sink[z0:z1] = block`` and appears under its path
only when complete (:func:`resrecover.io.atomic_output`); RAM holds one slab at a time whatever the
volume's size. :func:`write_volume_as` streams an array or a
:class:`~resrecover.io.readers.base.VolumeSource` into a sink; the large-FOV recovery
(:mod:`resrecover.ownscan.recovery`) hands one to the tiled network.

=============  =========================================================================
format         what is written
=============  =========================================================================
hdf5           dataset ``volume`` (float32, :func:`~resrecover.io.hdf5.volume_chunks`);
               file attributes ``voxel_size_um``, provenance and the sink's ``attrs``
zarr           an array folder, chunked by the same rule, attributes likewise
tiff           an ImageJ stack with ``spacing``/``unit`` and resolution tags (voxel size
               only); BigTIFF with resolution tags beyond ImageJ's 4 GB
npy            a plain array (NumPy has no place for the voxel size)
tiff_folder    ``slice_00000.tif`` ..., one ImageJ image per z slice
=============  =========================================================================
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from .. import ResrecoverError
from .atomic import atomic_output, check_free_disk
from .hdf5 import ZARR_CHUNK_TARGET, create_volume_dataset, json_safe, provenance, volume_chunks
from .readers.base import FORMAT_SUFFIXES, VolumeSource, check_voxel_size, require_finite, slices_per_slab

#: Formats a sink writes (``tiff_folder`` = one 2D TIFF per z slice).
WRITABLE_FORMATS = ("hdf5", "zarr", "tiff", "npy", "tiff_folder")
# Classic TIFF (and ImageJ's format) holds at most 4 GiB; larger TIFF outputs are BigTIFF.
_CLASSIC_TIFF_LIMIT = 2**32 - 2**25


def output_format(path, format: str | None = None) -> str:
    """The format a sink writes ``path`` in: ``format`` when given, else the one its suffix names.

    Raises :class:`~resrecover.ResrecoverError` for a format (or suffix) no sink writes.
    """
    if format is None:
        suffix = Path(path).suffix.lower()
        format = next((name for name in WRITABLE_FORMATS if suffix in FORMAT_SUFFIXES.get(name, ())), None)
    if format not in WRITABLE_FORMATS:
        raise ResrecoverError(
            f"{path}: cannot write format '{format or Path(path).suffix or '(no suffix)'}'; expected one of "
            f"{', '.join(WRITABLE_FORMATS)} (.h5, .zarr, .tif, .npy, or format='tiff_folder')"
        )
    return format


def output_bytes(shape, format: str = "hdf5") -> int:
    """Bytes a float32 volume takes on disk: chunk-padded for HDF5 and Zarr (uncompressed)."""
    shape = tuple(int(n) for n in shape)
    if format in ("hdf5", "zarr"):
        chunks = volume_chunks(shape, ZARR_CHUNK_TARGET) if format == "zarr" else volume_chunks(shape)
        shape = tuple(math.ceil(n / c) * c for n, c in zip(shape, chunks))
    return int(np.prod(shape)) * 4


def _tiff_metadata(voxel_size_um: float) -> dict[str, Any]:
    # ImageJ: pixel width 1/XResolution in `unit`, slice spacing in `spacing`.
    return dict(imagej=True, resolution=(1.0 / voxel_size_um, 1.0 / voxel_size_um),
                metadata={"spacing": voxel_size_um, "unit": "micron", "axes": "YX"})


class _TiffPages:
    """A TIFF stack written page by page, in z order (the tiling writes slabs in increasing z)."""

    def __init__(self, writer, shape, voxel_size_um, imagej: bool):
        self.writer = writer
        self.shape = shape
        self.next = 0
        self.imagej = imagej
        self.voxel = float(voxel_size_um)

    def __setitem__(self, key, block):
        z0, z1, _ = key.indices(self.shape[0])
        if z0 != self.next:
            raise ResrecoverError(f"TIFF output: slab {z0}:{z1} out of order (expected slice {self.next} next)")
        resolution = (1.0 / self.voxel, 1.0 / self.voxel)
        for page in np.asarray(block, dtype=np.float32):
            if self.imagej:  # one (1, ny, nx) page per call: ImageJ counts them as slices
                self.writer.write(page[None], contiguous=True, resolution=resolution,
                                  metadata={"spacing": self.voxel, "unit": "micron"})
            else:
                self.writer.write(page, contiguous=True, resolution=resolution, resolutionunit="MICROMETER",
                                  metadata={"axes": "YX"})
        self.next = z1


class _TiffFolder:
    """One ImageJ TIFF per z slice, ``slice_00000.tif`` ... (numbered to sort in z order)."""

    def __init__(self, folder: Path, shape, voxel_size_um):
        self.folder = folder
        self.shape = shape
        self.width = max(5, len(str(shape[0] - 1)))
        self.metadata = _tiff_metadata(voxel_size_um)

    def __setitem__(self, key, block):
        import tifffile

        z0, _, _ = key.indices(self.shape[0])
        for i, image in enumerate(np.asarray(block, dtype=np.float32)):
            tifffile.imwrite(self.folder / f"slice_{z0 + i:0{self.width}d}.tif", image, **self.metadata)


class VolumeSink:
    """What :func:`volume_sink` yields: ``sink[z0:z1] = block``, ``shape``, and ``attrs`` written at the end."""

    def __init__(self, target, shape, attrs):
        self.target = target
        self.shape = shape
        self.attrs = attrs

    def __setitem__(self, key, block):
        self.target[key] = block


@contextlib.contextmanager
def volume_sink(path, shape, voxel_size_um: float, *, format: str | None = None, dataset: str = "volume",
                **attrs: Any) -> Iterator[VolumeSink]:
    """Open an output volume to be written slab by slab; it appears under ``path`` only when complete.

    Parameters
    ----------
    path : the output; its suffix names the format (module docstring) unless ``format`` is given.
    shape : (nz, ny, nx); float32.
    voxel_size_um : voxel edge (µm).
    format : one of :data:`WRITABLE_FORMATS` (default: from the suffix).
    dataset : the HDF5 dataset's name.
    attrs : metadata (HDF5 / Zarr attributes, stored :func:`~resrecover.io.hdf5.json_safe`; ``None``
        values are skipped; TIFF and .npy keep only the voxel size). More can be added to
        ``sink.attrs`` inside the block.

    Yields
    ------
    :class:`VolumeSink`. Every slice must be written (TIFF: in increasing z).

    Raises
    ------
    ResrecoverError : a format no sink writes, a bad voxel size; DiskSpaceError : the output would
        not fit (checked before anything is written).
    """
    fmt = output_format(path, format)
    voxel_size_um = check_voxel_size(voxel_size_um, str(path))
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3:
        raise ResrecoverError(f"{path}: expected a 3D z-y-x volume, got shape {shape}")
    check_free_disk(path, output_bytes(shape, fmt))
    meta = {"voxel_size_um": voxel_size_um, **provenance(), **attrs}
    # zarr and tifffile are imported with their format: an HDF5 output does not load them.
    with atomic_output(path) as tmp:
        if fmt == "hdf5":
            with h5py.File(tmp, "w") as fh:
                ds = create_volume_dataset(fh, dataset, shape=shape)
                sink = VolumeSink(ds, shape, meta)
                yield sink
                for key, value in sink.attrs.items():
                    if value is not None:
                        fh.attrs[key] = json_safe(value)
                ds.attrs["voxel_size_um"] = voxel_size_um
        elif fmt == "zarr":
            import zarr

            tmp.unlink()  # atomic_output made a file; a Zarr array is a folder
            array = zarr.open_array(str(tmp), mode="w", shape=shape, chunks=volume_chunks(shape, ZARR_CHUNK_TARGET),
                                    dtype="float32")
            sink = VolumeSink(array, shape, meta)
            yield sink
            array.attrs.update({k: json_safe(v) for k, v in sink.attrs.items() if v is not None})
        elif fmt == "tiff":
            import tifffile

            imagej = int(np.prod(shape)) * 4 < _CLASSIC_TIFF_LIMIT
            with tifffile.TiffWriter(tmp, imagej=imagej, bigtiff=not imagej) as writer:
                pages = _TiffPages(writer, shape, voxel_size_um, imagej)
                yield VolumeSink(pages, shape, meta)
                if pages.next != shape[0]:
                    raise ResrecoverError(f"{path}: {pages.next} of {shape[0]} slices written")
        elif fmt == "npy":
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
            yield VolumeSink(out, shape, meta)
            out.flush()
            del out
        else:
            tmp.unlink()  # atomic_output made a file; the slices go in a folder
            tmp.mkdir()
            yield VolumeSink(_TiffFolder(tmp, shape, voxel_size_um), shape, meta)


def _as_slab_reader(volume):
    """(shape, function z0, z1 -> float32 slab) for an array, a VolumeSource or a lazy view."""
    if isinstance(volume, VolumeSource) or (hasattr(volume, "shape") and hasattr(volume, "__getitem__")
                                            and not isinstance(volume, np.ndarray)):
        shape = tuple(volume.shape)
        return shape, lambda z0, z1: np.asarray(volume[z0:z1], dtype=np.float32)
    array = np.asarray(volume)
    return array.shape, lambda z0, z1: array[z0:z1].astype(np.float32, copy=False)


def write_volume_as(
    path: str | Path,
    volume,
    voxel_size_um: float,
    format: str | None = None,
    dataset: str = "volume",
    slab_slices: int | None = None,
    **attrs: Any,
) -> Path:
    """Write a 3D volume as float32 in the format its suffix names, atomically and slab by slab.

    Parameters
    ----------
    path : the output (formats: the module docstring; a folder of slices needs ``format='tiff_folder'``).
    volume : (nz, ny, nx) array, :class:`~resrecover.io.readers.base.VolumeSource` or lazy view
        (``view[z0:z1]``, e.g. :class:`resrecover.ownscan.grid.UpsampledLow`): read slab by slab, out of core.
    voxel_size_um : voxel edge (µm).
    format : one of :data:`WRITABLE_FORMATS`; default from the suffix.
    slab_slices : z slices per slab (default: ~64 MB slabs).
    attrs : metadata, as for :func:`volume_sink`.

    Returns
    -------
    The written path. Nothing exists under ``path`` unless the write completed.

    Raises
    ------
    ResrecoverError : unknown format, not 3D, bad voxel size; InputError for NaN/inf values
        (naming the output file and the slab).
    """
    path = Path(path)
    voxel_size_um = check_voxel_size(voxel_size_um, str(path))
    format = output_format(path, format)
    shape, read_slab = _as_slab_reader(volume)
    if len(shape) != 3:
        raise ResrecoverError(f"{path}: expected a 3D z-y-x volume, got shape {tuple(shape)}")
    shape = tuple(int(n) for n in shape)
    step = slab_slices or slices_per_slab(shape)
    with volume_sink(path, shape, voxel_size_um, format=format, dataset=dataset, **attrs) as sink:
        for z0 in range(0, shape[0], step):
            z1 = min(z0 + step, shape[0])
            block = read_slab(z0, z1)
            require_finite(block, path, f"the data to write, slices {z0}:{z1}")
            sink[z0:z1] = block
    return path
