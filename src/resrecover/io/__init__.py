"""Reading and writing volumes and tables: HDF5 contract of docs/results.md#conventions, atomic writes, input checks."""

from .atomic import atomic_output, atomic_write_csv, check_free_disk
from .formats import open_volume, write_volume_as
from .volume import InputError, read_volume, read_volume_lazy, volume_info, write_volume

__all__ = [
    "InputError",
    "atomic_output",
    "atomic_write_csv",
    "check_free_disk",
    "open_volume",
    "write_volume_as",
    "read_volume",
    "read_volume_lazy",
    "volume_info",
    "write_volume",
]
