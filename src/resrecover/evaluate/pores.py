"""Pore tables, one-to-one matching to the ground truth, summaries and size histograms (docs/design.md#evaluation).

Units: lengths in µm, volumes in µm³, areas in µm². Pore centroids are given relative to the
centre of the voxel grid (voxel ``i`` of ``n`` sits at ``(i - (n - 1) / 2) × voxel_size_um``, as in
docs/ct_geometry.md#the-frame and the phantom's sphere table).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from .. import ResrecoverError
from .pore_surface import (  # noqa: F401 - the recipe's constants, re-exported where callers know them
    CROP_MARGIN_VOX,
    SURFACE_SMOOTHING_VOX,
    measure_pores,
    rescaled_area,
    single_pore_area_volume,
)

#: Columns of :func:`pore_table`.
PORE_COLUMNS = [
    "label",
    "centroid_z_um",
    "centroid_y_um",
    "centroid_x_um",
    "volume_um3",
    "diameter_um",
    "surface_um2",
    "sphericity",
]

#: Keys of :func:`pores_summary` (the per-volume columns of results/tables/pores_summary.csv).
SUMMARY_KEYS = [
    "n_pores",
    "recovery_pct",
    "porosity",
    "porosity_error_pct",
    "sphericity_mean",
    "sphericity_std",
    "n_matched",
    "n_missed",
    "n_spurious",
    "n_cut_by_ends",
    "n_gt_cut_by_ends",
    "n_mis_sized",
]

#: ``matched_gt_label`` of a recovered pore that is neither matched nor spurious: its void is one the
#: ground truth's edge kill removed (cut by the top or the bottom slice there, not here)
CUT_BY_ENDS = -1
#: dataset of a labels file holding the voids the edge kill removed (:func:`write_labels`)
EDGE_CUT_DATASET = "edge_cut"
#: share of a pore's voxels that must lie in the other volume's end-cut voids for it to count as cut
CUT_SHARE = 0.5
#: ``matched_gt_label`` of a recovered pore that is neither matched nor spurious: it sits on a real
#: ground-truth pore but at the wrong size (:func:`match_pores`)
MIS_SIZED = -2
#: share of the smaller pore of an unmatched pair that must lie inside the larger one for the pair
#: to count as one real pore at the wrong size
MIS_SIZED_SHARE = 0.5

#: the pore columns that state the study's headline, in the order its tables show them
HEADLINE_PORE_COLUMNS = ["n_pores", "recovery_pct", "n_matched", "n_spurious", "porosity_error_pct", "sphericity_mean"]

class PoreError(ResrecoverError):
    """Labels that cannot be measured or matched (wrong shape or type)."""


def _check_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise PoreError(f"{name}: expected a 3D (z, y, x) label volume, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise PoreError(f"{name}: expected integer labels, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise PoreError(f"{name}: holds negative labels ({labels.min()}); expected 0 (background) and 1..n")
    return labels


def sphericity(volume_um3, surface_um2):
    """Sphericity π^(1/3) (6V)^(2/3) / A, clipped to at most 1 (as in the paper).

    Accepts scalars or arrays; a zero area gives NaN.
    """
    v = np.asarray(volume_um3, dtype=np.float64)
    a = np.asarray(surface_um2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.pi ** (1 / 3) * (6 * v) ** (2 / 3) / a
    s = np.where(a > 0, np.minimum(s, 1.0), np.nan)
    return s if s.ndim else float(s)


def pore_surface_um2(mask: np.ndarray, voxel_size_um: float, smoothing_vox: float = SURFACE_SMOOTHING_VOX) -> float:
    """Surface area (µm²) of one pore given as a boolean mask with an empty margin of 2 voxels.

    Marching cubes on the raw binary mask follows the voxel staircase and over-estimates a sphere's
    area by ~9% at every size (sphericity ~0.92 for perfect spheres). So the mask is first smoothed
    with a Gaussian of ``smoothing_vox`` voxels and meshed at level 0.5 (classic marching cubes,
    :mod:`.pore_kernels`); the smoothing lets the mesh cut across the steps but
    shrinks convex shapes a little (by ~σ²/r), so the area is rescaled by ``(V / V_mesh)^(2/3)``
    where V is the voxel-count volume and V_mesh the mesh's enclosed volume: a uniform rescale that
    brings the mesh back to the pore's measured volume. The resulting sphericity is that of the
    smoothed mesh, which is scale-free. Measured on digitized spheres (``python -m
    benchmarks.pore_spheres``, the table in benchmarks/NOTES.md): sphericity 0.958 at a radius of 2
    voxels, 0.97–0.99 from 2.5 to 20; 2:1 spheroids 1.4–2% below their exact 0.929. The smoothing
    also rounds corners: a cube (0.806) reads 0.94 at 5 voxels, 0.89 at 10.
    """
    area, mesh_volume = single_pore_area_volume(mask, smoothing_vox)
    n_voxels = float(np.count_nonzero(mask))
    return float(rescaled_area(area, mesh_volume, n_voxels)) * float(voxel_size_um) ** 2


def pore_table(
    labels: np.ndarray,
    voxel_size_um: float,
    smoothing_vox: float = SURFACE_SMOOTHING_VOX,
) -> pd.DataFrame:
    """One row per pore: label, centroid (µm), volume (µm³), equivalent diameter, surface, sphericity.

    Parameters
    ----------
    labels : (nz, ny, nx) integer labels, 0 = background.
    voxel_size_um : voxel edge (µm).
    smoothing_vox : Gaussian smoothing of each pore mask before marching cubes (voxels), see
        :func:`pore_surface_um2`.

    Returns
    -------
    DataFrame with columns :data:`PORE_COLUMNS`, sorted by label; ``diameter_um`` is the diameter
    of the sphere of the same volume, ``sphericity`` = π^(1/3) (6V)^(2/3) / A clipped to 1.

    Notes
    -----
    Volumes, bounding boxes and centroids come from one pass over the labels; each pore is then
    meshed in its bounding box plus a margin, so the cost is proportional to the pores' volume
    rather than (number of pores × volume size). The pores are spread over
    :func:`resrecover.parallel.usable_cores` threads (compiled code that does not hold the GIL,
    :mod:`.pore_surface`); the table does not depend on the thread count.
    """
    from ..parallel import usable_cores

    labels = _check_labels(labels)
    if not voxel_size_um > 0:
        raise PoreError(f"voxel_size_um: {voxel_size_um!r}; expected a positive size in µm")
    if labels.size == 0 or labels.max() == 0:
        return pd.DataFrame({c: pd.Series(dtype=np.int64 if c == "label" else np.float64) for c in PORE_COLUMNS})
    present, counts, sums, measured = measure_pores(np.ascontiguousarray(labels), smoothing_vox, usable_cores())
    n_voxels = counts.astype(np.float64)
    centroids = sums / n_voxels[:, None]
    surfaces = rescaled_area(measured[:, 0], measured[:, 1], n_voxels) * float(voxel_size_um) ** 2
    volume_um3 = n_voxels * float(voxel_size_um) ** 3
    centre = (np.array(labels.shape) - 1) / 2.0
    centroids_um = (centroids - centre) * voxel_size_um
    return pd.DataFrame(
        {
            "label": present.astype(np.int64),
            "centroid_z_um": centroids_um[:, 0],
            "centroid_y_um": centroids_um[:, 1],
            "centroid_x_um": centroids_um[:, 2],
            "volume_um3": volume_um3,
            "diameter_um": (6.0 * volume_um3 / np.pi) ** (1 / 3),
            "surface_um2": surfaces,
            "sphericity": sphericity(volume_um3, surfaces),
        }
    )


# --------------------------------------------------------------------------------------------
# Matching recovered pores to ground-truth pores
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PoreMatching:
    """Result of :func:`match_pores`.

    Attributes
    ----------
    pairs : DataFrame, one row per matched pair: ``label`` (recovered), ``gt_label``,
        ``overlap_voxels``, ``iou``, ``volume_voxels``, ``gt_volume_voxels`` and
        ``diameter_rel_error`` = (V / V_gt)^(1/3) − 1, the relative error of the equivalent
        diameter (the matched-size error).
    missed : ground-truth labels with no recovered partner (lost pores).
    spurious : recovered labels with no ground-truth partner (hallucinated pores).
    min_iou : the IoU a pair needed.
    cut : recovered labels without a partner whose void the ground truth's edge kill removed
        (neither matched nor spurious).
    gt_cut : ground-truth labels without a partner whose void the recovery's edge kill removed
        (neither matched nor missed).
    mis_sized : DataFrame with the columns of ``pairs``, one row per pair of a recovered and a
        ground-truth pore that failed ``min_iou`` only by their sizes (the smaller lies mostly inside
        the larger): a real pore recovered too small or too large, neither spurious nor missed.
    """

    pairs: pd.DataFrame
    missed: np.ndarray
    spurious: np.ndarray
    min_iou: float
    cut: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    gt_cut: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    mis_sized: pd.DataFrame = dataclasses.field(default_factory=lambda: _pair_frame(*[np.zeros(0, np.int64)] * 5))

    @property
    def n_matched(self) -> int:
        return len(self.pairs)

    @property
    def n_missed(self) -> int:
        return int(self.missed.size)

    @property
    def n_spurious(self) -> int:
        return int(self.spurious.size)

    @property
    def n_cut(self) -> int:
        return int(self.cut.size)

    @property
    def n_mis_sized(self) -> int:
        return len(self.mis_sized)

    def gt_label_of(self, labels) -> np.ndarray:
        """Ground-truth label matched to each recovered label in ``labels`` (0 = spurious,
        :data:`CUT_BY_ENDS` = its void was cut by an end of the ground truth, :data:`MIS_SIZED` = a
        real pore at the wrong size)."""
        lookup = dict(zip(self.pairs["label"].to_numpy(), self.pairs["gt_label"].to_numpy()))
        lookup.update((int(label), CUT_BY_ENDS) for label in self.cut)
        lookup.update((int(label), MIS_SIZED) for label in self.mis_sized["label"])
        return _look_up(lookup, labels)

    def partner_of(self, labels) -> np.ndarray:
        """The ground-truth pore each recovered label in ``labels`` stands for: its match, or its
        partner at the wrong size (0 = none: spurious, or cut by an end)."""
        lookup = dict(zip(self.pairs["label"].to_numpy(), self.pairs["gt_label"].to_numpy()))
        lookup.update(zip(self.mis_sized["label"].to_numpy(), self.mis_sized["gt_label"].to_numpy()))
        return _look_up(lookup, labels)


def _look_up(lookup: dict, labels) -> np.ndarray:
    return np.array([lookup.get(int(label), 0) for label in np.asarray(labels)], dtype=np.int64)


def _overlap_counts(labels: np.ndarray, gt_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label, gt_label, voxel count) of every pair of labels that share voxels."""
    a = labels.ravel()
    b = gt_labels.ravel()
    both = (a > 0) & (b > 0)
    a = a[both].astype(np.int64)
    b = b[both].astype(np.int64)
    width = int(gt_labels.max()) + 1
    n_keys = (int(labels.max()) + 1) * width
    keys = a * width + b
    if n_keys <= 1 << 24:
        # a joint histogram in one pass: O(voxels), no sort
        hist = np.bincount(keys, minlength=n_keys)
        keys = np.flatnonzero(hist)
        counts = hist[keys]
    else:
        keys, counts = np.unique(keys, return_counts=True)
    return keys // width, keys % width, counts


def match_pores(
    labels: np.ndarray,
    gt_labels: np.ndarray,
    min_iou: float = 0.3,
    edge_cut: np.ndarray | None = None,
    gt_edge_cut: np.ndarray | None = None,
) -> PoreMatching:
    """Match recovered pores to ground-truth pores one to one by overlap.

    Every pair of a recovered and a ground-truth pore that share voxels gets its intersection over
    union (IoU), from one joint histogram of the label pairs; pairs are then accepted greedily from
    the largest IoU down, each pore being used at most once, while IoU ≥ ``min_iou``. Merged pores
    thus count as one match and one miss, split pores as one match and one spurious pore.

    Why 0.3 by default, not the 0.5 of instance-segmentation benchmarks (above 0.5 a pore can have
    only one partner, so the matching would be unique whatever the order): blur shrinks or swells
    recovered pores by about a voxel, and the foam's smallest voids are only 2–3 voxels in radius
    at the quick preset; a sphere whose radius is off by 21% already has IoU 0.5. On a 160³ foam
    blurred by 3.5 µm, IoU ≥ 0.5 declared 326 of 1,204 pores spurious that sat on a ground-truth
    pore with IoU between 0.3 and 0.5; IoU ≥ 0.3 left 20. ``n_spurious`` is meant to count pores with
    no counterpart (hallucinations); size bias is reported separately, as the matched pores'
    diameter error. IoU ≥ 0.3 still requires a real co-location: a same-size pore shifted by more
    than ~0.7 of its radius, or one of under 0.67 times its partner's diameter, does not match.

    The ends of the volume: the segmentation removes the voids that touch the top or the bottom
    slice (the edge kill), separately in each volume. A void that reaches the end slice in the ground
    truth but stops a voxel short of it in a blurred recovery is kept in one and removed in the
    other, and would count as a spurious (or a missed) pore though it is the same void. So an
    unmatched pore with at least :data:`CUT_SHARE` of its voxels in the other volume's end-cut voids
    (``edge_cut``, ``gt_edge_cut``: :func:`resrecover.evaluate.segmentation.segment_pores` with
    ``return_edge_cut``) is neither spurious nor missed but ``cut``. On the quick preset's train
    realization this was 3 of DeepNet's 4 unmatched pores at 7 µm, one of them a 5,044-voxel void.

    Wrong sizes: IoU punishes a size error as much as a shift. A small pore recovered at half its
    volume sits wholly inside its real self with IoU 0.5, at a third of it with IoU 0.33; below that
    it would count as a hallucination beside a missed pore. So the pores left unmatched on both
    sides are paired once more, one to one and greedily from the largest IoU down: a pair whose
    smaller pore has at least :data:`MIS_SIZED_SHARE` of its voxels inside the larger is one real
    pore at the wrong size (``mis_sized``), neither spurious nor missed. For two pores of the same
    size this asks for IoU ≥ 1/3, which the main rule has already matched, so only size differences
    land here. On the quick preset's validation realization at 9 µm, 10 of DeepNet's 12 spurious
    pores were such pores, most of them 10–17 voxels inside an unmatched real pore of 40–50 (IoU
    0.14–0.29). Fragments inside a matched pore (a wall that is not there) stay spurious.

    Parameters
    ----------
    labels, gt_labels : (nz, ny, nx) integer labels of the same shape, 0 = background.
    min_iou : smallest IoU of a match, in (0, 1].
    edge_cut, gt_edge_cut : optional boolean masks (same shape) of the voids each segmentation's
        edge kill removed; without them no pore is ``cut``.

    Returns
    -------
    :class:`PoreMatching`.
    """
    labels = _check_labels(labels, "labels")
    gt_labels = _check_labels(gt_labels, "gt_labels")
    if labels.shape != gt_labels.shape:
        raise PoreError(f"labels shape {labels.shape} differs from the ground-truth labels shape {gt_labels.shape}")
    if not 0 < min_iou <= 1:
        raise PoreError(f"min_iou: {min_iou!r}; expected a value in (0, 1]")
    size = np.bincount(labels.ravel())
    gt_size = np.bincount(gt_labels.ravel())
    label_ids = np.flatnonzero(size)
    label_ids = label_ids[label_ids > 0]
    gt_ids = np.flatnonzero(gt_size)
    gt_ids = gt_ids[gt_ids > 0]

    a, b, overlap = _overlap_counts(labels, gt_labels)
    iou = overlap / (size[a] + gt_size[b] - overlap)
    keep = iou >= min_iou
    chosen = _one_to_one(a[keep], b[keep], iou[keep])
    pa, pb = a[keep][chosen], b[keep][chosen]
    pairs = _pair_frame(pa, pb, overlap[keep][chosen], size[pa], gt_size[pb])
    spurious = np.setdiff1d(label_ids, pa).astype(np.int64)
    missed = np.setdiff1d(gt_ids, pb).astype(np.int64)
    cut = _in_cut_voids(labels, spurious, size, gt_edge_cut, "gt_edge_cut")
    gt_cut = _in_cut_voids(gt_labels, missed, gt_size, edge_cut, "edge_cut")
    spurious, missed = np.setdiff1d(spurious, cut), np.setdiff1d(missed, gt_cut)

    # what is left unmatched on both sides: a pair whose smaller pore lies mostly inside the larger
    # is one real pore at the wrong size (the pairs taken by IoU, as above)
    left = np.isin(a, spurious) & np.isin(b, missed)
    left[left] = overlap[left] >= MIS_SIZED_SHARE * np.minimum(size[a[left]], gt_size[b[left]])
    la, lb, lo = a[left], b[left], overlap[left]
    chosen = _one_to_one(la, lb, iou[left])
    ma, mb = la[chosen], lb[chosen]
    return PoreMatching(
        pairs=pairs,
        missed=np.setdiff1d(missed, mb),
        spurious=np.setdiff1d(spurious, ma),
        min_iou=float(min_iou),
        cut=cut,
        gt_cut=gt_cut,
        mis_sized=_pair_frame(ma, mb, lo[chosen], size[ma], gt_size[mb]),
    )


def _one_to_one(a: np.ndarray, b: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Indices of the candidate pairs (a[i], b[i]) accepted greedily from the highest score down,
    each label used at most once; sorted by ``a``. Ties go by label, so the result is deterministic."""
    used_a: set[int] = set()
    used_b: set[int] = set()
    chosen = []
    for i in np.lexsort((b, a, -score)):
        ai, bi = int(a[i]), int(b[i])
        if ai in used_a or bi in used_b:
            continue
        used_a.add(ai)
        used_b.add(bi)
        chosen.append(i)
    return np.array(sorted(chosen, key=lambda i: a[i]), dtype=np.int64)


def _pair_frame(label, gt_label, overlap, volume, gt_volume) -> pd.DataFrame:
    """The pair table of :class:`PoreMatching` (voxel counts in, IoU and diameter error out)."""
    volume = np.asarray(volume, dtype=np.int64)
    gt_volume = np.asarray(gt_volume, dtype=np.int64)
    overlap = np.asarray(overlap, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return pd.DataFrame(
            {
                "label": np.asarray(label, dtype=np.int64),
                "gt_label": np.asarray(gt_label, dtype=np.int64),
                "overlap_voxels": overlap,
                "iou": overlap / (volume + gt_volume - overlap).astype(np.float64),
                "volume_voxels": volume,
                "gt_volume_voxels": gt_volume,
                "diameter_rel_error": (volume / gt_volume.astype(np.float64)) ** (1 / 3) - 1.0,
            }
        )


def _in_cut_voids(labels, candidates, size, cut_mask, name: str) -> np.ndarray:
    """The ``candidates`` with at least :data:`CUT_SHARE` of their voxels inside ``cut_mask``."""
    if cut_mask is None or candidates.size == 0:
        return np.zeros(0, np.int64)
    cut_mask = np.asarray(cut_mask, dtype=bool)
    if cut_mask.shape != labels.shape:
        raise PoreError(f"{name}: shape {cut_mask.shape} differs from the labels' shape {labels.shape}")
    inside = np.bincount(labels[cut_mask].ravel(), minlength=size.size)
    return candidates[inside[candidates] >= CUT_SHARE * size[candidates]].astype(np.int64)


def annotate_matches(pore_df: pd.DataFrame, matching: PoreMatching, gt_pore_df: pd.DataFrame) -> pd.DataFrame:
    """Add ``matched_gt_label`` (0 = spurious, :data:`CUT_BY_ENDS` = cut by an end of the ground truth,
    :data:`MIS_SIZED` = a real pore at the wrong size), ``match_iou`` and ``diameter_error_um`` to a
    pore table.

    ``diameter_error_um`` is the recovered minus the matched ground-truth equivalent diameter (NaN
    for spurious pores).
    """
    out = pore_df.copy()
    pairs = matching.pairs.set_index("label")
    gt_diam = gt_pore_df.set_index("label")["diameter_um"]
    out["matched_gt_label"] = matching.gt_label_of(out["label"])
    out["match_iou"] = out["label"].map(pairs["iou"]).astype(float)
    out["diameter_error_um"] = out["diameter_um"] - out["matched_gt_label"].map(gt_diam).astype(float)
    out.loc[out["matched_gt_label"] <= 0, "diameter_error_um"] = np.nan
    return out


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------


def porosity(labels: np.ndarray, foam_mask: np.ndarray) -> float:
    """Segmented pore volume over the foam mask's volume (both counted in voxels).

    As in the paper, only the pores kept by the segmentation count (those cut by the top and the
    bottom slice are edge-killed), and the same recipe is applied to every volume, so porosities
    compare like with like.
    """
    foam_mask = np.asarray(foam_mask, dtype=bool)
    if foam_mask.shape != np.shape(labels):
        raise PoreError(f"foam mask shape {foam_mask.shape} does not match the labels shape {np.shape(labels)}")
    n_mask = int(np.count_nonzero(foam_mask))
    if n_mask == 0:
        raise PoreError("the foam mask is empty; expected the foam's cylinder")
    return float(np.count_nonzero(np.asarray(labels)[foam_mask])) / n_mask


def pores_summary(
    pore_df: pd.DataFrame,
    labels: np.ndarray,
    foam_mask: np.ndarray,
    gt_pore_df: pd.DataFrame,
    gt_porosity: float,
    matching: PoreMatching | None,
) -> dict:
    """Per-volume pore summary (keys :data:`SUMMARY_KEYS`).

    ``recovery_pct`` is the paper's definition, 100 × (pores found) / (ground-truth pores): a count
    ratio that a mix of lost and hallucinated pores can keep near 100%, which is why the one-to-one
    matching is reported beside it (``n_matched``, ``n_missed``, ``n_spurious``; ``n_cut_by_ends``:
    unmatched recovered pores whose void the ground truth's edge kill removed, ``n_gt_cut_by_ends``:
    unmatched ground-truth pores whose void the recovery's edge kill removed; ``n_mis_sized``: real
    pores recovered at the wrong size, one recovered and one ground-truth pore each, see
    :func:`match_pores`). So n_matched + n_spurious + n_cut_by_ends + n_mis_sized = n_pores, and
    n_matched + n_missed + n_gt_cut_by_ends + n_mis_sized = the ground truth's count.
    ``porosity_error_pct`` = 100 × (porosity − gt_porosity) / gt_porosity. ``sphericity_std`` is the
    sample standard deviation. With ``matching`` None (the ground truth against itself) every pore
    counts as matched.
    """
    n_pores = int(len(pore_df))
    n_gt = int(len(gt_pore_df))
    phi = porosity(labels, foam_mask)
    sph = pore_df["sphericity"].astype(float)
    if matching is None:
        n_matched, n_missed, n_spurious, n_cut, n_gt_cut, n_mis_sized = n_pores, 0, 0, 0, 0, 0
    else:
        n_matched, n_missed, n_spurious = matching.n_matched, matching.n_missed, matching.n_spurious
        n_cut, n_gt_cut, n_mis_sized = matching.n_cut, int(matching.gt_cut.size), matching.n_mis_sized
    return {
        "n_pores": n_pores,
        "recovery_pct": 100.0 * n_pores / n_gt if n_gt else float("nan"),
        "porosity": phi,
        "porosity_error_pct": 100.0 * (phi - gt_porosity) / gt_porosity if gt_porosity > 0 else float("nan"),
        "sphericity_mean": float(sph.mean()) if n_pores else float("nan"),
        "sphericity_std": float(sph.std(ddof=1)) if n_pores > 1 else float("nan"),
        "n_matched": int(n_matched),
        "n_missed": int(n_missed),
        "n_spurious": int(n_spurious),
        "n_cut_by_ends": int(n_cut),
        "n_gt_cut_by_ends": int(n_gt_cut),
        "n_mis_sized": int(n_mis_sized),
    }


def size_histogram(diameters_um, bin_um: float = 5.0, max_um: float | None = None) -> pd.DataFrame:
    """Histogram of equivalent diameters in bins of ``bin_um`` µm starting at 0.

    Parameters
    ----------
    diameters_um : 1D array of diameters (µm).
    bin_um : bin width (µm).
    max_um : upper end of the last bin is the first multiple of ``bin_um`` ≥ this (default: the
        largest diameter); pass the same value for every volume to get the same bin edges.

    Returns
    -------
    DataFrame[bin_start_um, bin_end_um, count]; bins are [start, end), the last one closed.
    """
    if not bin_um > 0:
        raise PoreError(f"bin_um: {bin_um!r}; expected a positive bin width in µm")
    d = np.asarray(diameters_um, dtype=np.float64).ravel()
    d = d[np.isfinite(d)]
    top = max(float(max_um) if max_um is not None else 0.0, float(d.max()) if d.size else 0.0)
    n_bins = max(int(np.ceil(top / bin_um - 1e-9)), 1)
    if n_bins * bin_um <= top:
        n_bins += 1  # a diameter exactly on the top edge still gets a bin
    edges = np.arange(n_bins + 1) * float(bin_um)
    counts, _ = np.histogram(d, bins=edges)
    return pd.DataFrame({"bin_start_um": edges[:-1], "bin_end_um": edges[1:], "count": counts.astype(np.int64)})


# --------------------------------------------------------------------------------------------
# Label volumes on disk (integer, unlike write_volume's float32)
# --------------------------------------------------------------------------------------------


def write_labels(path: str | Path, labels: np.ndarray, voxel_size_um: float, edge_cut=None, **attrs) -> None:
    """Write int32 labels atomically as HDF5 dataset ``volume`` with ``voxel_size_um`` and provenance.

    ``edge_cut``: optional boolean mask of the voids the edge kill removed, dataset ``edge_cut``
    (:func:`read_edge_cut`).
    """
    import h5py

    from ..io import atomic_output
    from ..io.hdf5 import create_volume_dataset, provenance, set_attrs

    labels = _check_labels(labels)
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as fh:
            create_volume_dataset(fh, "volume", data=labels, dtype=np.int32, compression="gzip", compression_opts=1)
            if edge_cut is not None:
                edge_cut = np.asarray(edge_cut, dtype=bool)
                if edge_cut.shape != labels.shape:
                    raise PoreError(f"edge_cut: shape {edge_cut.shape} differs from the labels' {labels.shape}")
                create_volume_dataset(fh, EDGE_CUT_DATASET, data=edge_cut, dtype=bool, compression="gzip",
                                      compression_opts=1)
            fh.attrs["voxel_size_um"] = float(voxel_size_um)
            fh.attrs["n_pores"] = int(labels.max()) if labels.size else 0
            set_attrs(fh, provenance())
            set_attrs(fh, attrs)


def read_edge_cut(path: str | Path) -> np.ndarray | None:
    """The edge-cut void mask :func:`write_labels` stored beside the labels (None when there is none)."""
    from ..io import InputError
    from ..io.volume import open_hdf5_file

    try:
        with open_hdf5_file(Path(path)) as fh:
            if EDGE_CUT_DATASET not in fh:
                return None
            return fh[EDGE_CUT_DATASET][...].astype(bool, copy=False)
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {exc}") from exc


def read_labels(path: str | Path) -> tuple[np.ndarray, dict]:
    """Read int32 labels written by :func:`write_labels`; returns (labels, attributes)."""
    from ..io import InputError
    from ..io.volume import open_hdf5_file

    path = Path(path)
    try:
        with open_hdf5_file(path) as fh:
            if "volume" not in fh:
                raise InputError(f"{path}: no dataset 'volume'; expected a label volume written by write_labels")
            ds = fh["volume"]
            if ds.ndim != 3 or not np.issubdtype(ds.dtype, np.integer):
                raise InputError(f"{path}: dataset 'volume' is {ds.dtype} {ds.shape}; expected 3D integer labels")
            labels = ds[...].astype(np.int32, copy=False)
            attrs = dict(fh.attrs)
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {exc}") from exc
    return labels, attrs
