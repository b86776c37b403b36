"""Volumes in the formats microscopists have (docs/own_scans.md#what-you-need): lazy readers and atomic writers.

:func:`open_volume` opens a 3D z-y-x volume without reading it and returns a :class:`VolumeSource`:
``src[z0:z1, y0:y1, x0:x1]`` reads just that block as float32, ``src.shape``,
``src.voxel_size_um`` (µm, cubic voxels), ``src.path``; it is a context manager.

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

:func:`write_volume_as` writes ``.h5``/``.zarr``/``.tif(f)``/``.npy`` (and a folder of TIFF slices)
atomically, slab by slab, from an array or from a :class:`VolumeSource` (out of core).
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .. import ResrecoverError
from .atomic import atomic_output, check_free_disk
from .volume import InputError, provenance

log = logging.getLogger(__name__)

#: Suffixes of the supported single-file and folder formats, by format name.
FORMAT_SUFFIXES = {
    "hdf5": (".h5", ".hdf5", ".hdf", ".he5", ".nxs"),
    "zarr": (".zarr",),
    "tiff": (".tif", ".tiff"),
    "npy": (".npy",),
    "txm": (".txm", ".txrm"),
}
#: Formats :func:`write_volume_as` can write (``tiff_folder`` = one 2D TIFF per z slice).
WRITABLE_FORMATS = ("hdf5", "zarr", "tiff", "npy", "tiff_folder")

# Length units met in TIFF/ImageJ/OME metadata, in µm.
_UNIT_UM = {
    "um": 1.0, "µm": 1.0, "μm": 1.0, "\\u00b5m": 1.0, "micron": 1.0, "microns": 1.0,
    "micrometer": 1.0, "micrometre": 1.0, "micrometers": 1.0,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
    "cm": 1e4, "centimeter": 1e4, "m": 1e6, "meter": 1e6, "inch": 25400.0, "in": 25400.0,
}
# TIFF ResolutionUnit tag values (1 = none, 2 = inch, 3 = cm; 4/5 are tifffile's mm/µm extensions).
_TIFF_RESUNIT_UM = {2: 25400.0, 3: 1e4, 4: 1e3, 5: 1.0}
# Relative difference between axes above which voxels count as anisotropic.
_ISOTROPY_TOLERANCE = 1e-3
# Bytes of float32 read or written per slab when streaming a volume.
_SLAB_BYTES = 64 * 2**20


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _unit_to_um(unit: Any) -> float | None:
    if unit is None:
        return None
    if isinstance(unit, bytes):
        unit = unit.decode("utf-8", "ignore")
    return _UNIT_UM.get(str(unit).strip().lower())


def _check_voxel_value(value: Any, where: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: voxel_size_um={value!r}; expected a positive number of µm") from None
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"{where}: voxel_size_um={value!r}; expected a positive number of µm")
    return v


def _isotropic(path: Path | str, zyx: tuple[float, float, float] | float | None) -> float | None:
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


def _resolve_voxel_size(path: Path | str, from_file: float | None, given: float | None) -> float:
    if given is not None:
        given = _check_voxel_value(given, str(path))
        if from_file is not None and abs(from_file - given) > 1e-6 * max(from_file, given):
            log.warning("%s: the file says %.6g µm voxels; using the given %.6g µm", path, from_file, given)
        return given
    if from_file is None:
        raise InputError(f"{path}: the file carries no voxel size; give voxel_size_um (µm)")
    return from_file


def _require_finite(block: np.ndarray, path: Path | str, where: str) -> None:
    if block.dtype.kind == "f" and not np.isfinite(block).all():
        bad = int(block.size - np.count_nonzero(np.isfinite(block)))
        raise InputError(f"{path}: {bad} NaN/inf value(s) in {where}; expected finite values")


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


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


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
            _require_finite(block, self.path, _describe_key(key))
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
        n = n_slices or _slab_slices(self.shape)
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


def _slab_slices(shape: tuple[int, ...]) -> int:
    per_slice = max(1, int(np.prod(shape[1:])) * 4)
    return max(1, min(int(shape[0]), _SLAB_BYTES // per_slice))


class _ArraySource(VolumeSource):
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


class _SliceStackSource(VolumeSource):
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


# --- TIFF ------------------------------------------------------------------------------------


def _tiff_voxel_zyx(tf, page) -> tuple[float, float, float] | None:
    """(z, y, x) voxel size in µm from ImageJ metadata or the resolution tags, else None.

    ImageJ stores the pixel width as 1/XResolution in ``unit`` and the slice spacing as ``spacing``.
    Plain TIFFs have X/YResolution in pixels per ResolutionUnit (inch or cm) and no z spacing: CT
    slices are taken as cubic voxels then. Resolution tags without a unit (tifffile's default 1/1)
    carry no size.
    """

    def per_unit(tag_name: str) -> float | None:
        tag = page.tags.get(tag_name)
        if tag is None:
            return None
        value = tag.value
        num, den = (value if isinstance(value, tuple) else (value, 1))
        return float(num) / float(den) if num and den else None

    xres, yres = per_unit("XResolution"), per_unit("YResolution")
    ij = tf.imagej_metadata or {}
    scale = _unit_to_um(ij.get("unit")) if ij else None
    if scale is None:
        unit_tag = page.tags.get("ResolutionUnit")
        scale = _TIFF_RESUNIT_UM.get(int(unit_tag.value)) if unit_tag is not None else None
    if scale is None or not xres:
        return None
    x = scale / xres
    y = scale / yres if yres else x
    spacing = ij.get("spacing") if ij else None
    z = float(spacing) * scale if spacing else (x + y) / 2.0
    return (z, y, x)


class _TiffStackSource(_ArraySource):
    format = "tiff"


def _open_tiff(path: Path, voxel_size_um, check_finite) -> VolumeSource:
    import tifffile
    import zarr

    try:
        tf = tifffile.TiffFile(path)
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error ...
        raise InputError(f"{path}: not a readable TIFF file: {exc}") from exc
    try:
        series = tf.series[0]
        if "S" in series.axes:
            raise InputError(f"{path}: TIFF with colour samples (axes {series.axes}); expected a grey-value volume")
        if len(series.shape) == 2:
            raise InputError(f"{path}: a single 2D image {series.shape}; expected a 3D stack (a multi-page TIFF, "
                             "or a folder of slices: open the folder)")
        if len(series.shape) != 3:
            raise InputError(f"{path}: TIFF series of shape {series.shape} (axes {series.axes}); expected a 3D z-y-x stack")
        # tifffile's zarr view reads only the pages (or strips/tiles) a block needs.
        array = zarr.open(tf.aszarr(series=0), mode="r")
        voxel = _resolve_voxel_size(path, _isotropic(path, _tiff_voxel_zyx(tf, series.pages[0])), voxel_size_um)
    except BaseException:
        tf.close()
        raise
    return _TiffStackSource(path, array, voxel, check_finite, fmt="tiff", closer=tf.close)


def _numbered_sequence_check(folder: Path, files: list[Path]) -> list[Path]:
    """Order slice files naturally and refuse gaps, duplicates and strays in a numbered sequence."""
    pattern = re.compile(r"^(.*?)(\d+)(\D*)$")
    groups: dict[tuple[str, str, str], list[tuple[int, Path, str]]] = {}
    unnumbered = []
    for f in files:
        m = pattern.match(f.stem)
        if m is None:
            unnumbered.append(f)
            continue
        groups.setdefault((m.group(1), m.group(3), f.suffix.lower()), []).append((int(m.group(2)), f, m.group(2)))
    if not groups:  # no numbers at all: natural order of the names
        return sorted(files, key=lambda p: _natural_key(p.name))
    main_key = max(groups, key=lambda k: len(groups[k]))
    main = groups[main_key]
    strays = unnumbered + [f for k, members in groups.items() if k != main_key for _, f, _ in members]
    if strays:
        stray = sorted(strays, key=lambda p: _natural_key(p.name))[0]
        raise InputError(
            f"{stray}: does not belong to the slice sequence {main[0][1].name}... in {folder}; "
            "expected only numbered slices of one name pattern in the folder"
        )
    main.sort(key=lambda item: item[0])
    numbers = [n for n, _, _ in main]
    seen: dict[int, Path] = {}
    for n, f, _ in main:
        if n in seen:
            raise InputError(f"{f}: slice number {n} repeats {seen[n].name}; expected one file per slice")
        seen[n] = f
    expected = range(numbers[0], numbers[-1] + 1)
    if len(numbers) != len(expected):
        missing = next(n for n in expected if n not in seen)
        widths = {len(digits) for _, _, digits in main}
        width = widths.pop() if len(widths) == 1 else 0
        prefix, tail, _ = main_key
        name = f"{prefix}{missing:0{width}d}{tail}{main[0][1].suffix}"
        raise InputError(
            f"{folder / name}: slice missing from the numbered sequence "
            f"{main[0][1].name} .. {main[-1][1].name} ({len(expected) - len(numbers)} missing)"
        )
    return [f for _, f, _ in main]


class _TiffFolderSource(_SliceStackSource):
    format = "tiff_folder"

    def __init__(self, path, files, shape, dtype, voxel_size_um, check_finite):
        super().__init__(path, shape, dtype, voxel_size_um, check_finite)
        self.files = files

    def _read_slice(self, z):
        import tifffile

        try:
            return tifffile.imread(self.files[z])
        except Exception as exc:
            raise InputError(f"{self.files[z]}: not a readable TIFF slice: {exc}") from exc

    def _slice_name(self, z):
        return str(self.files[z])


def _open_tiff_folder(folder: Path, voxel_size_um, check_finite) -> VolumeSource:
    import tifffile

    files = [f for f in folder.iterdir()
             if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in FORMAT_SUFFIXES["tiff"]]
    if not files:
        raise InputError(f"{folder}: no .tif/.tiff slices in the folder")
    files = _numbered_sequence_check(folder, files)
    first_shape = first_dtype = None
    voxel_zyx = None
    # Headers only: every slice must be one 2D page of the first slice's shape and dtype.
    for i, f in enumerate(files):
        try:
            with tifffile.TiffFile(f) as tf:
                series = tf.series[0]
                shape, dtype = tuple(series.shape), series.dtype
                if i == 0:
                    voxel_zyx = _tiff_voxel_zyx(tf, series.pages[0])
        except Exception as exc:
            raise InputError(f"{f}: not a readable TIFF slice: {exc}") from exc
        if len(shape) != 2:
            raise InputError(f"{f}: slice of shape {shape}; expected a single 2D image per file")
        if i == 0:
            first_shape, first_dtype = shape, dtype
        elif shape != first_shape or dtype != first_dtype:
            raise InputError(
                f"{f}: slice of shape {shape} and dtype {dtype}; expected {first_shape} {first_dtype} like {files[0].name}"
            )
    voxel = _resolve_voxel_size(folder, _isotropic(folder, voxel_zyx), voxel_size_um)
    return _TiffFolderSource(folder, files, (len(files),) + first_shape, first_dtype, voxel, check_finite)


# --- HDF5 and Zarr -----------------------------------------------------------------------------


def _attr_voxel(attrs) -> tuple[float, float, float] | float | None:
    if "voxel_size_um" in attrs:
        return np.asarray(attrs["voxel_size_um"], dtype=np.float64)
    if "element_size_um" in attrs:  # Fiji/ilastik HDF5 convention, (z, y, x)
        return np.asarray(attrs["element_size_um"], dtype=np.float64)
    return None


def _open_hdf5(path: Path, dataset, voxel_size_um, check_finite) -> VolumeSource:
    import h5py

    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {exc}") from exc
    try:
        candidates: list[str] = []
        fh.visititems(lambda name, obj: candidates.append(name)
                      if isinstance(obj, h5py.Dataset) and obj.ndim == 3 else None)
        if dataset is None:
            if "volume" in fh and isinstance(fh["volume"], h5py.Dataset):
                dataset = "volume"
            elif len(candidates) == 1:
                dataset = candidates[0]
            else:
                raise InputError(
                    f"{path}: {len(candidates)} 3D datasets ({', '.join(candidates) or 'none'}); "
                    "name one with dataset= or file.h5:/path"
                )
        dataset = dataset.strip("/") or "/"
        if dataset not in fh or not isinstance(fh[dataset], h5py.Dataset):
            raise InputError(f"{path}: no dataset '{dataset}' (3D datasets present: {', '.join(candidates) or 'none'})")
        ds = fh[dataset]
        if ds.ndim != 3:
            raise InputError(f"{path}: dataset '{dataset}' has shape {ds.shape}; expected a 3D z-y-x volume")
        if ds.dtype.kind not in "fiub":
            raise InputError(f"{path}: dataset '{dataset}' has dtype {ds.dtype}; expected numbers")
        from_file = _attr_voxel(ds.attrs)
        if from_file is None:
            from_file = _attr_voxel(fh.attrs)
        voxel = _resolve_voxel_size(f"{path}:/{dataset}", _isotropic(path, from_file), voxel_size_um)
    except BaseException:
        fh.close()
        raise
    return _ArraySource(path, ds, voxel, check_finite, dataset=dataset, fmt="hdf5", closer=fh.close)


def _ome_voxel(attrs) -> tuple[str, tuple[float, float, float] | None] | None:
    """(path of the full-resolution array, its (z, y, x) voxel in µm) from OME-NGFF multiscales."""
    ome = attrs.get("ome", attrs)
    multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
    if not multiscales:
        return None
    ms = multiscales[0]
    first = ms["datasets"][0]
    axes = ms.get("axes", [])
    scale = None
    for transform in first.get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            scale = list(transform["scale"])
    for transform in ms.get("coordinateTransformations", []):  # a global scale multiplies the dataset's
        if transform.get("type") == "scale" and scale is not None:
            scale = [a * b for a, b in zip(scale, transform["scale"])]
    if scale is None or len(scale) < 3:
        return first["path"], None
    units = [a.get("unit") if isinstance(a, dict) else None for a in axes][-3:] or [None] * 3
    factors = [_unit_to_um(u) for u in units]
    if any(f is None for f in factors):
        return first["path"], None
    return first["path"], tuple(s * f for s, f in zip(scale[-3:], factors))


def _open_zarr(path: Path, dataset, voxel_size_um, check_finite) -> VolumeSource:
    import zarr

    if not path.exists():
        raise InputError(f"{path}: not found")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise InputError(f"{path}: not a readable Zarr store: {exc}") from exc
    from_file = None
    if isinstance(node, zarr.Group):
        group_attrs = dict(node.attrs)
        ome = _ome_voxel(group_attrs)
        if dataset is None:
            arrays = [name for name, member in node.members(max_depth=None)
                      if isinstance(member, zarr.Array) and member.ndim == 3]
            if ome is not None:
                dataset = ome[0]
            elif "volume" in arrays:
                dataset = "volume"
            elif len(arrays) == 1:
                dataset = arrays[0]
            else:
                raise InputError(
                    f"{path}: {len(arrays)} 3D arrays ({', '.join(arrays) or 'none'}); name one with dataset= or x.zarr:/path"
                )
        dataset = dataset.strip("/")
        try:
            array = node[dataset]
        except KeyError:
            raise InputError(f"{path}: no array '{dataset}' in the Zarr group") from None
        if not isinstance(array, zarr.Array):
            raise InputError(f"{path}: '{dataset}' is a group; expected an array")
        from_file = _attr_voxel(dict(array.attrs))
        if from_file is None and ome is not None and ome[0].strip("/") == dataset:
            from_file = ome[1]
        if from_file is None:
            from_file = _attr_voxel(group_attrs)
    else:
        if dataset not in (None, "", "/"):
            raise InputError(f"{path}: is a Zarr array, not a group; dataset '{dataset}' cannot be opened in it")
        array, dataset = node, None
        from_file = _attr_voxel(dict(array.attrs))
    if array.ndim != 3:
        raise InputError(f"{path}: array of shape {array.shape}; expected a 3D z-y-x volume")
    if array.dtype.kind not in "fiub":
        raise InputError(f"{path}: array of dtype {array.dtype}; expected numbers")
    voxel = _resolve_voxel_size(path, _isotropic(path, from_file), voxel_size_um)
    return _ArraySource(path, array, voxel, check_finite, dataset=dataset, fmt="zarr")


# --- NumPy ------------------------------------------------------------------------------------


def _open_npy(path: Path, voxel_size_um, check_finite) -> VolumeSource:
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
    voxel = _resolve_voxel_size(path, None, voxel_size_um)
    return _ArraySource(path, array, voxel, check_finite, fmt="npy")


# --- Zeiss .txm ---------------------------------------------------------------------------------


class _TxmSource(_SliceStackSource):
    """A Zeiss reconstruction (.txm, OLE2) read slice by slice through ``txrm2tiff``.

    Slices are flipped in y, as ``txrm2tiff`` does when it converts to TIFF (the stored order is
    upside down relative to Zeiss' viewers), so a .txm and its TIFF export read the same.
    """

    format = "txm"

    def __init__(self, path, txrm, handle, shape, dtype, voxel_size_um, check_finite):
        super().__init__(path, shape, dtype, voxel_size_um, check_finite)
        self._txrm = txrm
        self._handle = handle

    def _read_slice(self, z):
        image = np.asarray(self._txrm.get_single_image(z + 1))  # txrm2tiff counts images from 1
        if image.size != self.shape[1] * self.shape[2]:
            raise InputError(f"{self.path}: image {z + 1} holds {image.size} values; expected "
                             f"{self.shape[1]}x{self.shape[2]} (truncated file?)")
        return image.reshape(self.shape[1:])[::-1, :]

    def close(self):
        if self._handle is not None:
            self._txrm.close()
            self._handle.close()
            self._handle = None


def _open_txm(path: Path, voxel_size_um, check_finite) -> VolumeSource:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.suffix.lower() == ".txrm":
        raise InputError(
            f"{path}: a .txrm file holds projections (one image per angle), not a reconstructed volume; "
            "reconstruct it (Zeiss Reconstructor, .txm) or export the reconstruction as TIFF"
        )
    try:
        from txrm2tiff import open_txrm
    except ImportError:
        raise InputError(f"{path}: install txrm2tiff to read Zeiss .txrm/.txm (pip install txrm2tiff)") from None
    handle = open(path, "rb")
    try:
        # An open file handle: txrm2tiff refuses paths not named .txrm/.xrm, but reads any OLE2 stream.
        # Not strict: optional streams a reconstruction may lack only log; what we need is checked here.
        txrm = open_txrm(handle, load_images=False, load_reference=False, strict=False)
        info = txrm.image_info
        n = (info.get("ImagesTaken") or info.get("NoOfImages") or [0])[0]
        width = (info.get("ImageWidth") or [0])[0]
        height = (info.get("ImageHeight") or [0])[0]
        if max((info.get("MosiacColumns") or [0])[0], (info.get("MosiacRows") or [0])[0]) > 1:
            raise InputError(f"{path}: a mosaic; expected a reconstructed volume")
        dtype = txrm.image_dtype.value if txrm.image_dtype is not None else np.float32
        pixel = (info.get("PixelSize") or [None])[0]
        from_file = float(pixel) if pixel and pixel > 0 else None
    except InputError:
        handle.close()
        raise
    except Exception as exc:
        handle.close()
        raise InputError(f"{path}: not a readable Zeiss .txm file: {type(exc).__name__}: {exc}") from exc
    if not n or not width or not height:
        handle.close()
        raise InputError(f"{path}: .txm with {n} images of {width}x{height} pixels; expected a volume")
    voxel = _resolve_voxel_size(path, from_file, voxel_size_um)
    return _TxmSource(path, txrm, handle, (int(n), int(height), int(width)), dtype, voxel, check_finite)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


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
    if fmt == "hdf5":
        return _open_hdf5(file, dataset, voxel_size_um, check_finite)
    if fmt == "zarr":
        return _open_zarr(file, dataset, voxel_size_um, check_finite)
    if fmt == "tiff":
        return _open_tiff(file, voxel_size_um, check_finite)
    if fmt == "tiff_folder":
        return _open_tiff_folder(file, voxel_size_um, check_finite)
    if fmt == "npy":
        return _open_npy(file, voxel_size_um, check_finite)
    return _open_txm(file, voxel_size_um, check_finite)


def _as_slab_reader(volume, path: Path):
    """(shape, function z0, z1 -> float32 slab) for an array or a VolumeSource."""
    if isinstance(volume, VolumeSource) or (hasattr(volume, "shape") and hasattr(volume, "__getitem__")
                                            and not isinstance(volume, np.ndarray)):
        shape = tuple(volume.shape)
        return shape, lambda z0, z1: np.asarray(volume[z0:z1], dtype=np.float32)
    array = np.asarray(volume)
    return array.shape, lambda z0, z1: array[z0:z1].astype(np.float32, copy=False)


def _tiff_metadata(voxel_size_um: float, axes: str = "ZYX") -> dict[str, Any]:
    # ImageJ: pixel width 1/XResolution in `unit`, slice spacing in `spacing`.
    return dict(imagej=True, resolution=(1.0 / voxel_size_um, 1.0 / voxel_size_um),
                metadata={"spacing": voxel_size_um, "unit": "micron", "axes": axes})


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
    path : ``.h5``/``.hdf5`` (dataset ``dataset``, attrs ``voxel_size_um`` + provenance + ``attrs``),
        ``.zarr`` (an array folder, attrs likewise), ``.tif``/``.tiff`` (ImageJ hyperstack with
        ``spacing``/``unit`` and resolution tags), ``.npy`` (no voxel size: NumPy has no place for it),
        or a folder with ``format='tiff_folder'`` (``slice_00000.tif`` ..., each an ImageJ TIFF).
    volume : (nz, ny, nx) array or :class:`VolumeSource` (read slab by slab: out of core).
    voxel_size_um : voxel edge (µm).
    format : one of :data:`WRITABLE_FORMATS`; default from the suffix.
    slab_slices : z slices per slab (default: ~64 MB slabs).

    Returns
    -------
    The written path. Nothing exists under ``path`` unless the write completed.

    Raises
    ------
    ResrecoverError : unknown format, not 3D, bad voxel size; InputError for NaN/inf values
        (naming the output file and the slab).
    """
    path = Path(path)
    voxel_size_um = _check_voxel_value(voxel_size_um, str(path))
    if format is None:
        suffix = path.suffix.lower()
        format = next((name for name in WRITABLE_FORMATS if suffix in FORMAT_SUFFIXES.get(name, ())), None)
    if format not in WRITABLE_FORMATS:
        raise ResrecoverError(
            f"{path}: cannot write format '{format or path.suffix or '(no suffix)'}'; expected one of "
            f"{', '.join(WRITABLE_FORMATS)} (.h5, .zarr, .tif, .npy, or format='tiff_folder')"
        )
    shape, read_slab = _as_slab_reader(volume, path)
    if len(shape) != 3:
        raise ResrecoverError(f"{path}: expected a 3D z-y-x volume, got shape {tuple(shape)}")
    shape = tuple(int(n) for n in shape)
    check_free_disk(path, int(np.prod(shape)) * 4)
    step = slab_slices or _slab_slices(shape)

    def slabs() -> Iterator[tuple[int, np.ndarray]]:
        for z0 in range(0, shape[0], step):
            z1 = min(z0 + step, shape[0])
            block = read_slab(z0, z1)
            _require_finite(block, path, f"the data to write, slices {z0}:{z1}")
            yield z0, block

    meta = {"voxel_size_um": voxel_size_um, **provenance(), **{k: v for k, v in attrs.items() if v is not None}}
    with atomic_output(path) as tmp:
        if format == "hdf5":
            _write_hdf5(tmp, shape, slabs(), dataset, meta)
        elif format == "zarr":
            _write_zarr(tmp, shape, slabs(), meta)
        elif format == "tiff":
            _write_tiff(tmp, shape, slabs(), voxel_size_um)
        elif format == "npy":
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
            for z0, block in slabs():
                out[z0 : z0 + len(block)] = block
            out.flush()
            del out
        else:
            _write_tiff_folder(tmp, shape, slabs(), voxel_size_um)
    return path


def _hdf5_chunks(shape):
    return (min(shape[0], 16), min(shape[1], 128), min(shape[2], 128))


def _json_safe(value):
    import json

    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value):
        return list(value)
    return json.dumps(value, default=str)


def _write_hdf5(tmp: Path, shape, slabs, dataset: str, meta: dict) -> None:
    import h5py

    with h5py.File(tmp, "w") as fh:
        ds = fh.create_dataset(dataset, shape=shape, dtype=np.float32, chunks=_hdf5_chunks(shape))
        for z0, block in slabs:
            ds[z0 : z0 + len(block)] = block
        for key, value in meta.items():
            fh.attrs[key] = _json_safe(value)
        ds.attrs["voxel_size_um"] = meta["voxel_size_um"]


def _write_zarr(tmp: Path, shape, slabs, meta: dict) -> None:
    import zarr

    tmp.unlink()  # atomic_output made a file; a Zarr array is a folder
    chunks = (min(shape[0], 64), min(shape[1], 256), min(shape[2], 256))
    array = zarr.open_array(str(tmp), mode="w", shape=shape, chunks=chunks, dtype="float32")
    for z0, block in slabs:
        array[z0 : z0 + len(block)] = block
    array.attrs.update({k: _json_safe(v) for k, v in meta.items()})


def _write_tiff(tmp: Path, shape, slabs, voxel_size_um: float) -> None:
    import tifffile

    def pages():
        for _, block in slabs:
            yield from block

    tifffile.imwrite(tmp, data=pages(), shape=shape, dtype=np.float32, **_tiff_metadata(voxel_size_um))


def _write_tiff_folder(tmp: Path, shape, slabs, voxel_size_um: float) -> None:
    import tifffile

    tmp.unlink()
    tmp.mkdir()
    width = max(5, len(str(shape[0] - 1)))
    for z0, block in slabs:
        for i, image in enumerate(block):
            tifffile.imwrite(tmp / f"slice_{z0 + i:0{width}d}.tif", image, **_tiff_metadata(voxel_size_um, "YX"))
