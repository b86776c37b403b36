"""Reading and writing volumes and tables: HDF5 contract of docs/results.md#conventions, atomic writes, input checks.

=================  =================================================================================
module             what it holds
=================  =================================================================================
``atomic``         outputs written under a temporary name and renamed; the free-disk check
``hdf5``           the one chunking rule (:func:`~resrecover.io.hdf5.volume_chunks`), provenance, attributes
``volume``         the workflow's HDF5 volumes (dataset ``volume`` + ``voxel_size_um``): read, write
``readers``        :func:`open_volume`: TIFF, HDF5, Zarr, NumPy, Zeiss .txm read lazily, one module each
``sinks``          :func:`volume_sink` and :func:`write_volume_as`: any volume written slab by slab
=================  =================================================================================
"""

from .atomic import atomic_output, atomic_write_csv, check_free_disk
from .readers import open_volume
from .sinks import volume_sink, write_volume_as
from .volume import InputError, read_volume, read_volume_lazy, volume_info, write_volume

__all__ = [
    "InputError",
    "atomic_output",
    "atomic_write_csv",
    "check_free_disk",
    "open_volume",
    "volume_sink",
    "write_volume_as",
    "read_volume",
    "read_volume_lazy",
    "volume_info",
    "write_volume",
]
