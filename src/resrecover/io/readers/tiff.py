"""TIFF readers: a multi-page stack (``scan.tif``) and a folder of 2D slices (``slices/``).

The voxel size comes from ImageJ's ``spacing``/``unit`` or the X/YResolution tags (a folder: its
first slice's). A stack is read through tifffile's zarr view, so a block reads only the pages it
needs; a folder is read slice by slice, its numbered sequence checked for gaps and strays first.
"""

from __future__ import annotations

import re
from pathlib import Path

import tifffile
import zarr

from ..volume import InputError
from .base import (
    FORMAT_SUFFIXES,
    ArraySource,
    SliceStackSource,
    VolumeSource,
    isotropic_voxel,
    resolve_voxel_size,
    unit_to_um,
)

# TIFF ResolutionUnit tag values (1 = none, 2 = inch, 3 = cm; 4/5 are tifffile's mm/µm extensions).
_TIFF_RESUNIT_UM = {2: 25400.0, 3: 1e4, 4: 1e3, 5: 1.0}


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


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
    scale = unit_to_um(ij.get("unit")) if ij else None
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


class _TiffStackSource(ArraySource):
    format = "tiff"


def open_tiff(path: Path, voxel_size_um, check_finite) -> VolumeSource:
    """A multi-page TIFF as a 3D source (one grey-value series; colour and 2D images refused)."""
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
        voxel = resolve_voxel_size(path, isotropic_voxel(path, _tiff_voxel_zyx(tf, series.pages[0])), voxel_size_um)
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


class _TiffFolderSource(SliceStackSource):
    format = "tiff_folder"

    def __init__(self, path, files, shape, dtype, voxel_size_um, check_finite):
        super().__init__(path, shape, dtype, voxel_size_um, check_finite)
        self.files = files

    def _read_slice(self, z):
        try:
            return tifffile.imread(self.files[z])
        except Exception as exc:
            raise InputError(f"{self.files[z]}: not a readable TIFF slice: {exc}") from exc

    def _slice_name(self, z):
        return str(self.files[z])


def open_tiff_folder(folder: Path, voxel_size_um, check_finite) -> VolumeSource:
    """A folder of 2D TIFF slices as a 3D source, in natural order; only the headers are read here."""
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
    voxel = resolve_voxel_size(folder, isotropic_voxel(folder, voxel_zyx), voxel_size_um)
    return _TiffFolderSource(folder, files, (len(files),) + first_shape, first_dtype, voxel, check_finite)
