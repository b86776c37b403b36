"""Per-pore features for telling a real pore from a spurious one, without the ground truth.

Each row of a pore table gets numbers that a classifier (:mod:`.score`) can weigh. They are all
computable on an own scan, where no high-resolution volume exists:

- ``contrast_noise`` (noise standard deviations, dimensionless): how far the pore's interior sits
  below the segmentation threshold, in units of the local noise. A real void is far below it; a
  pore that only just crossed the threshold could as well be a noise dip the recovery sharpened.
- ``fov_edge_distance_um`` (µm): distance of the pore's centroid to the edge of the reconstructable
  field of view. Cone-beam artefacts and truncation are worst near it.
- ``n_neighbours`` (count): pores whose walls touch this pore's wall. Thin walls between crowded
  pores are where a recovery breaks a wall or invents one.
- ``<name>_mean`` for each map in ``maps`` (the map's units): the map averaged over the pore and its
  wall, as :func:`.pore_trust.pore_trust_table` does (e.g. ``residual_mean``, ``disagreement_mean``,
  ``tta_variance_mean``).

The pore table's own ``sphericity`` (dimensionless, 1 = a ball) is a feature too: a split or merged
void, or a speck sharpened from noise, is less round than the foam's cells.

:data:`FEATURE_COLUMNS` is the default feature set of :func:`.score.fit_trust_model` (the schema's
``trust.classifier.features``). ``fov_edge_distance_um`` is written but not among them: on the quick
preset's train and validation realizations (each fitted on one, scored on the other) leaving it out
and adding ``sphericity`` raised the pooled ROC AUC of DeepNet's ``p_spurious`` from 0.885 / 0.911
to 0.918 / 0.946, RL's from 0.990 / 0.965 to 0.987 / 0.989 (pores cut by the volume's ends left
out, :func:`.validate.labelled_pores`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from .maps import TrustError
from .pore_trust import pore_regions, region_means

#: default features of the trust model (a subset may be missing; the fit drops those with a note)
FEATURE_COLUMNS = [
    "diameter_um",
    "contrast_noise",
    "residual_mean",
    "disagreement_mean",
    "tta_variance_mean",
    "n_neighbours",
    "sphericity",
]
#: columns :func:`pore_features` always adds (besides one ``<name>_mean`` per map)
ADDED_COLUMNS = ["contrast_noise", "fov_edge_distance_um", "n_neighbours"]


def pore_features(
    pore_df: pd.DataFrame,
    labels: np.ndarray,
    recovered: np.ndarray,
    threshold: float,
    noise_std,
    fov_mask: np.ndarray,
    voxel_size_um: float,
    maps: dict[str, np.ndarray] | None = None,
    wall_voxels: float = 2,
) -> pd.DataFrame:
    """The pore table with :data:`ADDED_COLUMNS` and one ``<name>_mean`` per map added (same rows).

    Parameters
    ----------
    pore_df : pore table with a ``label`` column (further columns are kept; the µm centroid columns
        are not read, since their origin is a convention of the table writer).
    labels : (nz, ny, nx) integer labels the table was measured on (0 = material/background).
    recovered : (nz, ny, nx) the recovered volume that was thresholded (material fraction).
    threshold : the segmentation threshold (void = below it), in the units of ``recovered``.
    noise_std : local noise standard deviation of ``recovered``'s input, a (nz, ny, nx) map
        (:func:`.maps.noise_level_map`, NaN ignored) or one number, in the units of ``recovered``.
    fov_mask : bool, broadcastable to the labels' shape; True inside the reconstructable FOV.
    voxel_size_um : voxel edge (µm).
    maps : optional ``{name: (nz, ny, nx) map}``; each gives a column ``<name>_mean`` (pore + wall,
        NaN ignored), overwriting a column of that name already in ``pore_df``.
    wall_voxels : thickness (voxels) of the wall read around each pore (:func:`.pore_regions`).

    Returns
    -------
    A copy of ``pore_df`` with the columns added. ``contrast_noise`` is NaN where the local noise is
    not positive; ``fov_edge_distance_um`` is 0 for a centroid outside the FOV.
    """
    if "label" not in pore_df.columns:
        raise TrustError(f"pore_df: columns {list(pore_df.columns)}; expected a 'label' column")
    labels = np.asarray(labels)
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise TrustError(f"labels: {labels.dtype} array of shape {labels.shape}; expected 3D integer labels")
    shape = labels.shape
    recovered = _same_shape(recovered, shape, "recovered")
    if not np.isfinite(threshold):
        raise TrustError(f"threshold = {threshold}; expected a finite grey value")
    if not voxel_size_um > 0:
        raise TrustError(f"voxel_size_um = {voxel_size_um}; expected a positive voxel edge in µm")
    noise = np.asarray(noise_std, dtype=np.float64)
    noise = np.full(shape, float(noise)) if noise.ndim == 0 else _same_shape(noise, shape, "noise_std")
    fov = np.asarray(fov_mask, dtype=bool)
    try:
        fov = np.broadcast_to(fov, shape)
    except ValueError:
        raise TrustError(f"fov_mask: shape {fov.shape}; expected one broadcastable to {shape}") from None
    maps = dict(maps or {})
    for name, values in maps.items():
        maps[name] = _same_shape(values, shape, f"maps['{name}']")

    if labels.size and labels.min() < 0:
        raise TrustError(f"labels: minimum {labels.min()}; expected labels ≥ 0 (0 = background)")
    label_ids = pore_df["label"].to_numpy(dtype=np.int64)
    n = int(labels.max()) if labels.size else 0
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    counts[0] = 0
    # a table row whose label is not in the volume means the table and labels do not belong together
    absent = label_ids[(label_ids < 1) | (label_ids > n) | (counts[np.clip(label_ids, 0, n)] == 0)]
    if absent.size:
        shown = sorted(set(absent.tolist()))[:5]
        raise TrustError(f"pore_df: labels {shown} are not in labels; expected those the table was measured on")
    regions = pore_regions(labels, wall_voxels)
    out = pore_df.copy()

    # interior: the pore's own voxels only (the wall is material, above the threshold by design);
    # noise: over pore + wall, so a one-voxel pore still reads a stable local noise level
    interior = region_means(labels, recovered, n)[label_ids]
    noise_mean = region_means(regions, noise, n)[label_ids]
    with np.errstate(invalid="ignore", divide="ignore"):
        out["contrast_noise"] = np.where(noise_mean > 0, (float(threshold) - interior) / noise_mean, np.nan)

    out["fov_edge_distance_um"] = _fov_edge_distance(labels, fov, float(voxel_size_um), counts, n)[label_ids]
    out["n_neighbours"] = _neighbour_counts(regions, n)[label_ids]
    for name, values in maps.items():
        out[f"{name}_mean"] = region_means(regions, values, n)[label_ids]
    return out


def _same_shape(values, shape, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.shape != shape:
        raise TrustError(f"{name}: shape {values.shape}; expected the labels' shape {shape}")
    return values


def _fov_edge_distance(labels, fov, voxel_size_um: float, counts, n: int) -> np.ndarray:
    """Distance (µm) from each label's rounded centroid voxel to the nearest voxel outside ``fov``.

    Index = label. Centroids come from the labels themselves (mean voxel index per label over the
    foreground only, so no volume-sized coordinate grids are made).
    """
    if fov.all():
        # no voxel outside the mask: the volume's faces are the only edge of what was seen
        distance = ndi.distance_transform_edt(np.pad(fov, 1), sampling=voxel_size_um)[1:-1, 1:-1, 1:-1]
    else:
        distance = ndi.distance_transform_edt(fov, sampling=voxel_size_um)
    out = np.full(n + 1, np.nan)
    if n == 0:
        return out
    where = np.nonzero(labels)
    lab = labels[where]
    present = counts > 0
    centroid = []
    for axis in range(3):
        sums = np.bincount(lab, weights=where[axis].astype(np.float64), minlength=n + 1)
        centroid.append(np.rint(sums[present] / counts[present]).astype(np.int64))
    out[present] = distance[tuple(centroid)]
    return out


def _neighbour_counts(regions: np.ndarray, n: int) -> np.ndarray:
    """Number of distinct other labels whose region shares a face with each label's region (index = label).

    Regions are the labels grown into their walls (:func:`.pore_regions`), so two pores count as
    neighbours when the material between them is at most about 2 × ``wall_voxels`` thick. Comparing
    each voxel with its successor along each axis covers all six face directions (a pair seen one
    way is the reverse pair seen the other).
    """
    pairs = []
    for axis in range(3):
        a = np.moveaxis(regions, axis, 0)
        lo, hi = a[:-1], a[1:]
        touch = (lo != hi) & (lo > 0) & (hi > 0)
        if touch.any():
            u, v = lo[touch].astype(np.int64), hi[touch].astype(np.int64)
            pairs.append(np.minimum(u, v) * (n + 1) + np.maximum(u, v))
    count = np.zeros(n + 1, dtype=np.int64)
    if pairs:
        unique = np.unique(np.concatenate(pairs))
        count += np.bincount(unique // (n + 1), minlength=n + 1)
        count += np.bincount(unique % (n + 1), minlength=n + 1)
    return count
