"""Zarr reader (v2 or v3): an array store, or one array of a group (``dataset=`` or ``scan.zarr:/path``).

Without a name, a group gives its OME-NGFF full-resolution level, else ``volume``, else its only
3D array. The voxel size comes from the array's attributes, then OME-NGFF ``multiscales``, then the
group's attributes.
"""

from __future__ import annotations

from pathlib import Path

import zarr

from ..volume import InputError
from .base import (
    ArraySource, VolumeSource, attr_voxel, default_dataset, isotropic_voxel, resolve_voxel_size, unit_to_um,
)


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
    factors = [unit_to_um(u) for u in units]
    if any(f is None for f in factors):
        return first["path"], None
    return first["path"], tuple(s * f for s, f in zip(scale[-3:], factors))


def open_zarr(path: Path, dataset, voxel_size_um, check_finite) -> VolumeSource:
    """A Zarr array (or one array of a group) as a source."""
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
            else:
                dataset = default_dataset(path, arrays, "volume" in arrays, "arrays", "x.zarr:/path")
        dataset = dataset.strip("/")
        try:
            array = node[dataset]
        except KeyError:
            raise InputError(f"{path}: no array '{dataset}' in the Zarr group") from None
        if not isinstance(array, zarr.Array):
            raise InputError(f"{path}: '{dataset}' is a group; expected an array")
        from_file = attr_voxel(dict(array.attrs))
        if from_file is None and ome is not None and ome[0].strip("/") == dataset:
            from_file = ome[1]
        if from_file is None:
            from_file = attr_voxel(group_attrs)
    else:
        if dataset not in (None, "", "/"):
            raise InputError(f"{path}: is a Zarr array, not a group; dataset '{dataset}' cannot be opened in it")
        array, dataset = node, None
        from_file = attr_voxel(dict(array.attrs))
    if array.ndim != 3:
        raise InputError(f"{path}: array of shape {array.shape}; expected a 3D z-y-x volume")
    if array.dtype.kind not in "fiub":
        raise InputError(f"{path}: array of dtype {array.dtype}; expected numbers")
    voxel = resolve_voxel_size(path, isotropic_voxel(path, from_file), voxel_size_um)
    return ArraySource(path, array, voxel, check_finite, dataset=dataset, fmt="zarr")
