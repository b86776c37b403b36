"""What the figures read: result files with the keys their writers recorded, tables, central slices.

A result's (method, realization, σ) is read from the file itself, never from its path: the
attributes ``method``, ``realization`` and ``sigma_um`` of an HDF5 result (recovered volumes, maps),
the key columns of a table. Only the central z slice of a volume is read (a 512³ float32 volume is
0.5 GB; fig4 shows 17 of them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ..io import InputError, read_volume_lazy, volume_info
from ..io.volume import open_hdf5_file


@dataclass(frozen=True)
class ResultPath:
    """A result file of the docs/results.md layout and the keys its writer recorded in it."""

    path: str
    method: str | None
    realization: str | None
    sigma_um: float | None  # None for a ground truth


def as_path_list(value) -> list[str]:
    """A Snakemake input entry (one path or a list of paths, possibly empty) as a list of paths."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [str(value)]
    return [str(v) for v in value]


def _scalar_sigma(path, value) -> float | None:
    """σ (µm) of an attribute: a number, or a per-axis triple whose axes agree (Richardson-Lucy)."""
    if value is None:
        return None
    values = np.unique(np.asarray(value, dtype=float).ravel())
    if values.size != 1:
        raise InputError(f"{path}: attribute sigma_um is {np.asarray(value).tolist()}; expected one σ")
    return float(values[0])


def _text(value) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def result_key(path: str | os.PathLike, method: str | None = None) -> ResultPath:
    """(method, realization, σ) of an HDF5 result, from the attributes the step that wrote it recorded.

    Recovered volumes, labels and MS-SSIM and trust maps carry ``method``, ``realization`` and
    ``sigma_um``. A reconstruction (``results/recon/``) names no method: ``method`` gives the role
    the caller knows it has (``'fdk'`` for an input, ``'ground_truth'``; a ground truth has no σ).
    A missing attribute is None.
    """
    with open_hdf5_file(path) as fh:
        attrs = {name: fh.attrs.get(name) for name in ("method", "realization", "sigma_um")}
    method = method or _text(attrs["method"])
    sigma = None if method == "ground_truth" else _scalar_sigma(path, attrs["sigma_um"])
    return ResultPath(str(path), method, _text(attrs["realization"]), sigma)


def table_key(table: pd.DataFrame, path: str | os.PathLike) -> tuple[str, str, float | None] | None:
    """(method, realization, σ) of a per-volume table (a pore table), from its key columns.

    None for a table without rows (a volume without pores); the ground truth's σ is None. A table
    whose rows name more than one volume is an error.
    """
    if table.empty:
        return None
    keys = table[["method", "realization", "sigma_um"]].drop_duplicates()
    if len(keys) != 1:
        raise InputError(f"{path}: rows of {len(keys)} volumes (method, realization, sigma_um); expected one volume")
    method, realization, sigma = keys.iloc[0]
    return str(method), str(realization), None if pd.isna(sigma) else sigma_key(sigma)


def read_table(path: str | os.PathLike, required: list[str]) -> pd.DataFrame:
    """A CSV table of results/tables/ with its contract columns checked (one-line error otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: table not found")
    try:
        table = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: not a readable CSV table: {exc}") from exc
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {', '.join(missing)}; columns present: {', '.join(map(str, table.columns))}"
        )
    if "method" in table.columns:
        table["method"] = table["method"].astype(str)
    if "realization" in table.columns:
        table["realization"] = table["realization"].astype(str)
    if "sigma_um" in table.columns:
        table["sigma_um"] = pd.to_numeric(table["sigma_um"], errors="coerce")
    return table


def sigma_key(sigma_um: float) -> float:
    """σ rounded so that 3, 3.0 and 3.0000001 from different files compare equal."""
    return round(float(sigma_um), 6)


def select_sigmas(values, config: dict | None) -> list[float]:
    """Sorted unique σ of ``values`` (NaN dropped), restricted to the config's LRES levels if given."""
    found = sorted({sigma_key(v) for v in values if v is not None and np.isfinite(v)})
    if config is not None and "scan" in config:
        wanted = {sigma_key(s) for s in config["scan"]["sigmas_um"]}
        kept = [s for s in found if s in wanted]
        return kept if kept else found
    return found


def select_methods(values, config: dict | None, baselines=("fdk",)) -> list[str]:
    """Unique methods of ``values``, ordered; those absent from ``config['methods']`` dropped.

    ``baselines`` (the FDK input, the ground truth) are kept when present, config or not.
    """
    from .style import order_methods

    found = {m for m in values if isinstance(m, str)}
    if config is not None and "methods" in config:
        found &= set(config["methods"]) | set(baselines)
    if "ground_truth" not in baselines:
        found.discard("ground_truth")
    return order_methods(found)


def central_slice(path: str | os.PathLike, allow_nonfinite: bool = False) -> tuple[np.ndarray, float]:
    """The central z slice (ny, nx) of a stored volume and its voxel size in µm.

    ``allow_nonfinite`` lets NaN through (a quality map may leave voxels outside the FOV undefined);
    otherwise NaN/inf raise :class:`InputError` naming the file.
    """
    info = volume_info(path)  # checks existence, the dataset and its dimensionality
    nz = info["shape"][0]
    voxel_size_um = float(info.get("voxel_size_um", 1.0))
    if allow_nonfinite:
        with h5py.File(path, "r") as fh:
            image = fh["volume"][nz // 2].astype(np.float32)
    else:
        with read_volume_lazy(path) as volume:
            image = volume[nz // 2]
    return image, voxel_size_um


def read_attr(path: str | os.PathLike, name: str, default=None):
    """One file attribute of an HDF5 result (e.g. the ``msssim`` score of a map)."""
    value = volume_info(path).get(name, default)
    if isinstance(value, np.generic):
        value = value.item()
    return value


def crop_box(shape: tuple[int, int], voxel_size_um: float, config: dict | None, margin: float = 0.06):
    """(slice_y, slice_x) of the square around the foam cylinder, the same for every panel.

    The cylinder radius comes from ``config['phantom']['cylinder_radius_um']``; without a config the
    whole slice is kept.
    """
    ny, nx = shape
    if config is None or "phantom" not in config:
        return slice(0, ny), slice(0, nx)
    half = int(np.ceil(config["phantom"]["cylinder_radius_um"] * (1 + margin) / voxel_size_um))
    cy, cx = ny // 2, nx // 2
    return slice(max(cy - half, 0), min(cy + half, ny)), slice(max(cx - half, 0), min(cx + half, nx))
