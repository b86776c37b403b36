"""3D multiscale-SSIM quality maps (docs/design.md#evaluation; paper §2.5.2 and Fig. 8), after MATLAB ``multissim3``.

At each of ``scales`` dyadic scales the local SSIM statistics are taken with an isotropic Gaussian
window (σ 1.5 px, 11 taps, normalized) and replicate padding (``ndimage`` mode ``'nearest'``),
with population (co)variances, K1 = 0.01 and K2 = 0.03, as MATLAB's ``ssim``/``multissim3``:

- finer scales contribute their contrast-structure map cs = (2 σxy + C2) / (σx² + σy² + C2);
- the coarsest scale contributes luminance × contrast-structure.

Between scales both volumes are low-passed and decimated by averaging 2×2×2 blocks (odd sides are
first padded by replicating the last plane, so a side n becomes ceil(n / 2)); this is the original
MS-SSIM recipe of Wang et al. (2003) in 3D, which MATLAB's ``imresize``-based downsampling
approximates.

Outputs. The score is the product over scales of (mean map value)^weight. The quality map is the
weighted product of the per-scale maps brought back to full resolution: from the coarsest scale
down, the running product is upsampled ×2 by linear interpolation between block centres and
multiplied by the next finer map^weight. Negative map values (anti-correlated structure) are
clipped to 0 before the fractional powers, as TensorFlow's ``ssim_multiscale`` does, so the map
stays in [0, 1].
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .. import ResrecoverError
from .metrics import K1, K2, _as_pair, _centre, _check_data_range

log = logging.getLogger(__name__)

#: scale weights of the paper's MS-SSIM (docs/design.md#evaluation), finest first
PAPER_WEIGHTS = (0.0545, 0.2442, 0.4026, 0.2442, 0.0545)


class MSSSIMError(ResrecoverError):
    """MS-SSIM cannot be computed with these inputs or settings."""


def downsample2(volume: np.ndarray) -> np.ndarray:
    """Average 2×2×2 blocks (a box low-pass + decimation); odd sides padded by replication.

    (nz, ny, nx) -> (ceil(nz/2), ceil(ny/2), ceil(nx/2)), float32.
    """
    pad = [(0, n % 2) for n in volume.shape]
    if any(p for _, p in pad):
        volume = np.pad(volume, pad, mode="edge")
    v = volume.astype(np.float32, copy=False)
    out = v[0::2] + v[1::2]
    out = out[:, 0::2] + out[:, 1::2]
    out = out[:, :, 0::2] + out[:, :, 1::2]
    out *= 0.125
    return out


def upsample2(volume: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of :func:`downsample2`'s geometry: linear interpolation ×2 between block centres.

    A fine voxel 2i (2i+1) lies a quarter of a coarse voxel before (after) coarse voxel i, so it
    gets 0.75·c[i] + 0.25·c[i∓1]; edges replicate. The result is cropped to ``shape``.
    """
    out = np.asarray(volume, dtype=np.float32)
    for axis, n in enumerate(shape):
        m = out.shape[axis]
        prev = np.take(out, np.r_[0, np.arange(m - 1)], axis=axis)
        nxt = np.take(out, np.r_[np.arange(1, m), m - 1], axis=axis)
        even = 0.75 * out + 0.25 * prev
        odd = 0.75 * out + 0.25 * nxt
        stacked = np.stack([even, odd], axis=axis + 1)
        new_shape = list(out.shape)
        new_shape[axis] = 2 * m
        out = stacked.reshape(new_shape)
        out = np.take(out, np.arange(n), axis=axis) if n != 2 * m else out
    return np.ascontiguousarray(out, dtype=np.float32)


def _ssim_components(
    a: np.ndarray, b: np.ndarray, data_range: float, sigma: float, radius: int
) -> tuple[np.ndarray, np.ndarray]:
    """Luminance and contrast-structure maps (float32) with a Gaussian window, replicate padding.

    Uses s = a + b and d = a - b (four filtered volumes instead of five):
    l = (P - Q + 2 C1) / (P + Q + 2 C1) with P = E[s]², Q = E[d]²;
    cs = (Vs - Vd + 2 C2) / (Vs + Vd + 2 C2) with V = E[q²] - E[q]² (population variances).
    """
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    offset = _centre(a, b)  # centring keeps the float32 variances precise
    gauss = dict(sigma=sigma, radius=radius, mode="nearest", output=np.float32)
    s = np.add(a, b, dtype=np.float32)
    s -= np.float32(2.0 * offset)
    d = np.subtract(a, b, dtype=np.float32)
    vs = ndi.gaussian_filter(s * s, **gauss)
    vd = ndi.gaussian_filter(d * d, **gauss)
    mean_s = ndi.gaussian_filter(s, **gauss)
    mean_d = ndi.gaussian_filter(d, **gauss)
    del s, d
    # in place, so that a 512³ pair needs about ten volume-sized float32 buffers at most
    vs -= mean_s * mean_s
    mean_d *= mean_d  # Q
    vd -= mean_d
    cs = np.subtract(vs, vd)
    cs += np.float32(2 * c2)
    vs += vd
    vs += np.float32(2 * c2)
    cs /= vs
    del vs, vd
    mean_s += np.float32(2.0 * offset)
    mean_s *= mean_s  # P
    mean_s += np.float32(2 * c1)
    lum = np.subtract(mean_s, mean_d)
    mean_s += mean_d
    lum /= mean_s
    return lum, cs


def max_scales(shape: tuple[int, ...], taps: int = 11) -> int:
    """Largest number of scales whose coarsest level keeps every side ≥ (taps + 1) / 2 voxels.

    Below that the Gaussian window no longer has a core inside the volume and the statistics are
    mostly padding.
    """
    min_side = (taps + 1) // 2
    n, dims = 0, list(shape)
    while min(dims) >= min_side:
        n += 1
        dims = [-(-d // 2) for d in dims]
    return n


def msssim_map_3d(
    a,
    b,
    data_range: float,
    scales: int = 5,
    sigma: float = 1.5,
    taps: int = 11,
    weights: tuple[float, ...] = PAPER_WEIGHTS,
    mask=None,
) -> tuple[np.ndarray, float]:
    """3D MS-SSIM quality map and score of ``a`` against the reference ``b``.

    Parameters
    ----------
    a, b : (nz, ny, nx) volumes (material fraction); ``b`` is the reference (ground truth).
    data_range : intensity range L of C1 = (0.01 L)², C2 = (0.03 L)² (1.0 for material fraction).
    scales : number of dyadic scales (MATLAB 'NumScales'). If the volume is too small for them
        (see :func:`max_scales`), fewer are used, with a logged warning, and the weights of the
        scales kept are rescaled to the original total.
    sigma, taps : Gaussian window σ (px, at every scale) and its length (odd).
    weights : exponent of each scale, finest first (MATLAB 'ScaleWeights'); length ``scales``.
    mask : optional (nz, ny, nx) bool; the per-scale means of the score are taken inside it (the
        mask is downsampled with the volumes and kept where more than half a block is inside).
        The map covers the whole volume either way.

    Returns
    -------
    map : (nz, ny, nx) float32 in [0, 1], 1 where the volumes agree at every scale.
    score : float, product over scales of (mean value)^weight.
    """
    data_range = _check_data_range(data_range)
    a, b, mask = _as_pair(a, b, mask)
    if a.ndim != 3:
        raise MSSSIMError(f"MS-SSIM needs 3D volumes; got shape {a.shape}")
    if taps < 3 or taps % 2 == 0:
        raise MSSSIMError(f"taps = {taps}; expected an odd window length ≥ 3")
    if not sigma > 0:
        raise MSSSIMError(f"sigma = {sigma}; expected a positive Gaussian σ in voxels")
    weights = tuple(float(w) for w in weights)
    if len(weights) != scales:
        raise MSSSIMError(f"{len(weights)} weights for {scales} scales; expected one weight per scale")
    possible = max_scales(a.shape, taps)
    if possible < 1:
        raise MSSSIMError(
            f"volume shape {a.shape} is too small for a {taps}-tap window; expected every side ≥ {(taps + 1) // 2}"
        )
    if possible < scales:
        kept = weights[:possible]
        kept = tuple(w * sum(weights) / sum(kept) for w in kept)
        log.warning(
            "MS-SSIM: volume shape %s allows %d of the %d scales; using weights %s",
            a.shape,
            possible,
            scales,
            [round(w, 4) for w in kept],
        )
        scales, weights = possible, kept

    radius = taps // 2
    maps, means, shapes = [], [], []
    level_mask = mask
    for i in range(scales):
        lum, cs = _ssim_components(a, b, data_range, sigma, radius)
        local = cs if i < scales - 1 else lum * cs
        del lum, cs
        inside = local if level_mask is None else local[level_mask]
        if inside.size == 0:
            raise MSSSIMError(f"mask has no voxel at scale {i} (shape {local.shape}); expected a larger mask")
        means.append(float(np.mean(inside, dtype=np.float64)))
        maps.append(local)
        shapes.append(a.shape)
        if i < scales - 1:
            a, b = downsample2(a), downsample2(b)
            if level_mask is not None:
                level_mask = downsample2(level_mask.astype(np.float32)) > 0.5

    score = float(np.prod([max(m, 0.0) ** w for m, w in zip(means, weights)]))
    combined = None
    for i in range(scales - 1, -1, -1):
        factor = np.power(np.clip(maps[i], 0.0, None), np.float32(weights[i]), dtype=np.float32)
        combined = factor if combined is None else upsample2(combined, shapes[i]) * factor
        maps[i] = None
    log.info("MS-SSIM over %d scales: per-scale means %s, score %.5f", scales, [round(m, 5) for m in means], score)
    return combined.astype(np.float32, copy=False), score


def write_msssim_map(
    volume_path: str | Path,
    ground_truth_path: str | Path,
    output_path: str | Path,
    data_range: float,
    mask=None,
    **attrs,
) -> float:
    """Read a volume and its ground truth, write their MS-SSIM map (dataset ``volume``) and score.

    The HDF5 output holds the (nz, ny, nx) float32 map, ``voxel_size_um`` of the volume, attribute
    ``msssim`` (the score, averaged inside ``mask`` when given) and ``attrs`` (provenance).
    Returns the score.
    """
    from ..io import read_volume, write_volume

    volume, vattrs = read_volume(volume_path)
    reference, rattrs = read_volume(ground_truth_path)
    if volume.shape != reference.shape:
        raise MSSSIMError(
            f"{volume_path}: shape {volume.shape} differs from the ground truth {ground_truth_path} shape {reference.shape}"
        )
    voxel = float(vattrs.get("voxel_size_um", rattrs.get("voxel_size_um", 1.0)))
    quality, score = msssim_map_3d(volume, reference, data_range, mask=mask)
    write_volume(output_path, quality, voxel, msssim=score, data_range=float(data_range), **attrs)
    return score
