"""Per-pore trust: each trust map averaged over a pore and its wall, and one trust score per pore.

A hallucinated pore shows in the residual map inside it and in the wall around it (the measurement
sees material where the recovery put a void, blurred over σ), so each pore is read over its own
voxels plus a shell of ``wall_voxels`` voxels of the background around it (:func:`pore_regions`;
a pore's own voxels are never given to a neighbour's wall).

Trust score (column ``trust``, in (0, 1], higher = more trustworthy)::

    trust = 1 / ( max(residual_mean, 1) · (1 + disagreement_mean / disagreement_scale) )

The residual factor is 1 while the pore is explained by the measurement up to its noise and falls
as 1 / (residual in noise variances) beyond; the disagreement factor halves the trust when the
ensemble members differ by ``disagreement_scale`` (material fraction) on average over the pore.
Without an ensemble (Richardson-Lucy) the disagreement factor is 1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from .maps import TrustError

#: columns added to a pore table by :func:`pore_trust_table`
TRUST_COLUMNS = ["residual_mean", "disagreement_mean", "trust"]


def pore_regions(labels: np.ndarray, wall_voxels: float) -> np.ndarray:
    """Labels grown by ``wall_voxels`` (a Euclidean ball) into the background, pores left as they are."""
    labels = np.asarray(labels)
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise TrustError(f"labels: expected 3D integer labels, got {labels.dtype} {labels.shape}")
    if wall_voxels < 0:
        raise TrustError(f"wall_voxels = {wall_voxels}; expected ≥ 0")
    if wall_voxels < 1 or not labels.any():
        return labels.copy()
    # a grey dilation with a Euclidean ball: light on memory (an EDT with indices needs 3 int arrays
    # of the volume's size); where walls of several pores overlap, the larger label takes the voxel
    r = int(np.floor(wall_voxels))
    z, y, x = np.ogrid[-r : r + 1, -r : r + 1, -r : r + 1]
    ball = z * z + y * y + x * x <= float(wall_voxels) ** 2
    grown = ndi.grey_dilation(labels, footprint=ball)
    return np.where(labels > 0, labels, grown)


def region_means(regions: np.ndarray, values: np.ndarray, n_labels: int | None = None) -> np.ndarray:
    """Mean of ``values`` over each label 1..n of ``regions``, ignoring NaN (NaN for empty labels).

    Returns an array of length n + 1 (index = label; index 0 is the background's mean).
    """
    regions = np.asarray(regions)
    values = np.asarray(values, dtype=np.float64)
    if regions.shape != values.shape:
        raise TrustError(f"map shape {values.shape} differs from the labels shape {regions.shape}")
    n = int(regions.max()) if n_labels is None else int(n_labels)
    finite = np.isfinite(values)
    lab = regions[finite].ravel()
    sums = np.bincount(lab, weights=values[finite].ravel(), minlength=n + 1)[: n + 1]
    counts = np.bincount(lab, minlength=n + 1)[: n + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def trust_score(residual_mean, disagreement_mean, disagreement_scale: float = 0.1):
    """Trust in (0, 1] from a pore's mean residual (noise variances) and disagreement (material fraction)."""
    if not disagreement_scale > 0:
        raise TrustError(f"disagreement_scale = {disagreement_scale}; expected a positive material fraction")
    residual = np.asarray(residual_mean, dtype=np.float64)
    disagreement = np.nan_to_num(np.asarray(disagreement_mean, dtype=np.float64), nan=0.0)
    residual_factor = np.maximum(np.nan_to_num(residual, nan=1.0), 1.0)
    return 1.0 / (residual_factor * (1.0 + np.maximum(disagreement, 0.0) / float(disagreement_scale)))


def pore_trust_table(
    pore_df: pd.DataFrame,
    labels: np.ndarray,
    maps: dict[str, np.ndarray],
    wall_voxels: float = 2,
    disagreement_scale: float = 0.1,
) -> pd.DataFrame:
    """The pore table with :data:`TRUST_COLUMNS` added (one row per pore, same order).

    Parameters
    ----------
    pore_df : a pore table with column ``label`` (results/pores/... CSV, any further columns kept).
    labels : (nz, ny, nx) the integer labels the table was measured on.
    maps : ``{"residual": ..., "disagreement": ...}`` arrays of the labels' shape (NaN ignored;
        a missing or all-NaN disagreement gives NaN means).
    wall_voxels : thickness (voxels) of the wall added around each pore.
    disagreement_scale : see :func:`trust_score`.
    """
    if "label" not in pore_df.columns:
        raise TrustError(f"pore table: columns {list(pore_df.columns)}; expected a 'label' column")
    if "residual" not in maps:
        raise TrustError("maps: no 'residual' map; expected the data-consistency residual")
    regions = pore_regions(np.asarray(labels), wall_voxels)
    out = pore_df.copy()
    label_ids = out["label"].to_numpy(dtype=np.int64)
    n = max(int(regions.max()), int(label_ids.max()) if len(label_ids) else 0)
    for name in ("residual", "disagreement"):
        values = maps.get(name)
        if values is None:
            out[f"{name}_mean"] = np.nan
            continue
        means = region_means(regions, values, n)
        out[f"{name}_mean"] = means[label_ids] if len(label_ids) else np.array([], dtype=np.float64)
    out["trust"] = trust_score(out["residual_mean"], out["disagreement_mean"], disagreement_scale)
    return out
