"""How :mod:`.pores` measures every pore of a label volume: voxel counts, centroids, surface meshes.

The recipe (:func:`resrecover.evaluate.pores.pore_surface_um2` explains it): each pore's binary mask,
cropped to its bounding box plus :data:`CROP_MARGIN_VOX`, is smoothed by a Gaussian of
:data:`SURFACE_SMOOTHING_VOX` voxels, meshed by marching cubes at 0.5, and the mesh's area and
enclosed volume are summed. :func:`measure_pores` runs it in compiled code (:mod:`.pore_kernels`,
numba: one pass over the labels, the pores spread over threads that do not hold the GIL, no mesh
stored) and, where numba or scikit-image's case table is missing, with ``scipy.ndimage`` and
``skimage.measure.marching_cubes`` pore by pore (about 5x slower; sphericities equal to 1e-5).
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np
from scipy import ndimage as ndi

# Smoothing of each pore's binary mask before marching cubes (voxels), see pores.pore_surface_um2.
SURFACE_SMOOTHING_VOX = 0.7
# Empty voxels kept around each pore's bounding box, whatever the smoothing: smoothing the crop with
# zeros beyond it is exact at any margin (the mask is empty there), and a voxel one step outside the
# box sees at most the kernel's weight beyond its centre tap (0.22 for σ = 0.7, < 0.5 for every σ),
# so the 0.5 level never reaches the crop's faces and every mesh closes. A wider margin only adds
# empty cubes to march through (a 10-voxel pore's crop with 2 voxels is 2.7× its box; with 1, 1.7×).
CROP_MARGIN_VOX = 1
# Above this many labels the compiled pass keeps one set of per-label arrays instead of one per
# thread (each set holds 7 int64 per label).
_PER_THREAD_LABELS_MAX = 1_000_000


def gaussian_kernel(sigma_vox: float) -> np.ndarray:
    """Normalized float32 Gaussian taps of radius ceil(3σ) (at least 1)."""
    radius = max(int(np.ceil(3 * sigma_vox)), 1)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma_vox) ** 2)
    return (k / k.sum()).astype(np.float32)


def rescaled_area(area_vox2, mesh_volume_vox3, n_voxels):
    """Mesh area rescaled by (V / V_mesh)^(2/3): the mesh brought back to the pore's voxel volume."""
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(mesh_volume_vox3 > 0, (n_voxels / mesh_volume_vox3) ** (2 / 3), 1.0)
    return area_vox2 * scale


# ------------------------------------------------------------------------- scikit-image path
def mesh_area_volume(verts: np.ndarray, faces: np.ndarray) -> tuple[float, float]:
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


def pore_mesh(mask: np.ndarray, kernel: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes mesh (voxel units, crop frame) of a boolean mask, smoothed by ``kernel`` first.

    ``skimage.measure.marching_cubes`` (Lewiner's cases). The Gaussian is applied with zeros
    outside the crop, which is exact: the mask is empty there.
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


def _stats_numpy(labels: np.ndarray):
    """(counts, box starts, box stops, coordinate sums) with ``bincount``, ``find_objects``, crop sums."""
    counts = np.bincount(labels.ravel())
    lo = np.zeros((counts.size, 3), np.int64)
    hi = np.zeros((counts.size, 3), np.int64)
    sums = np.zeros((counts.size, 3), np.float64)
    for label, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        lo[label] = [s.start for s in box]
        hi[label] = [s.stop for s in box]
        crop = labels[box] == label
        for axis in range(3):
            profile = crop.sum(axis=tuple(a for a in range(3) if a != axis), dtype=np.int64)
            sums[label, axis] = profile @ np.arange(lo[label, axis], hi[label, axis])
    return counts, lo, hi, sums


def _surfaces_skimage(labels, present, lo, hi, smoothing_vox: float) -> np.ndarray:
    """(n, 2) mesh area and volume of each pore, meshed one by one with scikit-image."""
    kernel = gaussian_kernel(smoothing_vox) if smoothing_vox > 0 else None
    nz, ny, nx = labels.shape
    out = np.zeros((present.size, 2))
    for row, label in enumerate(present.tolist()):
        (z0, y0, x0), (z1, y1, x1) = lo[label] - CROP_MARGIN_VOX, hi[label] + CROP_MARGIN_VOX
        crop = labels[max(z0, 0) : z1, max(y0, 0) : y1, max(x0, 0) : x1] == label
        pad = [(max(-z0, 0), max(z1 - nz, 0)), (max(-y0, 0), max(y1 - ny, 0)), (max(-x0, 0), max(x1 - nx, 0))]
        if any(p for pair in pad for p in pair):  # zero margin where the box meets the array's faces
            crop = np.pad(crop, pad)
        out[row] = mesh_area_volume(*pore_mesh(crop, kernel))
    return out


# ------------------------------------------------------------------------------ compiled path
@functools.lru_cache(maxsize=1)
def compiled():
    """``(pore_kernels module, its tables)``, or None where numba or scikit-image's case table is missing."""
    try:
        from . import pore_kernels

        table = pore_kernels.classic_case_table()
        return pore_kernels, (table, pore_kernels.EDGE_CORNERS, pore_kernels.case_edge_masks(table))
    except ImportError:
        return None


def kernel64(smoothing_vox: float) -> np.ndarray:
    """The smoothing taps in float64 for the compiled path (empty: no smoothing)."""
    if smoothing_vox > 0:
        return gaussian_kernel(smoothing_vox).astype(np.float64)
    return np.zeros(0, np.float64)


@contextlib.contextmanager
def numba_threads(n: int):
    """Run numba's parallel loops on ``n`` threads (at most numba's pool); yields the count used."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield numba.get_num_threads()
    finally:
        numba.set_num_threads(before)


def balanced_order(work: np.ndarray, n_parts: int) -> np.ndarray:
    """Pore indices ordered so that ``n_parts`` equal consecutive chunks carry similar ``work``.

    Largest first, dealt round-robin: chunk t holds the t-th, (t + n)-th, ... largest pores.
    """
    order = np.argsort(-np.asarray(work), kind="stable")
    return np.concatenate([order[t::n_parts] for t in range(n_parts)])


# ------------------------------------------------------------------------------------- entry
def measure_pores(labels: np.ndarray, smoothing_vox: float, n_threads: int, engine: str = "auto"):
    """Every pore's voxel count, coordinate sums and mesh area and volume (voxel units).

    Parameters
    ----------
    labels : (nz, ny, nx) C-contiguous non-negative integer labels, 0 = background.
    smoothing_vox : Gaussian σ of the masks before marching cubes (0: none).
    n_threads : threads of the compiled path (the results do not depend on it).
    engine : ``'auto'`` (compiled where numba is there) or ``'skimage'`` (scipy + scikit-image,
        pore by pore: the reference the compiled path is checked against).

    Returns
    -------
    ``present`` (the labels that occur, ascending), and per present label ``counts``,
    ``sums`` (n, 3) of the z, y, x voxel indices, ``area_volume`` (n, 2).
    """
    found = compiled() if engine == "auto" else None
    if engine not in ("auto", "skimage"):
        raise ValueError(f"engine: {engine!r}; expected 'auto' or 'skimage'")
    if found is None:
        counts, lo, hi, sums = _stats_numpy(labels)
        present = np.flatnonzero(counts)
        present = present[present > 0]
        return present, counts[present], sums[present], _surfaces_skimage(labels, present, lo, hi, smoothing_vox)
    kernels, tables = found
    n_labels = int(labels.max())
    with numba_threads(n_threads) as threads:
        parts = threads if n_labels <= _PER_THREAD_LABELS_MAX else 1
        counts, lo, hi, sums = kernels.label_stats(labels, n_labels, parts)
        present = np.flatnonzero(counts)
        present = present[present > 0]
        origins = lo[present] - CROP_MARGIN_VOX
        shapes = hi[present] - lo[present] + 1 + 2 * CROP_MARGIN_VOX
        order = balanced_order(shapes.prod(axis=1), threads)
        area_volume = kernels.pores_area_volume(
            labels, present.astype(labels.dtype), origins, shapes, kernel64(smoothing_vox), *tables, order, threads
        )
    return present, counts[present], sums[present], area_volume


def single_pore_area_volume(mask: np.ndarray, smoothing_vox: float) -> tuple[float, float]:
    """Mesh area and volume (voxel units) of one boolean mask (its crop: margins included)."""
    mask = np.asarray(mask, dtype=bool)
    found = compiled()
    if found is None:
        kernel = gaussian_kernel(smoothing_vox) if smoothing_vox > 0 else None
        return mesh_area_volume(*pore_mesh(mask, kernel))
    kernels, tables = found
    area, volume = kernels.pore_area_volume(
        mask.astype(np.uint8), 1, np.zeros(3, np.int64), np.array(mask.shape, np.int64), kernel64(smoothing_vox),
        *tables,
    )
    return float(area), float(volume)
