"""Trust maps of a recovered volume that need no ground truth: data consistency and model disagreement.

Two maps say where a recovered volume should not be believed:

**Data-consistency residual** (:func:`residual_map`). The recovered volume R estimates the object
as the high-resolution (HRES) scan would show it, i.e. blurred by the target's σ_t (1 µm for the
networks; 0 for Richardson-Lucy, which deconvolves the whole blur). Blurring it further by the
known degradation, a 3D Gaussian of σ_d = sqrt(σ² − σ_t²), predicts the low-resolution (LRES)
input L the method saw. The residual r = L − G_σd ∗ R is then noise wherever R explains the
measurement, and structure where R holds something the measurement cannot have produced (a
hallucinated pore, a lost wall). The map is the locally averaged squared residual in units of the
input's local noise variance::

    residual(x) = [G_w ∗ (r² · m)](x) / [G_w ∗ m](x) / (κ s(x))²

with m the mask of valid voxels (the reconstructable FOV), G_w a Gaussian window of σ_w
(``window_um``; default σ_d, the scale at which a misfit appears in r), s(x) the local noise
level of L (:func:`noise_level_map`) and κ the noise-correlation factor (see below). **Units:
noise variances (dimensionless); 1 = consistent with the measurement's noise**, 4 = a residual
twice the noise's standard deviation over the window. NaN outside the mask.

**Local noise level** (:func:`noise_level_map`): the noise of the input is measured from the input
itself, as the robust spread of its finest 3D Haar wavelet band (the mixed difference over each
2×2×2 cube, HHH), whose coefficients have the noise's standard deviation for white noise and
almost no signal, since L is blurred (Donoho & Johnstone 1994: σ = MAD / 0.6745). The spread is
taken in blocks of ``block_um`` and interpolated linearly between block centres, so s(x) follows
the slow variation of CT noise (higher where fewer photons pass). Reconstructed CT noise is not
white: neighbouring voxels correlate (lag-1 correlation ≈ 0.3 along each axis in the quick
preset's FDK), so the finest band holds less than the full noise variance. κ = (full-band noise
std) / (finest-band noise std) corrects this; it is a property of the scanner and reconstruction,
not of the sample: :func:`noise_correlation_factor` measures it on a region known to hold only
noise (the config default, 1.45, is the quick preset's FDK, measured as the input minus its
re-degraded ground truth at 3–9 µm).

**Disagreement** (:func:`disagreement_map`): K networks trained alike but from other seeds (other
initial weights, other random training tiles, for SRCNN another validation split) agree where the
data pin the answer down and differ where they extrapolate. The map is the voxel-wise sample
standard deviation (ddof = 1) of the K recovered volumes, **in material fraction** (the
material-void contrast is 1); exactly 0 where all members agree. Their mean is the ensemble's
recovery (:func:`ensemble_from_files`).

**Test-time-augmentation variance** (:mod:`.tta`): the variance of a network's output over in-plane
flips of its input, in material fraction²; no training, one network pass per transform.

Maps are written by :func:`write_trust_maps` as HDF5 datasets ``residual``, ``disagreement``,
``noise_std`` and ``tta_variance`` (float32, z-y-x, NaN outside the mask) with attribute
``voxel_size_um``. For Richardson-Lucy, which has no ensemble and no network, ``disagreement`` and
``tta_variance`` are present and all NaN (attributes ``disagreement_available``,
``tta_variance_available`` False), so every trust file has the same datasets.

Own scans (:func:`estimate_blur_um`, :func:`calibrate_on_overlap`): the blur between a registered
high-resolution volume and the low-resolution one resampled onto its grid is unknown; it is
estimated on their overlap as the best-fitting Gaussian
(:func:`resrecover.evaluate.resolution.gaussian_fit`) and passed to :func:`residual_map` as
``blur_sigma_um`` with ``target_sigma_um=0`` (the recovery targets the high-resolution scan
itself). κ is measured on the overlap too (the resampled scan's noise is far from white).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import scipy.fft as sfft

from .. import ResrecoverError
from ..masks import checked_mask

log = logging.getLogger(__name__)

#: robust standard deviation of a normal sample: 1.4826 × median absolute deviation
MAD_TO_STD = 1.482602218505602
#: a noise block needs this fraction of valid coefficients, else it takes its neighbours' value
MIN_BLOCK_FILL = 0.25
#: datasets of a trust-map file
TRUST_DATASETS = ("residual", "disagreement", "noise_std", "tta_variance")


class TrustError(ResrecoverError):
    """Inputs a trust map cannot be computed from (shapes, blur levels, sizes)."""


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------


def degradation_sigma_um(sigma_um: float, target_sigma_um: float) -> float:
    """σ_d = sqrt(σ² − σ_t²): the blur that takes a volume of blur σ_t to the input's blur σ (µm)."""
    sigma_um, target_sigma_um = float(sigma_um), float(target_sigma_um)
    if not (sigma_um > 0 and target_sigma_um >= 0):
        raise TrustError(f"blur σ {sigma_um} µm, target σ {target_sigma_um} µm; expected σ > 0 and target ≥ 0")
    if target_sigma_um > sigma_um:
        raise TrustError(
            f"target blur {target_sigma_um:g} µm exceeds the input's blur {sigma_um:g} µm; "
            "expected a recovery sharper than its input"
        )
    return math.sqrt(sigma_um**2 - target_sigma_um**2)


def gaussian_blur(volume: np.ndarray, sigma_vox: float, workers: int = 1) -> np.ndarray:
    """Isotropic 3D Gaussian blur of σ voxels with mirror boundaries, as the continuous Gaussian.

    Applied in Fourier space with the transfer function exp(−2π²σ²f²) after symmetric padding by
    4σ (as :mod:`resrecover.evaluate.resolution` does), so sub-voxel σ blur as they should; float32.
    """
    volume = np.asarray(volume, dtype=np.float32)
    if sigma_vox < 0:
        raise TrustError(f"Gaussian σ = {sigma_vox} voxels; expected ≥ 0")
    if sigma_vox == 0:
        return volume.copy()
    pads = []
    for n in volume.shape:
        pad = min(n - 1, int(math.ceil(4.0 * sigma_vox)))
        total = sfft.next_fast_len(n + 2 * pad, real=True)
        pads.append((pad, total - n - pad))
    padded = np.pad(volume, pads, mode="symmetric")
    spectrum = sfft.rfftn(padded, workers=workers)
    shape = padded.shape
    del padded
    for axis, n in enumerate(shape):
        f = sfft.rfftfreq(n) if axis == len(shape) - 1 else sfft.fftfreq(n)
        h = np.exp(-2.0 * math.pi**2 * sigma_vox**2 * f**2).astype(np.float32)
        spectrum *= h.reshape([-1 if a == axis else 1 for a in range(len(shape))])
    out = sfft.irfftn(spectrum, s=shape, workers=workers, overwrite_x=True)
    crop = tuple(slice(p, p + n) for (p, _), n in zip(pads, volume.shape))
    return np.ascontiguousarray(out[crop], dtype=np.float32)


def _masked_local_mean(values: np.ndarray, mask: np.ndarray, sigma_vox: float, workers: int = 1) -> np.ndarray:
    """Gaussian-weighted mean of ``values`` over the voxels of ``mask`` (normalized convolution)."""
    weights = mask.astype(np.float32)
    num = gaussian_blur(np.where(mask, values, 0.0).astype(np.float32), sigma_vox, workers)
    den = gaussian_blur(weights, sigma_vox, workers)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    out[~mask | (den < 1e-3)] = np.nan
    return out.astype(np.float32)


def _check_pair(first, first_name: str, second, second_name: str, voxel_size_um: float, mismatch: str):
    """Both volumes checked (:func:`_check_volume`), on one grid (else ``mismatch``, formatted with
    their shapes) with a positive ``voxel_size_um``; returns them as float32."""
    first = _check_volume(first, first_name)
    second = _check_volume(second, second_name)
    if first.shape != second.shape:
        raise TrustError(mismatch.format(first.shape, second.shape))
    if not voxel_size_um > 0:
        raise TrustError(f"voxel_size_um = {voxel_size_um}; expected a positive voxel size in µm")
    return first, second


def _check_volume(volume, name: str) -> np.ndarray:
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise TrustError(f"{name}: expected a 3D z-y-x volume, got shape {volume.shape}")
    if min(volume.shape) < 2:
        raise TrustError(f"{name}: shape {volume.shape} is too small; expected at least 2 voxels per side")
    return volume


# ---------------------------------------------------------------------------------------------
# the input's noise level
# ---------------------------------------------------------------------------------------------


def haar_finest_band(volume: np.ndarray) -> np.ndarray:
    """(nz−1, ny−1, nx−1) finest 3D Haar band HHH: the mixed difference over each 2×2×2 cube / √8.

    Orthonormal: white noise of standard deviation σ gives coefficients of standard deviation σ;
    a signal that is linear along any one axis gives 0.
    """
    v = np.asarray(volume, dtype=np.float32)
    d = v[1:] - v[:-1]
    d = d[:, 1:] - d[:, :-1]
    d = d[:, :, 1:] - d[:, :, :-1]
    return d * np.float32(1.0 / math.sqrt(8.0))


def _linear_weights(n: int, n_blocks: int, block: int) -> np.ndarray:
    """(n, n_blocks) weights of linear interpolation from block centres to voxels (ends held flat)."""
    centres = np.arange(n_blocks) * block + (block - 1) / 2.0
    eye = np.eye(n_blocks)
    return np.stack([np.interp(np.arange(n, dtype=np.float64), centres, eye[j]) for j in range(n_blocks)], axis=1)


def _fill_missing(grid: np.ndarray) -> np.ndarray:
    """Replace NaN blocks by their nearest valid block (all NaN stays NaN)."""
    missing = ~np.isfinite(grid)
    if not missing.any() or missing.all():
        return grid
    from scipy import ndimage as ndi

    index = ndi.distance_transform_edt(missing, return_distances=False, return_indices=True)
    return grid[tuple(index)]


def noise_level_map(volume, mask=None, block_vox: int = 16) -> np.ndarray:
    """Local standard deviation of the noise of ``volume``, estimated from the volume itself.

    Parameters
    ----------
    volume : (nz, ny, nx) input (material fraction).
    mask : optional bool, same shape; only coefficients whose 2×2×2 cube lies inside count.
    block_vox : side of the blocks (voxels) in which the robust spread is taken.

    Returns
    -------
    (nz, ny, nx) float32, the white-noise-equivalent noise standard deviation (same units as the
    volume): 1.4826 × MAD of the finest Haar band in each block, interpolated linearly between
    block centres. Multiply by :func:`noise_correlation_factor` for correlated noise.
    """
    volume = _check_volume(volume, "volume")
    mask = checked_mask(mask, volume.shape, error=TrustError)
    block = int(block_vox)
    if block < 2:
        raise TrustError(f"noise block of {block_vox} voxels; expected at least 2")
    band = haar_finest_band(volume)
    inside = mask[1:, 1:, 1:] & mask[:-1, :-1, :-1]
    if not inside.any():
        raise TrustError("mask: no 2×2×2 cube inside it; expected a larger mask")
    band[~inside] = np.nan
    counts = [max(1, -(-n // block)) for n in band.shape]
    padded = np.full([c * block for c in counts], np.nan, dtype=np.float32)
    padded[: band.shape[0], : band.shape[1], : band.shape[2]] = band
    del band
    blocks = padded.reshape(counts[0], block, counts[1], block, counts[2], block).transpose(0, 2, 4, 1, 3, 5)
    blocks = blocks.reshape(*counts, block**3)
    del padded
    fill = np.isfinite(blocks).mean(axis=-1)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            centre = np.nanmedian(blocks, axis=-1)
            spread = MAD_TO_STD * np.nanmedian(np.abs(blocks - centre[..., None]), axis=-1)
    spread[fill < MIN_BLOCK_FILL] = np.nan
    spread = _fill_missing(spread)
    if not np.isfinite(spread).any():
        raise TrustError("noise level: no block holds enough voxels of the mask; expected a larger mask or smaller blocks")
    # interpolate between block centres (the band sits half a voxel off the volume's grid: negligible)
    out = spread.astype(np.float64)
    for axis, n in enumerate(volume.shape):
        w = _linear_weights(n, counts[axis], block)
        out = np.moveaxis(np.tensordot(w, np.moveaxis(out, axis, 0), axes=(1, 0)), 0, axis)
    floor = max(float(np.nanmedian(spread)) * 1e-3, 1e-12)  # a noiseless flat block must not divide by 0
    return np.maximum(out, floor).astype(np.float32)


def noise_correlation_factor(noise_only, mask=None) -> float:
    """κ = robust std of ``noise_only`` / robust std of its finest Haar band (1 for white noise).

    Measure it once per scanner and reconstruction on a residual that holds only noise, e.g. the
    input minus its re-degraded ground truth (simulations) or an air region inside the FOV.
    """
    noise_only = _check_volume(noise_only, "noise_only")
    mask = checked_mask(mask, noise_only.shape, error=TrustError)
    values = noise_only[mask]
    full = MAD_TO_STD * float(np.median(np.abs(values - np.median(values))))
    band = haar_finest_band(noise_only)[mask[1:, 1:, 1:] & mask[:-1, :-1, :-1]]
    fine = MAD_TO_STD * float(np.median(np.abs(band - np.median(band))))
    if not fine > 0:
        raise TrustError("noise_correlation_factor: the finest band has no spread; expected a noisy region")
    return full / fine


# ---------------------------------------------------------------------------------------------
# the maps
# ---------------------------------------------------------------------------------------------


def residual_map(
    recovered,
    lres,
    voxel_size_um: float,
    blur_sigma_um: float,
    target_sigma_um: float = 1.0,
    mask=None,
    window_um: float | None = None,
    noise_block_um: float = 32.0,
    noise_correlation: float = 1.0,
    noise_std=None,
    workers: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Data-consistency residual of a recovered volume against the input it was recovered from.

    Parameters
    ----------
    recovered : (nz, ny, nx) recovered volume (material fraction), blurred by ``target_sigma_um``.
    lres : (nz, ny, nx) the low-resolution input on the same grid (material fraction).
    voxel_size_um : voxel edge (µm).
    blur_sigma_um : Gaussian σ of the input's blur (µm); for own scans :func:`estimate_blur_um`.
    target_sigma_um : blur the recovery aims at (µm): ``scan.target_sigma_um`` for the networks,
        0 for Richardson-Lucy and for own scans (blur measured relative to the high-res scan).
    mask : bool, where the input is defined (the reconstructable FOV); the maps are NaN outside.
    window_um : Gaussian σ of the local average (µm); ``None`` or 0: σ_d.
    noise_block_um : side of the blocks of the noise estimate (µm).
    noise_correlation : κ, full-band / finest-band noise std of the input's reconstruction.
    noise_std : optional precomputed :func:`noise_level_map` of ``lres`` (without κ).
    workers : FFT threads.

    Returns
    -------
    residual : (nz, ny, nx) float32, locally averaged squared residual in units of the local noise
        variance (1 = explained by the measurement up to its noise), NaN outside ``mask``.
    noise : (nz, ny, nx) float32, κ·s(x), the noise standard deviation used (material fraction).
    """
    recovered, lres = _check_pair(
        recovered, "recovered", lres, "lres", voxel_size_um,
        "recovered shape {} differs from the input shape {}; expected one grid",
    )
    if not noise_correlation > 0:
        raise TrustError(f"noise_correlation = {noise_correlation}; expected a positive factor")
    mask = checked_mask(mask, lres.shape, error=TrustError)
    sigma_d_um = degradation_sigma_um(blur_sigma_um, target_sigma_um)
    window = float(window_um) if window_um else sigma_d_um
    block_vox = max(2, int(round(float(noise_block_um) / voxel_size_um)))
    if noise_std is None:
        noise_std = noise_level_map(lres, mask, block_vox)
    noise = (np.asarray(noise_std, dtype=np.float32) * np.float32(noise_correlation)).astype(np.float32)
    predicted = gaussian_blur(recovered, sigma_d_um / voxel_size_um, workers)
    normalized = np.square((lres - predicted) / noise, dtype=np.float32)
    del predicted
    residual = _masked_local_mean(normalized, mask, max(window / voxel_size_um, 1e-6), workers)
    noise = noise.copy()
    noise[~mask] = np.nan
    log.info(
        "residual: σ %.3g µm, target %.3g µm -> σ_d %.3g µm, window %.3g µm, noise %.4g (median), "
        "residual median %.3g, 99th percentile %.3g",
        blur_sigma_um, target_sigma_um, sigma_d_um, window, float(np.nanmedian(noise)),
        float(np.nanmedian(residual)), float(np.nanpercentile(residual, 99)),
    )
    return residual, noise


def disagreement_map(members, mask=None) -> np.ndarray:
    """Voxel-wise sample standard deviation (ddof = 1) of K ≥ 2 volumes (material fraction).

    ``members`` is a sequence of (nz, ny, nx) arrays or a (K, nz, ny, nx) array; NaN outside ``mask``.
    """
    stack = [np.asarray(m, dtype=np.float32) for m in members]
    if len(stack) < 2:
        raise TrustError(f"disagreement needs at least 2 ensemble members; got {len(stack)}")
    shape = stack[0].shape
    if any(m.shape != shape for m in stack):
        raise TrustError(f"ensemble members have shapes {[m.shape for m in stack]}; expected one grid")
    mean = np.zeros(shape, np.float64)
    for m in stack:
        mean += m
    mean /= len(stack)
    var = np.zeros(shape, np.float64)
    for m in stack:
        var += np.square(m - mean)
    out = np.sqrt(var / (len(stack) - 1)).astype(np.float32)
    if mask is not None:
        out[~checked_mask(mask, shape, error=TrustError)] = np.nan
    return out


def estimate_blur_um(
    high,
    low_on_high,
    voxel_size_um: float,
    max_um: float | None = None,
    step_um: float | None = None,
    mask=None,
    workers: int = 1,
) -> float:
    """Gaussian σ (µm) that best turns the high-resolution volume into the low-resolution one.

    Parameters
    ----------
    high : (nz, ny, nx) high-resolution volume (the registered overlap).
    low_on_high : the low-resolution volume resampled onto the same grid (registered).
    voxel_size_um : voxel edge of that grid (µm).
    max_um, step_um : the σ grid searched, 0..max in steps (default 10 and 0.25 voxels; the minimum is
        refined by a parabola).
    mask : optional bool, where both are valid.

    Returns
    -------
    σ (µm) of the best fit (:func:`resrecover.evaluate.resolution.best_gaussian_fit`, refined by a
    parabola). It is the blur relative to the high-resolution scan: use it with
    ``residual_map(..., blur_sigma_um=σ, target_sigma_um=0)``. Both volumes' noise biases it
    slightly upward (blurring ``high`` also removes its noise).
    """
    from ..evaluate.resolution import best_gaussian_fit, blur_sigmas_um, gaussian_fit

    high, low_on_high = _check_pair(
        high, "high", low_on_high, "low_on_high", voxel_size_um, "high shape {} differs from low_on_high shape {}"
    )
    max_um = float(max_um) if max_um else 10.0 * voxel_size_um
    step_um = float(step_um) if step_um else 0.25 * voxel_size_um
    curve = gaussian_fit(low_on_high, high, voxel_size_um, blur_sigmas_um(max_um, step_um), mask=mask, workers=workers)
    best = best_gaussian_fit(curve)
    log.info("estimated blur: σ %.3f µm (grid 0..%.3g µm, step %.3g µm)", best["best_blur_sigma_um"], max_um, step_um)
    return float(best["best_blur_sigma_um"])


def calibrate_on_overlap(high, low_on_high, voxel_size_um: float, mask=None, workers: int = 1) -> tuple[float, float]:
    """Blur σ (µm) and noise-correlation factor κ of a low-res scan, from its overlap with a high-res one.

    σ is :func:`estimate_blur_um`; κ is :func:`noise_correlation_factor` of ``low_on_high − G_σ ∗ high``,
    which holds only the low-res scan's noise where the high-res scan is right. κ then fits the
    low-res scan as it is compared (resampled onto the high-res voxels: smooth, strongly correlated
    noise), which the config's FDK value does not.
    """
    sigma_um = estimate_blur_um(high, low_on_high, voxel_size_um, mask=mask, workers=workers)
    if not sigma_um > 0:
        raise TrustError(
            "estimated blur between the low- and high-resolution volumes is 0 µm; expected a blurrier "
            "low-resolution scan (check the registration)"
        )
    noise_only = _check_volume(low_on_high, "low_on_high") - gaussian_blur(high, sigma_um / voxel_size_um, workers)
    return sigma_um, noise_correlation_factor(noise_only, mask)


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------


def write_trust_maps(
    path: str | Path,
    residual: np.ndarray,
    disagreement: np.ndarray | None,
    noise_std: np.ndarray,
    voxel_size_um: float,
    tta_variance: np.ndarray | None = None,
    **attrs,
) -> None:
    """Write the trust maps of one volume atomically (datasets :data:`TRUST_DATASETS`).

    ``disagreement`` None (no ensemble: Richardson-Lucy) is stored as an all-NaN dataset and the
    attribute ``disagreement_available`` is False; likewise ``tta_variance`` None (no network, or
    ``trust.tta_transforms: none``) and ``tta_variance_available``.
    """
    import h5py

    from ..io import atomic_output, check_free_disk
    from ..io.hdf5 import create_volume_dataset, provenance, set_attrs

    residual = np.asarray(residual, dtype=np.float32)
    shape = residual.shape
    available = disagreement is not None
    if not available:
        disagreement = np.full(shape, np.nan, dtype=np.float32)
    tta_available = tta_variance is not None
    if not tta_available:
        tta_variance = np.full(shape, np.nan, dtype=np.float32)
    data = {"residual": residual, "disagreement": disagreement, "noise_std": noise_std, "tta_variance": tta_variance}
    for name, value in data.items():
        if np.shape(value) != shape:
            raise TrustError(f"{path}: map '{name}' has shape {np.shape(value)}; expected {shape}")
    check_free_disk(path, len(data) * residual.size * 4)
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as fh:
            for name, value in data.items():
                create_volume_dataset(fh, name, data=value, compression="gzip", compression_opts=1)
            fh.attrs["voxel_size_um"] = float(voxel_size_um)
            fh.attrs["disagreement_available"] = bool(available)
            fh.attrs["residual_units"] = "noise variances (1 = consistent with the input's noise)"
            fh.attrs["disagreement_units"] = "material fraction (sample std of the ensemble members)"
            fh.attrs["noise_std_units"] = "material fraction"
            fh.attrs["tta_variance_available"] = bool(tta_available)
            fh.attrs["tta_variance_units"] = "material fraction² (variance of the network's output over in-plane transforms)"
            set_attrs(fh, provenance())
            set_attrs(fh, attrs)


def read_trust_maps(path: str | Path, names=TRUST_DATASETS) -> tuple[dict[str, np.ndarray], dict]:
    """Read trust maps written by :func:`write_trust_maps`: ({name: array}, attributes).

    Raises :class:`resrecover.io.InputError` naming the file for a missing file or dataset.
    """
    import h5py

    from ..io import InputError

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        with h5py.File(path, "r") as fh:
            missing = [n for n in names if n not in fh]
            if missing:
                raise InputError(
                    f"{path}: no dataset(s) {', '.join(missing)}; expected a trust-map file with "
                    f"{', '.join(TRUST_DATASETS)}"
                )
            maps = {n: fh[n][...].astype(np.float32, copy=False) for n in names}
            attrs = dict(fh.attrs)
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {exc}") from exc
    return maps, attrs
