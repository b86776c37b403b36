"""What every volume reader shares: :class:`VolumeSource`, voxel-size metadata, key and finiteness checks.

A reader (one module per format in this package) opens a file without reading it and returns a
:class:`VolumeSource`; :func:`resrecover.io.readers.open_volume` picks the reader from the path.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ... import ResrecoverError
from ..volume import InputError


def default_dataset(path, names: list[str], has_volume: bool, noun: str, syntax: str) -> str:
    """The dataset to read when none is named: ``volume`` when present, else the only 3D one.

    InputError otherwise, listing ``names`` (the 3D ``noun``: datasets, arrays) and the ``syntax``
    that names one in the path.
    """
    if has_volume:
        return "volume"
    if len(names) == 1:
        return names[0]
    raise InputError(f"{path}: {len(names)} 3D {noun} ({', '.join(names) or 'none'}); name one with dataset= or {syntax}")

log = logging.getLogger(__name__)

#: Suffixes of the supported single-file and folder formats, by format name.
FORMAT_SUFFIXES = {
    "hdf5": (".h5", ".hdf5", ".hdf", ".he5", ".nxs"),
    "zarr": (".zarr",),
    "tiff": (".tif", ".tiff"),
    "npy": (".npy",),
    "txm": (".txm", ".txrm"),
}

# Length units met in TIFF/ImageJ/OME metadata, in µm.
_UNIT_UM = {
    "um": 1.0, "µm": 1.0, "μm": 1.0, "\\u00b5m": 1.0, "micron": 1.0, "microns": 1.0,
    "micrometer": 1.0, "micrometre": 1.0, "micrometers": 1.0,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
    "cm": 1e4, "centimeter": 1e4, "m": 1e6, "meter": 1e6, "inch": 25400.0, "in": 25400.0,
}
# Relative difference between axes above which voxels count as anisotropic.
_ISOTROPY_TOLERANCE = 1e-3
# Bytes of float32 read or written per slab when streaming a volume.
_SLAB_BYTES = 64 * 2**20


# --------------------------------------------------------------------------------------------
# Voxel sizes and blocks
# --------------------------------------------------------------------------------------------


def unit_to_um(unit: Any) -> float | None:
    """µm per ``unit`` (a length unit as TIFF, ImageJ or OME metadata spell it), or None when unknown."""
    if unit is None:
        return None
    if isinstance(unit, bytes):
        unit = unit.decode("utf-8", "ignore")
    return _UNIT_UM.get(str(unit).strip().lower())


def check_voxel_size(value: Any, where: str) -> float:
    """``value`` as a positive finite voxel edge (µm); InputError naming ``where`` otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: voxel_size_um={value!r}; expected a positive number of µm") from None
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"{where}: voxel_size_um={value!r}; expected a positive number of µm")
    return v


def isotropic_voxel(path: Path | str, zyx: tuple[float, float, float] | float | None) -> float | None:
    """One voxel edge (µm) from a per-axis triple, refusing anisotropic voxels."""
    if zyx is None:
        return None
    values = np.atleast_1d(np.asarray(zyx, dtype=np.float64)).ravel()
    if values.size == 0:
        return None
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise InputError(f"{path}: voxel size {tuple(values.tolist())} µm in the file; expected positive values")
    if values.max() - values.min() > _ISOTROPY_TOLERANCE * values.max():
        raise InputError(
            f"{path}: voxel size (z, y, x) = {tuple(round(v, 6) for v in values.tolist())} µm is anisotropic; "
            "expected cubic voxels (resample the volume first)"
        )
    return float(values.mean())


def resolve_voxel_size(path: Path | str, from_file: float | None, given: float | None) -> float:
    """The voxel edge to use: the given one (a differing file value is logged), else the file's; one is needed."""
    if given is not None:
        given = check_voxel_size(given, str(path))
        if from_file is not None and abs(from_file - given) > 1e-6 * max(from_file, given):
            log.warning("%s: the file says %.6g µm voxels; using the given %.6g µm", path, from_file, given)
        return given
    if from_file is None:
        raise InputError(f"{path}: the file carries no voxel size; give voxel_size_um (µm)")
    return from_file


def require_finite(block: np.ndarray, path: Path | str, where: str) -> None:
    """Refuse NaN/inf in ``block`` with an InputError naming ``path`` and ``where`` in it."""
    if block.dtype.kind == "f" and not np.isfinite(block).all():
        bad = int(block.size - np.count_nonzero(np.isfinite(block)))
        raise InputError(f"{path}: {bad} NaN/inf value(s) in {where}; expected finite values")


def attr_voxel(attrs) -> tuple[float, float, float] | float | None:
    """Voxel size from HDF5 or Zarr attributes: ``voxel_size_um``, else Fiji/ilastik's ``element_size_um`` (z, y, x)."""
    if "voxel_size_um" in attrs:
        return np.asarray(attrs["voxel_size_um"], dtype=np.float64)
    if "element_size_um" in attrs:
        return np.asarray(attrs["element_size_um"], dtype=np.float64)
    return None


def _normalize_key(key: Any) -> tuple:
    """A 3-tuple of ints/slices from a numpy-style key (Ellipsis expanded)."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        fill = 3 - (len(key) - 1)
        key = key[:i] + (slice(None),) * fill + key[i + 1 :]
    if len(key) > 3:
        raise IndexError(f"too many indices for a 3D volume: {key!r}")
    key = key + (slice(None),) * (3 - len(key))
    for k in key:
        if not isinstance(k, (slice, int, np.integer)):
            raise IndexError(f"only integers and slices index a volume source, got {k!r}")
    return key


def _describe_key(key: tuple) -> str:
    parts = []
    for k in key:
        if isinstance(k, slice):
            parts.append(f"{'' if k.start is None else k.start}:{'' if k.stop is None else k.stop}")
        else:
            parts.append(str(int(k)))
    return "block [" + ", ".join(parts) + "]"


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


class VolumeSource:
    """A read-only 3D z-y-x volume read block by block as float32.

    Attributes
    ----------
    path : the file or folder (for HDF5/Zarr, the container; ``dataset`` names the array in it).
    shape : (nz, ny, nx).
    dtype : the stored numpy dtype (blocks are always returned as float32).
    voxel_size_um : voxel edge (µm).
    format : ``hdf5``, ``zarr``, ``tiff``, ``tiff_folder``, ``npy`` or ``txm``.
    check_finite : refuse (InputError naming the file) any block holding NaN/inf.
    """

    format = "unknown"

    def __init__(self, path: Path, shape: tuple[int, ...], dtype, voxel_size_um: float,
                 check_finite: bool = True, dataset: str | None = None):
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.voxel_size_um = float(voxel_size_um)
        self.check_finite = check_finite
        self.dataset = dataset

    # Subclasses read one normalized key (3-tuple of ints/slices) in the stored dtype.
    def _read(self, key: tuple) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, key) -> np.ndarray:
        key = _normalize_key(key)
        try:
            block = np.asarray(self._read(key))
        except ResrecoverError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise InputError(f"{self.path}: cannot read {_describe_key(key)} (truncated or corrupt?): {exc}") from exc
        if self.check_finite:
            require_finite(block, self.path, _describe_key(key))
        return block.astype(np.float32, copy=False)

    @property
    def ndim(self) -> int:
        return 3

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Bytes of the whole volume as float32."""
        return self.size * 4

    def __len__(self) -> int:
        return self.shape[0]

    def read(self) -> np.ndarray:
        """The whole volume as one float32 array."""
        return self[:, :, :]

    def slabs(self, n_slices: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(z0, block)`` for consecutive z slabs (about 64 MB each unless ``n_slices`` is given)."""
        n = n_slices or slices_per_slab(self.shape)
        for z0 in range(0, self.shape[0], n):
            yield z0, self[z0 : min(z0 + n, self.shape[0])]

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        inner = f":{self.dataset}" if self.dataset else ""
        return (f"{type(self).__name__}('{self.path}{inner}', shape={self.shape}, dtype={self.dtype}, "
                f"voxel_size_um={self.voxel_size_um:g})")


def slices_per_slab(shape: tuple[int, ...]) -> int:
    """z slices per slab when a volume of ``shape`` is streamed: about 64 MB of float32."""
    per_slice = max(1, int(np.prod(shape[1:])) * 4)
    return max(1, min(int(shape[0]), _SLAB_BYTES // per_slice))


class ArraySource(VolumeSource):
    """Any array-like with numpy basic indexing (h5py dataset, zarr array, memmap)."""

    def __init__(self, path, array, voxel_size_um, check_finite, dataset=None, fmt="unknown", closer=None):
        super().__init__(path, array.shape, array.dtype, voxel_size_um, check_finite, dataset)
        self._array = array
        self._closer = closer
        self.format = fmt

    def _read(self, key):
        return self._array[key]

    def close(self):
        if self._closer is not None:
            self._closer()
            self._closer = None


class SliceStackSource(VolumeSource):
    """A stack read one z slice at a time (folder of TIFFs, Zeiss .txm)."""

    def _read_slice(self, z: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self, key):
        zkey, ykey, xkey = key
        if isinstance(zkey, slice):
            indices = range(*zkey.indices(self.shape[0]))
            ny = len(range(*ykey.indices(self.shape[1]))) if isinstance(ykey, slice) else None
            nx = len(range(*xkey.indices(self.shape[2]))) if isinstance(xkey, slice) else None
            out_shape = (len(indices),) + tuple(n for n in (ny, nx) if n is not None)
            out = np.empty(out_shape, dtype=self.dtype)
            for i, z in enumerate(indices):
                out[i] = self._checked_slice(z)[ykey, xkey]
            return out
        z = int(zkey) + (self.shape[0] if int(zkey) < 0 else 0)
        if not 0 <= z < self.shape[0]:
            raise IndexError(f"{self.path}: slice {zkey} out of range for {self.shape[0]} slices")
        return self._checked_slice(z)[ykey, xkey]

    def _checked_slice(self, z: int) -> np.ndarray:
        image = np.asarray(self._read_slice(z))
        if image.shape != self.shape[1:]:
            raise InputError(f"{self._slice_name(z)}: slice of shape {image.shape}; expected {self.shape[1:]}")
        return image

    def _slice_name(self, z: int) -> str:
        return f"{self.path} (slice {z})"

