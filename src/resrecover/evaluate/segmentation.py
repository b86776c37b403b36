"""One automatic pore segmentation recipe for every volume (docs/design.md#evaluation; the paper's §2.5).

The same steps, with the same settings, are applied to the ground truth, the un-recovered FDK input
and every recovered volume, so that pore counts differ only because the images differ:

1. (Richardson-Lucy only) non-local-means denoising, :func:`nlm_denoise`;
2. Otsu threshold of the values inside the foam's cylinder: a pore is a voxel of the cylinder whose
   material fraction is below the threshold (material ≈ 1, void ≈ 0);
3. small holes filled: a morphological closing with a small ball, accepted only where it fills an
   enclosed material speck (:func:`fill_small_holes`), so the thin walls of the foam survive;
4. touching pores separated by a watershed of the Euclidean distance transform (µm) seeded by its
   regional maxima, with basins of a dynamic below h merged (the h-maxima criterion,
   :func:`split_touching_pores`);
5. edge kill: pores touching the top or the bottom slice are removed (they are cut by the volume's
   ends). Pores touching the cylinder wall are kept: the voids of the phantom never cross the
   wall, they only touch it, and the paper removes only the top and bottom. The outermost voxel
   of the cylinder (which mixes foam and outside air) is left out of the pore search, so that it
   cannot form crescent-shaped pores along the wall;
6. regions smaller than ``min_pore_volume_voxels`` are removed (noise specks).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from .. import ResrecoverError

log = logging.getLogger(__name__)


class SegmentationError(ResrecoverError):
    """A volume or mask cannot be segmented (wrong shape, empty mask, no contrast)."""


def ball(radius_vox: float) -> np.ndarray:
    """Boolean 3D ball of voxel centres within ``radius_vox`` of the centre (at least one voxel)."""
    r = max(int(np.floor(radius_vox)), 0)
    ax = np.arange(-r, r + 1)
    d2 = ax[:, None, None] ** 2 + ax[None, :, None] ** 2 + ax[None, None, :] ** 2
    return d2 <= radius_vox**2 + 1e-9


def estimate_noise_sigma(volume: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Standard deviation of white noise in ``volume``, from the finest 3D Haar wavelet detail.

    The diagonal detail coefficient of each 2×2×2 block (the eight voxels with alternating signs,
    divided by √8) keeps white noise at its standard deviation and cancels smooth signal; the
    median absolute coefficient over 0.6745 (Donoho's MAD rule) ignores the few edge blocks. This is
    what ``skimage.restoration.estimate_sigma`` does with a Daubechies wavelet; it needs PyWavelets,
    which the analysis environment does not carry.

    Parameters
    ----------
    volume : (nz, ny, nx) float array.
    mask : optional boolean (nz, ny, nx); only blocks lying wholly inside it are used.

    Returns
    -------
    float, the noise standard deviation in the units of ``volume``.
    """
    v = np.asarray(volume, dtype=np.float64)
    nz, ny, nx = (n - n % 2 for n in v.shape)
    if min(nz, ny, nx) < 2:
        raise SegmentationError(
            f"volume of shape {v.shape} is too small to estimate its noise (needs 2 voxels per axis)"
        )
    v = v[:nz, :ny, :nx]
    detail = np.zeros((nz // 2, ny // 2, nx // 2))
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                sign = -1.0 if (dz + dy + dx) % 2 else 1.0
                detail += sign * v[dz::2, dy::2, dx::2]
    detail /= np.sqrt(8.0)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)[:nz, :ny, :nx]
        inside = m[0::2, 0::2, 0::2].copy()
        for dz in (0, 1):
            for dy in (0, 1):
                for dx in (0, 1):
                    inside &= m[dz::2, dy::2, dx::2]
        detail = detail[inside]
    if detail.size == 0:
        raise SegmentationError("the mask holds no whole 2x2x2 block; cannot estimate the noise level")
    return float(np.median(np.abs(detail)) / 0.6745)


def nlm_denoise(
    volume: np.ndarray,
    mask: np.ndarray | None = None,
    patch_size: int = 5,
    patch_distance: int = 3,
    h_factor: float = 0.8,
) -> np.ndarray:
    """Non-local-means denoising (3D, scikit-image fast mode) with an estimated noise level.

    Parameters
    ----------
    volume : (nz, ny, nx) float array, material fraction.
    mask : optional boolean (nz, ny, nx); the noise level is estimated inside it
        (:func:`estimate_noise_sigma`).
    patch_size, patch_distance : voxels. They describe the noise texture, a voxel-scale property of
        the reconstruction rather than of the foam, so they are not expressed in µm. The search
        window is small because 3D NLM costs ``(2 * patch_distance + 1)³`` patch comparisons per
        voxel (5 and 3: about 3 µs per voxel on one core, 7 min at 512³).
    h_factor : filter strength ``h = h_factor × σ_noise`` (scikit-image's advice for fast mode: 0.8).

    Returns
    -------
    (nz, ny, nx) float32 denoised volume.
    """
    from skimage.restoration import denoise_nl_means

    volume = np.asarray(volume, dtype=np.float32)
    sigma = estimate_noise_sigma(volume, mask)
    log.info("NLM denoising: estimated noise sigma %.4g, h %.4g", sigma, h_factor * sigma)
    if sigma <= 0:
        return volume.copy()
    out = denoise_nl_means(
        volume,
        patch_size=patch_size,
        patch_distance=patch_distance,
        h=h_factor * sigma,
        sigma=sigma,
        fast_mode=True,
        preserve_range=True,
        channel_axis=None,
    )
    return np.asarray(out, dtype=np.float32)


def pore_threshold(volume: np.ndarray, foam_mask: np.ndarray) -> float:
    """Otsu threshold of the values inside the foam's cylinder (pores: below it).

    Raises :class:`SegmentationError` when the mask is empty or the values inside are constant.
    """
    from skimage.filters import threshold_otsu

    values = np.asarray(volume)[foam_mask]
    if values.size == 0:
        raise SegmentationError("the foam mask is empty; expected the foam's cylinder inside the volume")
    lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        raise SegmentationError(
            f"the volume is constant ({lo:g}) inside the foam mask; there is no pore phase to threshold"
        )
    return float(threshold_otsu(values))


def fill_small_holes(pores: np.ndarray, radius_vox: float = 1.0) -> np.ndarray:
    """Fill the small holes of the pore phase that a closing with a ball of ``radius_vox`` fills.

    A closing of the pore phase would also erase every material wall thinner than the ball, merging
    neighbouring pores of a foam whose walls thin to nothing at the contacts. So the closing is only
    accepted where it fills a whole enclosed material speck: a connected component of material
    (6-connected, outside the array counted as material) that lies entirely inside the closed set.

    Parameters
    ----------
    pores : (nz, ny, nx) boolean pore phase.
    radius_vox : ball radius in voxels; the holes are noise specks, a voxel-scale feature.

    Returns
    -------
    (nz, ny, nx) boolean pore phase with the small holes filled.
    """
    pores = np.asarray(pores, dtype=bool)
    if radius_vox <= 0:
        return pores.copy()
    closed = ndi.binary_closing(pores, structure=ball(radius_vox), border_value=0) | pores
    if not (closed & ~pores).any():
        return pores.copy()
    material_labels, n = ndi.label(~pores)
    if n == 0:
        return pores.copy()
    # components touching the array border connect to the material (or air) outside: never holes
    border = np.zeros(n + 1, dtype=bool)
    for axis in range(3):
        for index in (0, -1):
            border[np.unique(np.take(material_labels, index, axis=axis))] = True
    size = np.bincount(material_labels.ravel(), minlength=n + 1)
    covered = np.bincount(material_labels[closed & ~pores], minlength=n + 1)
    hole = (covered == size) & ~border
    hole[0] = False
    return pores | hole[material_labels]


def _basin_saddles(labels: np.ndarray, height: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Highest pass between each pair of face-adjacent basins: (label a, label b > a, saddle height).

    A pass between two neighbouring voxels of different basins is the lower of their two heights;
    the saddle of two basins is their highest pass.
    """
    keys_parts, pass_parts = [], []
    n = int(labels.max()) + 1
    for axis in range(labels.ndim):
        lo = [slice(None)] * labels.ndim
        hi = [slice(None)] * labels.ndim
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        a, b = labels[tuple(lo)], labels[tuple(hi)]
        edge = (a != b) & (a > 0) & (b > 0)
        a, b = a[edge].astype(np.int64), b[edge].astype(np.int64)
        keys_parts.append(np.minimum(a, b) * n + np.maximum(a, b))
        pass_parts.append(np.minimum(height[tuple(lo)][edge], height[tuple(hi)][edge]))
    keys = np.concatenate(keys_parts)
    passes = np.concatenate(pass_parts)
    if keys.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=height.dtype)
    order = np.lexsort((passes, keys))  # by key, then pass ascending: the last of each key is its max
    keys, passes = keys[order], passes[order]
    last = np.r_[keys[1:] != keys[:-1], True]
    keys, saddles = keys[last], passes[last]
    return keys // n, keys % n, saddles


def merge_shallow_basins(
    labels: np.ndarray, height: np.ndarray, h: float, peaks: np.ndarray | None = None
) -> np.ndarray:
    """Merge watershed basins separated by a saddle less than ``h`` below the lower basin's peak.

    Pairs of adjacent basins are visited from the highest saddle down (a maximum spanning tree of
    the basin graph, Kruskal order) and joined while ``saddle ≥ min(peak₁, peak₂) − h``. Every basin
    whose dynamic (peak minus the saddle to a higher basin) is below ``h`` is thereby absorbed by
    the neighbour it would flood into: the partition that a watershed from the h-maxima markers
    gives, without their costly grayscale reconstruction (O(n log n) over the whole volume).

    Parameters
    ----------
    labels : (nz, ny, nx) int basins of a watershed of ``-height``, 0 = outside.
    height : (nz, ny, nx) float, e.g. the distance transform.
    h : float, in the units of ``height``.
    peaks : optional (labels.max() + 1,) highest ``height`` of each basin (the value at its seed);
        computed when not given.

    Returns
    -------
    (nz, ny, nx) int32 merged labels (not consecutive).
    """
    n = int(labels.max())
    if n < 2:
        return labels.astype(np.int32, copy=False)
    if peaks is None:
        inside = labels > 0
        peaks = np.zeros(n + 1)
        per_basin = pd.Series(height[inside]).groupby(labels[inside]).max()
        peaks[per_basin.index.to_numpy()] = per_basin.to_numpy()
        del inside
    a, b, saddle = _basin_saddles(labels, height)
    order = np.argsort(-saddle, kind="stable")
    # plain Python lists: this loop touches single elements, where numpy scalars are slow
    a, b, saddle = a[order].tolist(), b[order].tolist(), saddle[order].tolist()
    peak = np.asarray(peaks, dtype=np.float64).tolist()
    parent = list(range(n + 1))

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:  # path compression
            parent[i], i = root, parent[i]
        return root

    for ai, bi, s in zip(a, b, saddle):
        ra, rb = find(ai), find(bi)
        if ra == rb:
            continue
        if s >= min(peak[ra], peak[rb]) - h:
            if peak[ra] < peak[rb]:
                ra, rb = rb, ra
            parent[rb] = ra
    roots = np.array([find(i) for i in range(n + 1)], dtype=np.int32)
    return roots[labels]


def distance_to_background(pores: np.ndarray, voxel_size_um: float, slab: int = 32) -> np.ndarray:
    """Euclidean distance (µm, float32) of every pore voxel to the nearest non-pore voxel.

    ``scipy.ndimage.distance_transform_edt`` returns float64 built from float64 copies of its
    feature transform (~48 bytes per voxel: 6.5 GB at 512³). Here only the int32 feature transform
    is kept (12 bytes per voxel) and the distances are computed from it slab by slab.
    """
    pores = np.asarray(pores, dtype=bool)
    distance = np.zeros(pores.shape, dtype=np.float32)
    if pores.all():
        raise SegmentationError("the whole volume is pore; there is no material to measure distances from")
    features = ndi.distance_transform_edt(pores, return_distances=False, return_indices=True)
    ny, nx = pores.shape[1:]
    y = np.arange(ny, dtype=np.int32)[:, None]
    x = np.arange(nx, dtype=np.int32)[None, :]
    for z0 in range(0, pores.shape[0], slab):
        z1 = min(z0 + slab, pores.shape[0])
        z = np.arange(z0, z1, dtype=np.int32)[:, None, None]
        dz = (features[0, z0:z1] - z).astype(np.float32)
        dy = (features[1, z0:z1] - y).astype(np.float32)
        dx = (features[2, z0:z1] - x).astype(np.float32)
        distance[z0:z1] = np.sqrt(dz * dz + dy * dy + dx * dx)
    del features
    distance *= np.float32(voxel_size_um)
    return distance


def split_touching_pores(pores: np.ndarray, voxel_size_um: float, marker_h_um: float) -> np.ndarray:
    """Label the pore phase, splitting touching pores by a watershed of the distance transform.

    The Euclidean distance transform (µm) peaks at each pore's centre with the pore's radius and
    dips at the neck where two pores touch. Its regional maxima seed a watershed of the negated
    distance map; basins whose peak rises less than ``marker_h_um`` above the saddle to a
    neighbour are merged into it (:func:`merge_shallow_basins`): the h-maxima criterion. Two
    touching pores of radii r₁ ≤ r₂ stay separate when the neck's distance value is at most
    r₁ − h, while the sub-voxel ripples of a digitized sphere's distance map do not split it.

    Parameters
    ----------
    pores : (nz, ny, nx) boolean pore phase.
    voxel_size_um : voxel edge (µm).
    marker_h_um : dynamic (µm) a distance maximum needs to keep its own pore.

    Returns
    -------
    (nz, ny, nx) int32 labels (0 = not a pore), not necessarily consecutive.
    """
    from skimage.morphology import local_maxima
    from skimage.segmentation import watershed

    pores = np.asarray(pores, dtype=bool)
    if not pores.any():
        return np.zeros(pores.shape, dtype=np.int32)
    distance = distance_to_background(pores, voxel_size_um)
    seeds = local_maxima(distance, allow_borders=True) & pores
    markers, n_markers = ndi.label(seeds, structure=np.ones((3, 3, 3), dtype=bool))
    markers = markers.astype(np.int32, copy=False)
    # a regional maximum is the top of the basin it seeds: the basins' peaks are the seeds' heights
    peaks = np.zeros(n_markers + 1)
    peaks[markers[seeds]] = distance[seeds]
    del seeds
    labels = watershed(-distance, markers, mask=pores)
    del markers
    labels = merge_shallow_basins(labels, distance, marker_h_um, peaks)
    del distance
    # every pore component holds a regional maximum, so none should be left; stay safe anyway
    orphans = pores & (labels == 0)
    if orphans.any():
        orphan_labels, _ = ndi.label(orphans)
        labels[orphans] = orphan_labels[orphans] + labels.max()
    return labels.astype(np.int32, copy=False)


def remove_edge_pores(labels: np.ndarray, axis: int = 0) -> np.ndarray:
    """Zero every label present in the first or the last slice along ``axis`` (the edge kill)."""
    labels = np.asarray(labels)
    touching = np.union1d(np.take(labels, 0, axis=axis), np.take(labels, -1, axis=axis))
    touching = touching[touching > 0]
    if touching.size == 0:
        return labels.copy()
    out = labels.copy()
    out[np.isin(labels, touching)] = 0
    return out


def remove_small_pores(labels: np.ndarray, min_voxels: int) -> np.ndarray:
    """Zero every label with fewer than ``min_voxels`` voxels."""
    labels = np.asarray(labels)
    counts = np.bincount(labels.ravel())
    small = counts < min_voxels
    small[0] = False
    if not small.any():
        return labels.copy()
    return np.where(small[labels], 0, labels).astype(labels.dtype, copy=False)


def inner_mask(foam_mask: np.ndarray, margin_vox: int) -> np.ndarray:
    """``foam_mask`` eroded by ``margin_vox`` voxels in the y-x plane only (4-connected steps).

    The top and bottom slices are kept: the foam continues beyond them, the edge kill handles
    pores cut there.
    """
    foam_mask = np.asarray(foam_mask, dtype=bool)
    if margin_vox <= 0:
        return foam_mask
    cross = ndi.generate_binary_structure(2, 1)[None]  # (1, 3, 3): no step along z
    return ndi.binary_erosion(foam_mask, structure=cross, iterations=int(margin_vox), border_value=0)


def segment_pores(
    volume: np.ndarray,
    foam_mask: np.ndarray,
    voxel_size_um: float,
    denoise: bool = False,
    min_pore_volume_voxels: int = 8,
    marker_h_um: float | None = None,
    closing_radius_vox: float = 1.0,
    wall_margin_vox: int = 1,
    return_edge_cut: bool = False,
):
    """Segment the pores of a foam volume with the study's single automatic recipe.

    Parameters
    ----------
    volume : (nz, ny, nx) float array, material fraction (material ≈ 1, void ≈ 0).
    foam_mask : (nz, ny, nx) boolean, the foam's cylinder (``resrecover.masks.foam_mask``); the
        threshold is computed inside it and pores are only found inside it.
    voxel_size_um : voxel edge (µm).
    denoise : non-local-means first (the study does this for Richardson-Lucy only).
    min_pore_volume_voxels : smaller regions are removed (noise specks).
    marker_h_um : the h of the h-maxima criterion of the watershed (µm), see
        :func:`split_touching_pores`. Default: a quarter of a voxel. It only has to absorb the
        sub-voxel ripples of a digitized distance map (convex shapes of any size keep a single
        maximum even at h = 0); a larger h merges pores touching through a neck less than h
        narrower than the smaller one: on a 160³ foam at 3.2 µm (voids down to 2.3 voxels in
        radius), h = 0.5 voxel already lost 0.2% of the pores of the clean phantom and 9% of a
        2.5 µm-blurred copy, h = 1 voxel 8% and 37%.
    closing_radius_vox : ball radius (voxels) of the hole-filling closing; 0 turns it off.
    wall_margin_vox : pores are looked for inside the foam mask less its outermost
        ``wall_margin_vox`` voxels in y-x (:func:`inner_mask`). Those voxels straddle the
        cylinder's surface and mix the foam with the air outside (partial volume, reconstruction
        blur, denoising across the edge), so they dip below the threshold along the wall and
        would form spurious crescent-shaped pores. Voids touching the wall lose that one-voxel
        shell, the same for every volume.
    return_edge_cut : also return the voxels of the voids the edge kill removed.

    Returns
    -------
    (nz, ny, nx) int32 labels, 1..n_pores consecutive, 0 = not a pore; with ``return_edge_cut``,
    ``(labels, edge_cut)``, ``edge_cut`` a boolean (nz, ny, nx) mask of the voids that touch the
    top or the bottom slice. The matching needs them (:func:`resrecover.evaluate.pores.match_pores`):
    a void cut by an end in one volume and not in the other is the same void, not a hallucination.
    """
    from skimage.segmentation import relabel_sequential

    volume = np.asarray(volume)
    foam_mask = np.asarray(foam_mask, dtype=bool)
    if volume.ndim != 3:
        raise SegmentationError(f"expected a 3D (z, y, x) volume, got shape {volume.shape}")
    if foam_mask.shape != volume.shape:
        raise SegmentationError(f"foam mask shape {foam_mask.shape} does not match the volume shape {volume.shape}")
    if not voxel_size_um > 0:
        raise SegmentationError(f"voxel_size_um: {voxel_size_um!r}; expected a positive size in µm")
    if marker_h_um is None:
        marker_h_um = 0.25 * voxel_size_um
    if denoise:
        volume = nlm_denoise(volume, foam_mask)
    threshold = pore_threshold(volume, foam_mask)
    pores = (volume < threshold) & inner_mask(foam_mask, wall_margin_vox)
    pores = fill_small_holes(pores, closing_radius_vox)
    labels = split_touching_pores(pores, voxel_size_um, marker_h_um)
    del pores
    kept = remove_edge_pores(labels, axis=0)
    edge_cut = (labels > 0) & (kept == 0) if return_edge_cut else None
    del labels
    labels = remove_small_pores(kept, min_pore_volume_voxels)
    labels, _, _ = relabel_sequential(labels)
    n_pores = int(labels.max())
    log.info(
        "segmentation: Otsu threshold %.4g inside the foam mask, %d pores (h %.3g µm, min %d voxels, denoise %s)",
        threshold,
        n_pores,
        marker_h_um,
        min_pore_volume_voxels,
        denoise,
    )
    labels = labels.astype(np.int32, copy=False)
    return (labels, edge_cut) if return_edge_cut else labels
