"""Image metrics against the ground truth: MSE, PSNR and 3D SSIM (docs/design.md#evaluation; paper §3.1, Fig. 3).

All functions take two float volumes of the same (nz, ny, nx) shape, in material fraction, and an
optional boolean mask of that shape (the reconstructable FOV, say) that restricts the average.

SSIM follows Wang et al. (2004) with scikit-image's defaults: a uniform ``window_px``³ window,
K1 = 0.01, K2 = 0.03, sample covariance (N / (N - 1)), ``reflect`` boundaries, and the mean taken
over the voxels at least ``(window_px - 1) // 2`` from every face (scikit-image crops that border
too). It agrees with :func:`skimage.metrics.structural_similarity` to ~1e-7 and is several times
faster on volumes (see the notes above :class:`_BoxSum` for why).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from .. import ResrecoverError
from ..parallel import usable_cores

K1 = 0.01
K2 = 0.03
#: voxels per z-slab streamed through the SSIM computation (a few planes; tuned on 128³-256³)
_SLAB_VOXELS = 1 << 18
# z-parts of the uniform-window SSIM computed at once on threads (memory-bound: more rarely helps)
_MAX_SSIM_THREADS = 4
#: Gaussian window of scikit-image's ``gaussian_weights=True``: σ 1.5 px truncated at 3.5 σ (11 taps).
GAUSSIAN_SIGMA_PX = 1.5
GAUSSIAN_TRUNCATE = 3.5


class MetricError(ResrecoverError):
    """Inputs a metric cannot be computed on (shapes differ, window too large, empty mask...)."""


def _as_pair(a, b, mask=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.shape != b.shape:
        raise MetricError(f"volume shape {a.shape} differs from reference shape {b.shape}; expected equal shapes")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != a.shape:
            raise MetricError(f"mask shape {mask.shape} differs from volume shape {a.shape}; expected equal shapes")
        if not mask.any():
            raise MetricError("mask selects no voxel; expected a non-empty mask")
    return a, b, mask


def _check_data_range(data_range: float) -> float:
    data_range = float(data_range)
    if not data_range > 0:
        raise MetricError(f"data_range = {data_range}; expected a positive intensity range")
    return data_range


def _z_chunks(shape: tuple[int, ...], target_voxels: int = 1 << 21) -> Iterator[slice]:
    """Slabs of whole z-planes of about ``target_voxels`` voxels (bounded memory, cache friendly)."""
    plane = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    step = max(1, target_voxels // max(plane, 1))
    for z0 in range(0, shape[0], step):
        yield slice(z0, min(z0 + step, shape[0]))


def mse(a, b, mask=None) -> float:
    """Mean squared error between two volumes, accumulated in float64.

    Parameters
    ----------
    a, b : (nz, ny, nx) arrays (material fraction).
    mask : optional (nz, ny, nx) bool; only voxels where it is True count.

    Returns
    -------
    float : mean of (a - b)² (material fraction squared).
    """
    a, b, mask = _as_pair(a, b, mask)
    if a.ndim == 0 or a.size == 0:
        raise MetricError("empty volumes; expected at least one voxel")
    if a.ndim < 2:
        a, b = a.reshape(1, -1), b.reshape(1, -1)
        mask = None if mask is None else mask.reshape(1, -1)
    total, count = 0.0, 0
    # float64 differences of the float32 values, one slab at a time (a 512³ float64 copy is 1 GB)
    for zs in _z_chunks(a.shape):
        diff = np.subtract(a[zs], b[zs], dtype=np.float64)
        diff = diff[mask[zs]] if mask is not None else diff.ravel()
        total += float(np.dot(diff, diff))
        count += diff.size
    return total / count


def psnr(a, b, data_range: float, mask=None) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range² / MSE)`` (inf for identical volumes)."""
    data_range = _check_data_range(data_range)
    err = mse(a, b, mask)
    if err == 0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / err)


# --------------------------------------------------------------------------------------------------
# SSIM
#
# Why scikit-image is slow on volumes: it filters five full images (x, y, x², y², xy) with
# ``ndimage.uniform_filter`` (the pass along z strides through memory), and the SSIM formula then
# allocates about fifteen more full-size temporaries (fresh pages cost as much as the arithmetic).
# Here:
# 1. Four filtered images suffice: with s = x + y and d = x - y, the local means and variances of s
#    and d give everything SSIM needs (2 σxy = (var s - var d) / 2, σx² + σy² = (var s + var d) / 2,
#    and likewise for the means).
# 2. The box sums are separable, each axis by doubling additions (4 additions for a 7-voxel window)
#    on reflect-padded slabs of a few z-planes, run on flat contiguous buffers. Everything streams
#    through a slab at a time, so every temporary is small, preallocated and stays in cache; nothing
#    volume-sized is allocated but the optional map.
# 3. Values are centred on the volumes' mean before squaring, which keeps the float32 sums precise
#    (map error ~1e-4 at worst, mean error ~1e-7 against scikit-image in float64).
# --------------------------------------------------------------------------------------------------


def _slice_axis(ndim: int, axis: int, start: int, length: int) -> tuple[slice, ...]:
    key = [slice(None)] * ndim
    key[axis] = slice(start, start + length)
    return tuple(key)


class _BoxSum:
    """Sum over a window of ``w`` samples along one axis of a padded block, by doubling additions.

    With partial sums S1 = x, S2[i] = S1[i] + S1[i+1], S4[i] = S2[i] + S2[i+2], ..., a window of
    w = 2^a + 2^b + ... is S_{2^a}[i] + S_{2^b}[i + 2^a] + ...: log2(w) + popcount(w) - 1 array
    additions (4 for w = 7) instead of w - 1, all into preallocated buffers. The additions run on
    the flattened block (a shift along ``axis`` is a flat shift by its stride), so numpy sees long
    contiguous loops even along x; sums that straddle two rows are computed but never read.
    """

    def __init__(self, padded_shape: tuple[int, ...], w: int, axis: int):
        self.w, self.axis = w, axis
        self.n = padded_shape[axis] - (w - 1)
        self.stride = int(np.prod(padded_shape[axis + 1 :], dtype=np.int64))
        size = int(np.prod(padded_shape, dtype=np.int64)) + w * self.stride  # tail slack for shifted views
        self.levels = []
        step = 1
        while step * 2 <= w:
            self.levels.append(np.empty(size, np.float32))
            step *= 2
        self.partial = np.empty(size, np.float32)

    def __call__(self, padded: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Window sums of the contiguous ``padded`` block into ``out`` (axis length ``n``)."""
        flat = padded.reshape(-1)
        m, stride = flat.size, self.stride
        sums = [flat]
        step = 1
        for level in self.levels:
            prev = sums[-1]
            length = m - (2 * step - 1) * stride
            np.add(prev[:length], prev[step * stride : step * stride + length], out=level[:length])
            sums.append(level)
            step *= 2
        # highest power first, at offset 0; each further bit is read further along
        terms, offset = [], 0
        for bit in range(len(sums) - 1, -1, -1):
            if self.w & (1 << bit):
                terms.append((sums[bit], offset * stride))
                offset += 1 << bit
        length = m - (self.w - 1) * stride
        (first, o1), (second, o2) = terms[0], terms[1]
        acc = self.partial
        if len(terms) == 2:
            acc, o_acc = first, o1
            last, o_last = second, o2
        else:
            np.add(first[o1 : o1 + length], second[o2 : o2 + length], out=acc[:length])
            for term, o in terms[2:-1]:
                np.add(acc[:length], term[o : o + length], out=acc[:length])
            o_acc = 0
            last, o_last = terms[-1]
        # the last addition writes the valid window sums straight into ``out`` (a strided view is fine)
        keep = tuple(slice(0, self.n) if ax == self.axis else slice(None) for ax in range(padded.ndim))
        acc_view = acc[o_acc : o_acc + m].reshape(padded.shape)[keep]
        if last is flat:  # S1 has no slack after it: take the shifted window from the block itself
            start = o_last // stride
            last_view = padded[_slice_axis(padded.ndim, self.axis, start, self.n)]
        else:
            last_view = last[o_last : o_last + m].reshape(padded.shape)[keep]
        np.add(acc_view, last_view, out=out)
        return out


def _reflect_pad_rows(buf: np.ndarray, r: int, n: int, axis: int) -> None:
    """Fill the ``r`` margins of ``buf`` along ``axis`` as ndimage's 'reflect' (d c b a | a b c d)."""
    if r == 0:
        return
    nd = buf.ndim
    lead = buf[_slice_axis(nd, axis, r, r)]
    buf[_slice_axis(nd, axis, 0, r)] = np.flip(lead, axis=axis)
    tail = buf[_slice_axis(nd, axis, n, r)]
    buf[_slice_axis(nd, axis, n + r, r)] = np.flip(tail, axis=axis)


def _ssim_from_sums(zs, zd, zss, zdd, n_window: float, offset: float, c1: float, c2: float, cov_norm: float, out):
    """SSIM from window sums of s = x + y - 2·offset and d = x - y (``n_window`` = sum of weights).

    Scale-free form (numerator and denominator multiplied by 4 N²), in place over the sum buffers:
    luminance (P - Q + 2 C1 N²) / (P + Q + 2 C1 N²) with P = (Σs + 2·offset·N)², Q = (Σd)², and
    contrast-structure (Vs - Vd + 2 C2 N² / k) / (Vs + Vd + 2 C2 N² / k) with V = N Σq² - (Σq)²,
    k = cov_norm (the sample-covariance factor cancels into C2).
    """
    n2 = n_window * n_window
    k1n = 2.0 * c1 * n2
    k2n = 2.0 * c2 * n2 / cov_norm
    # contrast-structure
    q = np.multiply(zd, zd, out=zd)  # zd is not needed any more: Q = (Σd)²
    np.multiply(zss, n_window, out=zss)
    sq = np.multiply(zs, zs, out=out)
    np.subtract(zss, sq, out=zss)  # Vs
    np.multiply(zdd, n_window, out=zdd)
    np.subtract(zdd, q, out=zdd)  # Vd
    np.add(zss, k2n, out=zss)
    cs_num = np.subtract(zss, zdd, out=out)  # Vs + K - Vd
    np.add(zss, zdd, out=zdd)  # den2 = Vs + Vd + K
    # luminance
    np.add(zs, 2.0 * offset * n_window, out=zs)
    np.multiply(zs, zs, out=zs)  # P
    np.add(zs, k1n, out=zs)
    np.subtract(zs, q, out=zss)  # num1
    np.add(zs, q, out=zs)  # den1
    np.multiply(cs_num, zss, out=out)
    np.multiply(zdd, zs, out=zdd)
    np.divide(out, zdd, out=out)
    return out


def _centre(a: np.ndarray, b: np.ndarray) -> float:
    """A value near the data (mean of a coarse subsample) that the squares are centred on."""
    step = max(1, round((a.size / 1e5) ** (1 / max(a.ndim, 1))))
    sub = (slice(None, None, step),) * a.ndim
    return 0.5 * (float(np.mean(a[sub], dtype=np.float64)) + float(np.mean(b[sub], dtype=np.float64)))


def _uniform_ssim_chunks(
    a: np.ndarray, b: np.ndarray, data_range: float, w: int, sample_covariance: bool, offset: float
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(z0, ssim[z0:z0+len])`` for consecutive slabs of the SSIM map with a uniform window.

    ``offset`` is the value the squares are centred on (:func:`_centre` of the whole pair, so that
    every z-part of a threaded run uses the same one).
    """
    nz, ny, nx = a.shape
    r = w // 2
    n_window = float(w**3)
    cov_norm = n_window / (n_window - 1) if sample_covariance else 1.0
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2

    # a few planes per slab: enough to amortize numpy call overheads and the 2r-plane z halo, few
    # enough to stay in cache
    t = int(min(nz, max(2 * r + 2, _SLAB_VOXELS // (ny * nx))))
    py = {name: np.empty((t, ny + 2 * r, nx), np.float32) for name in ("s", "d", "q")}
    px = np.empty((t, ny, nx + 2 * r), np.float32)
    box_y = _BoxSum(py["s"].shape, w, axis=1)
    box_x = _BoxSum(px.shape, w, axis=2)
    # xy window sums of s, d, s², d² for planes k0 - r ... k0 + t + r - 1 (z-padded slab)
    zpad = np.zeros((4, t + 2 * r, ny, nx), np.float32)
    box_z = _BoxSum(zpad.shape, w, axis=1)
    zsum = np.empty((4, t, ny, nx), np.float32)
    out = np.empty((t, ny, nx), np.float32)

    def xy_box(src: np.ndarray, dst: np.ndarray) -> None:
        # ``src`` already holds its reflected margins along y
        cnt = src.shape[0]
        box_y(src, px[:cnt, :, r : r + nx])
        _reflect_pad_rows(px[:cnt], r, nx, axis=2)
        box_x(px[:cnt], dst)

    def fill(j0: int, j1: int, slot0: int) -> None:
        """xy window sums of the real planes j0..j1-1 into zpad[:, slot0:]."""
        for c0 in range(j0, j1, t):
            c1_ = min(c0 + t, j1)
            cnt = c1_ - c0
            dst = slice(slot0 + c0 - j0, slot0 + c1_ - j0)
            s_in = py["s"][:cnt, r : r + ny]
            d_in = py["d"][:cnt, r : r + ny]
            np.add(a[c0:c1_], b[c0:c1_], out=s_in)
            np.subtract(s_in, 2.0 * offset, out=s_in)
            np.subtract(a[c0:c1_], b[c0:c1_], out=d_in)
            _reflect_pad_rows(py["s"][:cnt], r, ny, axis=1)
            _reflect_pad_rows(py["d"][:cnt], r, ny, axis=1)
            np.multiply(py["s"][:cnt], py["s"][:cnt], out=py["q"][:cnt])
            xy_box(py["q"][:cnt], zpad[2, dst])
            np.multiply(py["d"][:cnt], py["d"][:cnt], out=py["q"][:cnt])
            xy_box(py["q"][:cnt], zpad[3, dst])
            xy_box(py["s"][:cnt], zpad[0, dst])
            xy_box(py["d"][:cnt], zpad[1, dst])

    for k0 in range(0, nz, t):
        lo = k0 - r  # the plane held in zpad slot 0
        if k0 == 0:
            fill(0, min(nz, t + r), r)
        else:
            zpad[:, : 2 * r] = zpad[:, t : t + 2 * r]  # planes k0 - r .. k0 + r - 1 are kept
            j0, j1 = k0 + r, min(nz, k0 + t + r)
            if j1 > j0:
                fill(j0, j1, 2 * r)
        # z reflection ('reflect': plane -1 is plane 0, plane nz is plane nz - 1), from planes in the slab
        for j in range(max(lo, -r), min(lo + t + 2 * r, nz + r)):
            if j < 0:
                zpad[:, j - lo] = zpad[:, -j - 1 - lo]
            elif j >= nz:
                zpad[:, j - lo] = zpad[:, 2 * nz - 1 - j - lo]
        box_z(zpad, zsum)
        cnt = min(t, nz - k0)
        yield k0, _ssim_from_sums(
            zsum[0, :cnt],
            zsum[1, :cnt],
            zsum[2, :cnt],
            zsum[3, :cnt],
            n_window,
            offset,
            c1,
            c2,
            cov_norm,
            out[:cnt],
        )


def _gaussian_ssim_chunks(
    a: np.ndarray,
    b: np.ndarray,
    data_range: float,
    sigma_px: float,
    truncate: float,
    sample_covariance: bool,
    mode: str = "reflect",
    n_for_cov: float | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """SSIM map with a Gaussian window (whole-volume ndimage filters, float64 formula; one chunk)."""
    offset = _centre(a, b)
    s = a + b
    s -= 2.0 * offset
    d = a - b
    gauss = dict(sigma=sigma_px, truncate=truncate, mode=mode, output=np.float32)
    zss = ndi.gaussian_filter(s * s, **gauss).astype(np.float64)
    zdd = ndi.gaussian_filter(d * d, **gauss).astype(np.float64)
    zs = ndi.gaussian_filter(s, **gauss).astype(np.float64)
    zd = ndi.gaussian_filter(d, **gauss).astype(np.float64)
    del s, d
    cov_norm = n_for_cov / (n_for_cov - 1) if (sample_covariance and n_for_cov) else 1.0
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    out = np.empty(a.shape, np.float64)
    yield 0, _ssim_from_sums(zs, zd, zss, zdd, 1.0, offset, c1, c2, cov_norm, out)


def _window_side(window_px, gaussian: bool) -> int:
    if gaussian:
        return 2 * int(GAUSSIAN_TRUNCATE * GAUSSIAN_SIGMA_PX + 0.5) + 1
    win = int(window_px)
    if win < 3 or win % 2 == 0:
        raise MetricError(f"window_px = {window_px}; expected an odd window of at least 3 voxels")
    return win


def _default_workers() -> int:
    return usable_cores(_MAX_SSIM_THREADS)


def _for_each_ssim_chunk(a, b, data_range, window_px, gaussian, sample_covariance, consume, workers=None):
    """Call ``consume(z0, ssim_slab)`` for every z-slab of the SSIM map; return the list of
    ``consume``'s return values.

    The uniform window's map is computed in up to ``workers`` z-parts on threads (numpy's ufuncs
    release the GIL, and scikit-image's filters run on one core): each part reads ``r`` planes of
    halo beyond its ends and keeps only its own planes, so the map is the same as in one pass
    (every part centres on the same offset). ``consume`` must be safe to call from several threads
    for disjoint slabs; the values are returned in z order, so sums over them are deterministic.
    """
    if a.ndim != 3:
        raise MetricError(f"SSIM needs 3D volumes; got shape {a.shape}")
    win = _window_side(window_px, gaussian)
    if min(a.shape) < win:
        raise MetricError(
            f"volume shape {a.shape} is smaller than the {win}-voxel SSIM window; expected every side ≥ {win}"
        )
    if gaussian:
        chunks = _gaussian_ssim_chunks(
            a, b, data_range, GAUSSIAN_SIGMA_PX, GAUSSIAN_TRUNCATE, sample_covariance, n_for_cov=float(win**3)
        )
        return [consume(z0, ssim) for z0, ssim in chunks]

    nz, r = a.shape[0], win // 2
    offset = _centre(a, b)
    workers = _default_workers() if workers is None else max(1, int(workers))
    # parts much thinner than the halo would mostly recompute it
    n_parts = max(1, min(workers, nz // max(8 * win, 1)))
    bounds = [round(i * nz / n_parts) for i in range(n_parts + 1)]

    def run_part(part: int) -> list:
        lo, hi = bounds[part], bounds[part + 1]
        start, stop = max(lo - r, 0), min(hi + r, nz)
        results = []
        for k0, ssim in _uniform_ssim_chunks(a[start:stop], b[start:stop], data_range, win, sample_covariance, offset):
            z0 = start + k0
            keep_lo, keep_hi = max(z0, lo), min(z0 + ssim.shape[0], hi)
            if keep_hi > keep_lo:
                results.append(consume(keep_lo, ssim[keep_lo - z0 : keep_hi - z0]))
        return results

    if n_parts == 1:
        return run_part(0)
    with ThreadPoolExecutor(max_workers=n_parts) as pool:
        parts = list(pool.map(run_part, range(n_parts)))
    return [value for part in parts for value in part]


def ssim_map_3d(
    a, b, data_range: float, window_px: int = 7, gaussian: bool = False, sample_covariance: bool = True
) -> np.ndarray:
    """Local 3D SSIM of ``a`` against ``b`` at every voxel.

    Parameters
    ----------
    a, b : (nz, ny, nx) volumes; every side at least the window.
    data_range : intensity range L of C1 = (K1 L)², C2 = (K2 L)² (1.0 for material fraction).
    window_px : side of the uniform cubic window (odd), ignored when ``gaussian``.
    gaussian : Gaussian window σ 1.5 px truncated at 3.5 σ (11 taps) instead of the uniform one,
        as scikit-image's ``gaussian_weights=True``.
    sample_covariance : normalize (co)variances by N - 1 (scikit-image's default) instead of N.

    Returns
    -------
    (nz, ny, nx) float32 map, 1 where the volumes agree.
    """
    data_range = _check_data_range(data_range)
    a, b, _ = _as_pair(a, b)
    result = np.empty(a.shape, np.float32)

    def store(z0: int, ssim: np.ndarray) -> None:
        result[z0 : z0 + ssim.shape[0]] = ssim

    _for_each_ssim_chunk(a, b, data_range, window_px, gaussian, sample_covariance, store)
    return result


def ssim_3d(
    a,
    b,
    data_range: float,
    window_px: int = 7,
    mask=None,
    gaussian: bool = False,
    sample_covariance: bool = True,
) -> float:
    """Mean 3D SSIM of ``a`` against ``b`` (Wang et al. 2004; scikit-image's conventions).

    The SSIM map (see :func:`ssim_map_3d`) is averaged over the voxels at least
    ``(window - 1) // 2`` from every face, as scikit-image does, and inside ``mask`` when given.
    Without a mask the result equals ``skimage.metrics.structural_similarity(a, b,
    data_range=data_range, win_size=window_px)`` (or ``gaussian_weights=True``) to ~1e-6; the map
    is never held in memory, so a 512³ pair needs only a few MB beyond the inputs.

    Parameters
    ----------
    a, b : (nz, ny, nx) volumes (material fraction); ``b`` is the reference.
    data_range : intensity range L (1.0 for material fraction).
    window_px : odd side of the uniform window, in voxels (config ``evaluation.ssim_window_px``).
    mask : optional (nz, ny, nx) bool restricting the average (e.g. the reconstructable FOV).
    gaussian, sample_covariance : see :func:`ssim_map_3d`.

    Returns
    -------
    float : mean SSIM (1 for identical volumes).
    """
    data_range = _check_data_range(data_range)
    a, b, mask = _as_pair(a, b, mask)
    pad = (_window_side(window_px, gaussian) - 1) // 2
    nz, ny, nx = a.shape
    inner = (slice(pad, ny - pad), slice(pad, nx - pad))

    def partial_sum(z0: int, ssim: np.ndarray) -> tuple[float, int]:
        lo, hi = max(z0, pad), min(z0 + ssim.shape[0], nz - pad)
        if hi <= lo:
            return 0.0, 0
        block = ssim[lo - z0 : hi - z0][(slice(None), *inner)]
        if mask is None:
            return float(block.sum(dtype=np.float64)), block.size
        sel = mask[lo:hi][(slice(None), *inner)]
        return float(block[sel].sum(dtype=np.float64)), int(sel.sum())

    partials = _for_each_ssim_chunk(a, b, data_range, window_px, gaussian, sample_covariance, partial_sum)
    total = math.fsum(value for value, _ in partials)
    count = sum(n for _, n in partials)
    if count == 0:
        raise MetricError(f"mask has no voxel farther than {pad} voxels from the volume faces; expected some")
    return total / count


def image_metrics(volume, reference, data_range: float, window_px: int = 7, mask=None) -> dict[str, float]:
    """MSE, PSNR (dB) and mean 3D SSIM of ``volume`` against ``reference`` inside ``mask``.

    Returns ``{"mse": ..., "psnr": ..., "ssim": ...}`` (the image_metrics.csv columns of docs/results.md#tables).
    """
    data_range = _check_data_range(data_range)
    err = mse(volume, reference, mask)
    return {
        "mse": err,
        "psnr": math.inf if err == 0 else 10.0 * math.log10(data_range**2 / err),
        "ssim": ssim_3d(volume, reference, data_range, window_px=window_px, mask=mask),
    }


#: the columns a results table is sorted by, in this order, where present (docs/results.md#tables)
TABLE_SORT_KEYS = ("method", "realization", "sigma_um", "blur_sigma_um", "frequency")


def collect_tables(paths: list) -> pd.DataFrame:
    """Concatenate per-volume CSV tables that share their columns, sorted by :data:`TABLE_SORT_KEYS`.

    Raises :class:`MetricError` naming the file for a missing or empty CSV or for columns that
    differ from the first file's.
    """
    frames, columns = [], None
    for path in paths:
        try:
            frame = pd.read_csv(path)
        except FileNotFoundError as exc:
            raise MetricError(f"{path}: per-volume table not found") from exc
        except pd.errors.EmptyDataError as exc:
            raise MetricError(f"{path}: per-volume table is empty; expected a header and rows") from exc
        if columns is None:
            columns = list(frame.columns)
        elif set(frame.columns) != set(columns):
            raise MetricError(f"{path}: columns {list(frame.columns)} differ from {columns} of {paths[0]}")
        frames.append(frame[columns])
    if not frames:
        raise MetricError("no per-volume tables to collect; expected at least one CSV")
    table = pd.concat(frames, ignore_index=True)
    keys = [key for key in TABLE_SORT_KEYS if key in table.columns]
    return table.sort_values(keys, kind="mergesort").reset_index(drop=True)
