"""Compiled (numba) pore measurements behind :func:`resrecover.evaluate.pores.pore_table`.

The recipe is the one ``pore_table`` always had (see :func:`resrecover.evaluate.pores.pore_surface_um2`):
each pore's binary mask, cropped to its bounding box plus one empty voxel, is smoothed by a Gaussian
(zeros beyond the crop, float32 after each axis, as ``scipy.ndimage.correlate1d``), its 0.5
iso-surface is triangulated by marching cubes and the mesh's area and enclosed volume are summed.
What changes is where it runs: one compiled pass per pore that never builds the mesh (each
triangle's area and signed cone volume are added as it is made), pores spread over threads that
do not hold the GIL, and one pass over the labels for the voxel counts, bounding boxes and centroid
sums (instead of ``bincount``, ``find_objects`` and per-crop sums).

The triangulation is the classic marching-cubes case table (Lorensen & Cline 1987) with the
vertex interpolation of scikit-image's implementation; it is read at import from the installed
scikit-image, which ships it beside its Lewiner variant (``method='lorensen'``), so the two give the
same triangles (tested). scikit-image's default, Lewiner's, only differs in the rare ambiguous cubes:
on the 1,391 pores of the benchmark foam the sphericities of the two differ by at most 1e-5
(benchmarks/NOTES.md).

Everything here is a pure function of arrays; :mod:`.pore_surface` chooses the threads and reads the table.
"""

from __future__ import annotations

import base64

import numba
import numpy as np

# Corners of the unit cube, numbered dz * 4 + dy * 2 + dx, at the two ends of each of the 12 edges
# in the edge numbering of the case table (edges 0-3 around the bottom face, 4-7 the top face,
# 8-11 the vertical ones): the standard marching-cubes diagram.
_BOTTOM = ((0, 1), (1, 3), (3, 2), (2, 0))
EDGE_CORNERS = np.array(
    [*_BOTTOM, *((a + 4, b + 4) for a, b in _BOTTOM), (0, 4), (1, 5), (3, 7), (2, 6)], dtype=np.int64
)

# numpy's machine epsilon of float64, the "tiny number" of scikit-image's vertex interpolation
_EPS = float(np.spacing(1.0))


def classic_case_table() -> np.ndarray:
    """The (256, 16) classic case table: per corner sign pattern, edge triples ended by -1.

    Read from scikit-image's lookup-table module (stored there as base64 int8); raises ImportError
    when the installed scikit-image has none, and :mod:`.pore_surface` then meshes with scikit-image itself.
    """
    from skimage.measure import _marching_cubes_lewiner_luts as luts

    shape, text = luts.CASESCLASSIC
    table = np.frombuffer(base64.decodebytes(text.encode("utf-8")), dtype=np.int8).reshape(shape)
    if table.shape != (256, 16):
        raise ImportError(f"scikit-image's classic marching-cubes table has shape {table.shape}; expected (256, 16)")
    return table.astype(np.int64)


def case_edge_masks(table: np.ndarray) -> np.ndarray:
    """Per case (256,), the bit mask of the edges its triangles use."""
    masks = np.zeros(256, np.int64)
    for index in range(256):
        for edge in table[index]:
            if edge >= 0:
                masks[index] |= 1 << int(edge)
    return masks


@numba.njit(cache=True, nogil=True, parallel=True)
def label_stats(labels, n_labels, n_parts):
    """Voxel count, bounding box and coordinate sums of labels 1..n_labels in one pass.

    Returns ``counts`` (n+1,), ``lo`` and ``hi`` (n+1, 3; inclusive z, y, x bounds; lo > hi for an
    absent label) and ``sums`` (n+1, 3; int64 sums of z, y, x). The z range is split into
    ``n_parts`` slabs read in parallel, each with its own arrays, merged at the end.
    """
    nz, ny, nx = labels.shape
    big = np.int64(1) << 40
    counts_p = np.zeros((n_parts, n_labels + 1), np.int64)
    lo_p = np.full((n_parts, n_labels + 1, 3), big, np.int64)
    hi_p = np.full((n_parts, n_labels + 1, 3), -1, np.int64)
    sums_p = np.zeros((n_parts, n_labels + 1, 3), np.int64)
    for part in numba.prange(n_parts):
        for z in range(part * nz // n_parts, (part + 1) * nz // n_parts):
            for y in range(ny):
                for x in range(nx):
                    label = labels[z, y, x]
                    if label <= 0:
                        continue
                    counts_p[part, label] += 1
                    lo = lo_p[part, label]
                    hi = hi_p[part, label]
                    if z < lo[0]:
                        lo[0] = z
                    hi[0] = z  # z only grows within a part
                    if y < lo[1]:
                        lo[1] = y
                    if y > hi[1]:
                        hi[1] = y
                    if x < lo[2]:
                        lo[2] = x
                    if x > hi[2]:
                        hi[2] = x
                    sums_p[part, label, 0] += z
                    sums_p[part, label, 1] += y
                    sums_p[part, label, 2] += x
    counts = counts_p.sum(axis=0)
    sums = sums_p.sum(axis=0)
    lo = lo_p[0].copy()
    hi = hi_p[0].copy()
    for part in range(1, n_parts):
        for label in range(n_labels + 1):
            for axis in range(3):
                lo[label, axis] = min(lo[label, axis], lo_p[part, label, axis])
                hi[label, axis] = max(hi[label, axis], hi_p[part, label, axis])
    return counts, lo, hi, sums


@numba.njit(cache=True, nogil=True)
def _smooth_axis(field, rows_in, kernel, axis):
    """``correlate1d(field, kernel, axis, mode='constant', cval=0)`` of a float32 3D array.

    ``kernel`` is float64 and of odd length; sums in float64, stores float32 (as scipy does for
    float32 input). Every loop runs along x, the contiguous axis, so that it vectorizes.
    ``rows_in[k, j]`` says whether the row ``field[k, j]`` holds any non-zero value: empty rows
    (most of a pore's crop is far from its surface) are skipped. Returns the result and the same
    flags for it.
    """
    a, b, c = field.shape
    radius = kernel.size // 2
    out = np.zeros_like(field)
    rows_out = np.zeros((a, b), np.bool_)
    acc = np.empty(c, np.float64)
    for k in range(a):
        for j in range(b):
            acc[:] = 0.0
            touched = False
            for t in range(kernel.size):
                shift = t - radius
                w = kernel[t]
                if axis == 2:
                    if not rows_in[k, j]:
                        break
                    src = field[k, j]
                    for i in range(max(0, -shift), min(c, c - shift)):
                        acc[i] += w * src[i + shift]
                    touched = True
                else:
                    kk, jj = (k + shift, j) if axis == 0 else (k, j + shift)
                    if kk < 0 or kk >= a or jj < 0 or jj >= b or not rows_in[kk, jj]:
                        continue
                    src = field[kk, jj]
                    for i in range(c):
                        acc[i] += w * src[i]
                    touched = True
            if touched:
                dst = out[k, j]
                for i in range(c):
                    dst[i] = acc[i]
                rows_out[k, j] = True
    return out, rows_out


def _column_tables() -> tuple[np.ndarray, np.ndarray]:
    """Case-index bits of a cube's left (x) and right (x + 1) column of four corners.

    A column's code holds, from bit 0, whether the corners at (z, y), (z, y + 1), (z + 1, y) and
    (z + 1, y + 1) are above the level; the case table numbers the corners 0 1 2 3 around the
    bottom face ((y, x) = (0, 0) (0, 1) (1, 1) (1, 0)) and 4 5 6 7 around the top one.
    """
    left = np.zeros(16, np.int64)
    right = np.zeros(16, np.int64)
    for code in range(16):
        for bit, (l_bit, r_bit) in enumerate(((0, 1), (3, 2), (4, 5), (7, 6))):
            if code >> bit & 1:
                left[code] |= 1 << l_bit
                right[code] |= 1 << r_bit
    return left, right


LEFT_BITS, RIGHT_BITS = _column_tables()


@numba.njit(cache=True, nogil=True)
def mesh_area_volume(field, level, table, edge_corners, edge_masks):
    """Area and |enclosed volume| of the classic marching-cubes mesh of ``field`` at ``level``.

    Voxel units. The mesh is never stored: every triangle adds half its cross product's norm to
    the area and its cone volume a·(b × c) / 6 (divergence theorem; the triangles are consistently
    oriented) to the volume. A vertex on an edge between corner values ``u`` and ``w`` (level
    subtracted) sits at the weights 1 / (eps + |u|) and 1 / (eps + |w|), as in scikit-image.
    Cubes are classified from 4-bit column codes (:func:`_column_tables`), so that the empty and
    full ones, most of them, cost a table look-up.
    """
    a, b, c = field.shape
    left_bits, right_bits = LEFT_BITS, RIGHT_BITS
    values = np.empty(8, np.float64)
    verts = np.empty((12, 3), np.float64)
    codes = np.empty(c, np.int64)
    area = 0.0
    cone = 0.0
    for k in range(a - 1):
        for j in range(b - 1):
            r00, r01, r10, r11 = field[k, j], field[k, j + 1], field[k + 1, j], field[k + 1, j + 1]
            for i in range(c):
                codes[i] = (
                    (r00[i] > level) | (r01[i] > level) << 1 | (r10[i] > level) << 2 | (r11[i] > level) << 3
                )
            for i in range(c - 1):
                index = left_bits[codes[i]] | right_bits[codes[i + 1]]
                if index == 0 or index == 255:
                    continue
                for corner in range(8):
                    dz, dy, dx = corner >> 2, (corner >> 1) & 1, corner & 1
                    values[corner] = np.float64(field[k + dz, j + dy, i + dx]) - level
                row = table[index]
                used = edge_masks[index]
                for edge in range(12):  # the vertex of each edge this case uses, once
                    if not used >> edge & 1:
                        continue
                    p, q = edge_corners[edge, 0], edge_corners[edge, 1]
                    # scikit-image's weights 1 / (eps + |v|) put the vertex at this fraction from p
                    dp = _EPS + abs(values[p])
                    f = dp / (dp + _EPS + abs(values[q]))
                    verts[edge, 0] = k + (p >> 2) + ((q >> 2) - (p >> 2)) * f
                    verts[edge, 1] = j + ((p >> 1) & 1) + (((q >> 1) & 1) - ((p >> 1) & 1)) * f
                    verts[edge, 2] = i + (p & 1) + ((q & 1) - (p & 1)) * f
                for t in range(0, 15, 3):
                    e0 = row[t]
                    if e0 < 0:
                        break
                    e1, e2 = row[t + 1], row[t + 2]
                    ax, ay, az = verts[e0, 0], verts[e0, 1], verts[e0, 2]
                    ux, uy, uz = verts[e1, 0] - ax, verts[e1, 1] - ay, verts[e1, 2] - az
                    vx, vy, vz = verts[e2, 0] - ax, verts[e2, 1] - ay, verts[e2, 2] - az
                    nx_ = uy * vz - uz * vy
                    ny_ = uz * vx - ux * vz
                    nz_ = ux * vy - uy * vx
                    area += 0.5 * np.sqrt(nx_ * nx_ + ny_ * ny_ + nz_ * nz_)
                    cone += ax * nx_ + ay * ny_ + az * nz_
    return area, abs(cone) / 6.0


@numba.njit(cache=True, nogil=True)
def pore_area_volume(labels, label, origin, shape, kernel, table, edge_corners, edge_masks):
    """Mesh area and volume (voxel units) of one pore, from its crop of ``labels``.

    ``origin`` (z, y, x) and ``shape`` give the crop, which may reach beyond the array (read as
    background). The mask is smoothed by ``kernel`` along each axis (none when it is empty) and
    meshed at 0.5; a one- or two-voxel speck smoothed flat has no 0.5 level left and is meshed
    unsmoothed.
    """
    nz, ny, nx = labels.shape
    field = np.zeros((shape[0], shape[1], shape[2]), np.float32)
    rows = np.zeros((shape[0], shape[1]), np.bool_)
    z0, y0, x0 = origin[0], origin[1], origin[2]
    for z in range(max(z0, 0), min(z0 + shape[0], nz)):
        for y in range(max(y0, 0), min(y0 + shape[1], ny)):
            line = field[z - z0, y - y0]
            for x in range(max(x0, 0), min(x0 + shape[2], nx)):
                if labels[z, y, x] == label:
                    line[x - x0] = 1.0
                    rows[z - z0, y - y0] = True
    if kernel.size > 0:
        smooth, rows = _smooth_axis(field, rows, kernel, 2)
        smooth, rows = _smooth_axis(smooth, rows, kernel, 1)
        smooth, rows = _smooth_axis(smooth, rows, kernel, 0)
        if smooth.max() > 0.5:
            field = smooth
    return mesh_area_volume(field, 0.5, table, edge_corners, edge_masks)


@numba.njit(cache=True, nogil=True, parallel=True)
def pores_area_volume(labels, pore_labels, origins, shapes, kernel, table, edge_corners, edge_masks, order, n_parts):
    """:func:`pore_area_volume` of every pore, spread over threads; returns (n, 2) area, volume.

    ``order`` lists the pores so that ``n_parts`` equal consecutive chunks of it carry similar work
    (the pores' crops are of very different sizes; prange hands each thread one chunk).
    """
    n = pore_labels.size
    out = np.zeros((n, 2), np.float64)
    per_part = (n + n_parts - 1) // n_parts
    for part in numba.prange(n_parts):
        for position in range(part * per_part, min(n, (part + 1) * per_part)):
            p = order[position]
            area, volume = pore_area_volume(
                labels, pore_labels[p], origins[p], shapes[p], kernel, table, edge_corners, edge_masks
            )
            out[p, 0] = area
            out[p, 1] = volume
    return out
