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
from scipy import ndimage as ndi

from .. import ResrecoverError

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
]

#: the pore columns that state the study's headline, in the order its tables show them
HEADLINE_PORE_COLUMNS = ["n_pores", "recovery_pct", "n_matched", "n_spurious", "porosity_error_pct", "sphericity_mean"]

# Smoothing of each pore's binary mask before marching cubes (voxels), see pore_table.
SURFACE_SMOOTHING_VOX = 0.7
# Empty voxels kept around each pore's bounding box, whatever the smoothing: smoothing the crop with
# zeros beyond it is exact at any margin (the mask is empty there), and a voxel one step outside the
# box sees at most the kernel's weight beyond its centre tap (0.22 for σ = 0.7, < 0.5 for every σ),
# so the 0.5 level never reaches the crop's faces and every mesh closes. A wider margin only adds
# empty cubes to march through (a 10-voxel pore's crop with 2 voxels is 2.7× its box; with 1, 1.7×).
CROP_MARGIN_VOX = 1


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


def _mesh_area_volume(verts: np.ndarray, faces: np.ndarray) -> tuple[float, float]:
    """Area and enclosed volume (divergence theorem) of one closed triangle mesh.

    Meant for one pore's mesh at a time, in its own crop frame: the arrays stay in cache and the
    volume sum is well conditioned; float32 products, float64 sums.
    """
    tri = verts[faces]  # (F, 3 corners, 3 coordinates)
    a = tri[:, 0]
    u = tri[:, 1] - a
    v = tri[:, 2] - a
    # n = u × v: |n| / 2 is a triangle's area, and a·(b × c) = a·n (the a×· terms vanish), so the
    # signed cone volume a·(b × c) / 6 needs no second cross product
    nx = u[:, 1] * v[:, 2] - u[:, 2] * v[:, 1]
    ny = u[:, 2] * v[:, 0] - u[:, 0] * v[:, 2]
    nz = u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]
    area = 0.5 * np.sqrt(nx * nx + ny * ny + nz * nz).sum(dtype=np.float64)
    cone = (a[:, 0] * nx + a[:, 1] * ny + a[:, 2] * nz).sum(dtype=np.float64) / 6.0
    return float(area), abs(float(cone))


def _gaussian_kernel(sigma_vox: float) -> np.ndarray:
    radius = max(int(np.ceil(3 * sigma_vox)), 1)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma_vox) ** 2)
    return (k / k.sum()).astype(np.float32)


def _pore_mesh(mask: np.ndarray, kernel: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes mesh (voxel units, crop frame) of a boolean mask, smoothed by ``kernel`` first.

    The Gaussian is applied with zeros outside the crop, which is exact: the mask is empty there.
    """
    from skimage.measure import marching_cubes

    field = mask.astype(np.float32)
    if kernel is not None:
        smooth = field
        for axis in range(3):
            smooth = ndi.correlate1d(smooth, kernel, axis=axis, mode="constant", cval=0.0)
        # a one- or two-voxel speck smoothed flat has no 0.5 level left: mesh it unsmoothed
        if smooth.max() > 0.5:
            field = smooth
    verts, faces, _, _ = marching_cubes(field, 0.5)
    return verts, faces


def _rescaled_area(area_vox2, mesh_volume_vox3, n_voxels):
    """Mesh area rescaled by (V / V_mesh)^(2/3): the mesh brought back to the pore's voxel volume."""
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(mesh_volume_vox3 > 0, (n_voxels / mesh_volume_vox3) ** (2 / 3), 1.0)
    return area_vox2 * scale


def pore_surface_um2(mask: np.ndarray, voxel_size_um: float, smoothing_vox: float = SURFACE_SMOOTHING_VOX) -> float:
    """Surface area (µm²) of one pore given as a boolean mask with an empty margin of 2 voxels.

    Marching cubes on the raw binary mask follows the voxel staircase and over-estimates a sphere's
    area by ~9% at every size (sphericity ~0.92 for perfect spheres). So the mask is first smoothed
    with a Gaussian of ``smoothing_vox`` voxels and meshed at level 0.5
    (``skimage.measure.marching_cubes``); the smoothing lets the mesh cut across the steps but
    shrinks convex shapes a little (by ~σ²/r), so the area is rescaled by ``(V / V_mesh)^(2/3)``
    where V is the voxel-count volume and V_mesh the mesh's enclosed volume: a uniform rescale that
    brings the mesh back to the pore's measured volume. The resulting sphericity is that of the
    smoothed mesh, which is scale-free. Measured on digitized spheres of radius 2.3–20 voxels:
    area +1 to +3% of 4πr² (the voxel count itself is slightly off the sphere's volume), sphericity
    0.97–0.99; 2:1 ellipsoids within 2% of their exact sphericity. The smoothing also rounds
    corners: a cube (0.806) reads 0.94 at 5 voxels, 0.89 at 10.
    """
    kernel = _gaussian_kernel(smoothing_vox) if smoothing_vox > 0 else None
    verts, faces = _pore_mesh(np.asarray(mask, dtype=bool), kernel)
    area, mesh_volume = _mesh_area_volume(verts, faces)
    return float(_rescaled_area(area, mesh_volume, float(np.count_nonzero(mask)))) * float(voxel_size_um) ** 2


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
    Volumes come from one ``bincount``; each pore is then cropped to its bounding box
    (``scipy.ndimage.find_objects``) plus a margin, so the cost is proportional to the pores'
    volume rather than (number of pores × volume size).
    """
    labels = _check_labels(labels)
    if not voxel_size_um > 0:
        raise PoreError(f"voxel_size_um: {voxel_size_um!r}; expected a positive size in µm")
    counts = np.bincount(labels.ravel())
    present = np.flatnonzero(counts)
    present = present[present > 0]
    if present.size == 0:
        return pd.DataFrame({c: pd.Series(dtype=np.int64 if c == "label" else np.float64) for c in PORE_COLUMNS})
    margin = CROP_MARGIN_VOX
    kernel = _gaussian_kernel(smoothing_vox) if smoothing_vox > 0 else None
    nz, ny, nx = labels.shape
    boxes = ndi.find_objects(labels)

    def measure(label: int) -> tuple[float, float, float, float, float]:
        """Centroid (z, y, x; voxels), mesh area and mesh volume of one pore, from its crop."""
        bz, by, bx = boxes[label - 1]
        z0, y0, x0 = bz.start - margin, by.start - margin, bx.start - margin
        z1, y1, x1 = bz.stop + margin, by.stop + margin, bx.stop + margin
        crop = labels[max(z0, 0) : z1, max(y0, 0) : y1, max(x0, 0) : x1] == label
        if min(z0, y0, x0) < 0 or z1 > nz or y1 > ny or x1 > nx:
            # zero margin where the box meets the array's faces, so every mesh closes
            pad = [(max(-z0, 0), max(z1 - nz, 0)), (max(-y0, 0), max(y1 - ny, 0)), (max(-x0, 0), max(x1 - nx, 0))]
            crop = np.pad(crop, pad)
        plane = crop.sum(axis=0, dtype=np.int64)  # (y, x) counts
        n = counts[label]
        cz = crop.sum(axis=(1, 2), dtype=np.int64) @ np.arange(crop.shape[0]) / n + z0
        cy = plane.sum(axis=1) @ np.arange(crop.shape[1]) / n + y0
        cx = plane.sum(axis=0) @ np.arange(crop.shape[2]) / n + x0
        area, mesh_volume = _mesh_area_volume(*_pore_mesh(crop, kernel))
        return cz, cy, cx, area, mesh_volume

    # One pore after the other: skimage's marching cubes holds the GIL, and threads measured no
    # faster (benchmarks/NOTES.md).
    measured = np.array([measure(label) for label in present.tolist()], dtype=np.float64).reshape(present.size, 5)
    centroids, area_vox2, mesh_volume_vox3 = measured[:, :3], measured[:, 3], measured[:, 4]
    surfaces = _rescaled_area(area_vox2, mesh_volume_vox3, counts[present].astype(np.float64))
    surfaces *= float(voxel_size_um) ** 2
    volume_um3 = counts[present] * float(voxel_size_um) ** 3
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
    """

    pairs: pd.DataFrame
    missed: np.ndarray
    spurious: np.ndarray
    min_iou: float

    @property
    def n_matched(self) -> int:
        return len(self.pairs)

    @property
    def n_missed(self) -> int:
        return int(self.missed.size)

    @property
    def n_spurious(self) -> int:
        return int(self.spurious.size)

    def gt_label_of(self, labels) -> np.ndarray:
        """Ground-truth label matched to each recovered label in ``labels`` (0 = spurious)."""
        lookup = dict(zip(self.pairs["label"].to_numpy(), self.pairs["gt_label"].to_numpy()))
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


def match_pores(labels: np.ndarray, gt_labels: np.ndarray, min_iou: float = 0.3) -> PoreMatching:
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

    Parameters
    ----------
    labels, gt_labels : (nz, ny, nx) integer labels of the same shape, 0 = background.
    min_iou : smallest IoU of a match, in (0, 1].

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
    a, b, overlap, iou = a[keep], b[keep], overlap[keep], iou[keep]
    order = np.lexsort((b, a, -iou))  # largest IoU first; ties by label for determinism
    used_a: set[int] = set()
    used_b: set[int] = set()
    chosen = []
    for i in order:
        ai, bi = int(a[i]), int(b[i])
        if ai in used_a or bi in used_b:
            continue
        used_a.add(ai)
        used_b.add(bi)
        chosen.append(i)
    chosen = np.array(sorted(chosen, key=lambda i: a[i]), dtype=np.int64)
    pa, pb = a[chosen], b[chosen]
    pairs = pd.DataFrame(
        {
            "label": pa.astype(np.int64),
            "gt_label": pb.astype(np.int64),
            "overlap_voxels": overlap[chosen].astype(np.int64),
            "iou": iou[chosen],
            "volume_voxels": size[pa].astype(np.int64),
            "gt_volume_voxels": gt_size[pb].astype(np.int64),
            "diameter_rel_error": (size[pa] / gt_size[pb]) ** (1 / 3) - 1.0,
        }
    )
    return PoreMatching(
        pairs=pairs,
        missed=np.setdiff1d(gt_ids, pb).astype(np.int64),
        spurious=np.setdiff1d(label_ids, pa).astype(np.int64),
        min_iou=float(min_iou),
    )


def annotate_matches(pore_df: pd.DataFrame, matching: PoreMatching, gt_pore_df: pd.DataFrame) -> pd.DataFrame:
    """Add ``matched_gt_label`` (0 = spurious), ``match_iou`` and ``diameter_error_um`` to a pore table.

    ``diameter_error_um`` is the recovered minus the matched ground-truth equivalent diameter (NaN
    for spurious pores).
    """
    out = pore_df.copy()
    pairs = matching.pairs.set_index("label")
    gt_diam = gt_pore_df.set_index("label")["diameter_um"]
    out["matched_gt_label"] = matching.gt_label_of(out["label"])
    out["match_iou"] = out["label"].map(pairs["iou"]).astype(float)
    out["diameter_error_um"] = out["diameter_um"] - out["matched_gt_label"].map(gt_diam).astype(float)
    out.loc[out["matched_gt_label"] == 0, "diameter_error_um"] = np.nan
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
    matching is reported beside it (``n_matched``, ``n_missed``, ``n_spurious``).
    ``porosity_error_pct`` = 100 × (porosity − gt_porosity) / gt_porosity. ``sphericity_std`` is the
    sample standard deviation. With ``matching`` None (the ground truth against itself) every pore
    counts as matched.
    """
    n_pores = int(len(pore_df))
    n_gt = int(len(gt_pore_df))
    phi = porosity(labels, foam_mask)
    sph = pore_df["sphericity"].astype(float)
    if matching is None:
        n_matched, n_missed, n_spurious = n_pores, 0, 0
    else:
        n_matched, n_missed, n_spurious = matching.n_matched, matching.n_missed, matching.n_spurious
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


def write_labels(path: str | Path, labels: np.ndarray, voxel_size_um: float, **attrs) -> None:
    """Write int32 labels atomically as HDF5 dataset ``volume`` with ``voxel_size_um`` and provenance."""
    import h5py

    from ..io import atomic_output
    from ..io.hdf5 import create_volume_dataset, provenance, set_attrs

    labels = _check_labels(labels)
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as fh:
            create_volume_dataset(fh, "volume", data=labels, dtype=np.int32, compression="gzip", compression_opts=1)
            fh.attrs["voxel_size_um"] = float(voxel_size_um)
            fh.attrs["n_pores"] = int(labels.max()) if labels.size else 0
            set_attrs(fh, provenance())
            set_attrs(fh, attrs)


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
