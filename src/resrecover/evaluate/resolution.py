"""Effective resolution: Gaussian fit (paper §2.5.1, Fig. 9) and Fourier shell correlation (ours).

Gaussian fit. The ground truth is blurred with isotropic 3D Gaussians of σ = 0, step, ..., max µm
and compared (MSE, inside a mask) with the volume under test; the σ of the best fit, refined by a
parabola through the three grid points around the minimum, is the volume's effective resolution
(also given as FWHM = 2 √(2 ln 2) σ). The blur is applied in Fourier space with the continuous
Gaussian's transfer function exp(-2π² σ² f²), after padding every side by 4 σ with mirror
reflection (ndimage's 'reflect'), so it equals ``ndimage.gaussian_filter(mode='reflect')`` up to
the kernel's sampling (< 1e-3 relative in MSE for σ ≥ 1 voxel) and costs one inverse FFT per σ.
Below one voxel the continuous Gaussian is the better model: ndimage's sampled kernel barely blurs
at σ < 0.5 voxel, which would flatten the fine end of the curve on coarse grids (quick preset).

Fourier shell correlation. FSC(f) = Σ Re(F1 F2*) / sqrt(Σ|F1|² Σ|F2|²) over shells of spatial
frequency |f| (cycles/µm), after removing each volume's mean and multiplying both by a separable
Tukey window (cosine taper over 12.5% of each side at each end, alpha = 0.25) so that the cut
faces of the volume do not add a spurious cross of high frequencies. The resolution is 1/f at the
first crossing of a threshold (1/7 by default). Note: against a noiseless reference (our ground
truth) the 1/7 half-map criterion corresponds to 0.5 (Rosenthal & Henderson 2003); pass
``threshold=0.5`` for that reading.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import scipy.fft as sfft
from scipy.signal.windows import tukey

from .. import ResrecoverError
from .metrics import _as_pair, mse

log = logging.getLogger(__name__)

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
TUKEY_ALPHA = 0.25
_TRUNCATE = 4.0  # padding in σ, as ndimage.gaussian_filter's default truncation


class ResolutionError(ResrecoverError):
    """An effective-resolution measure cannot be computed with these inputs."""


def blur_sigmas_um(max_um: float, step_um: float) -> np.ndarray:
    """The Gaussian-fit grid 0, step, ..., max µm (config evaluation.gaussian_fit_max_um / _step_um)."""
    if not (max_um > 0 and step_um > 0):
        raise ResolutionError(f"gaussian fit grid max {max_um} µm, step {step_um} µm; expected positive values")
    n = int(math.floor(max_um / step_um + 1e-9))
    return np.round(np.arange(n + 1) * step_um, 10)


def _gaussian_transfer(n: int, sigma_vox: float, real: bool) -> np.ndarray:
    f = sfft.rfftfreq(n) if real else sfft.fftfreq(n)  # cycles per voxel
    return np.exp(-2.0 * math.pi**2 * sigma_vox**2 * f**2).astype(np.float32)


def gaussian_fit(volume, reference, voxel_size_um: float, blur_sigmas_um, mask=None, workers: int = 1) -> pd.DataFrame:
    """MSE between ``volume`` and the reference blurred by each σ of ``blur_sigmas_um``.

    Parameters
    ----------
    volume : (nz, ny, nx) volume under test (material fraction).
    reference : (nz, ny, nx) ground truth (unblurred).
    voxel_size_um : voxel edge, µm.
    blur_sigmas_um : 1D sequence of Gaussian σ in µm (≥ 0); σ = 0 is the unblurred ground truth.
    mask : optional (nz, ny, nx) bool; the MSE is taken inside it.
    workers : threads for the FFTs.

    Returns
    -------
    DataFrame with columns ``blur_sigma_um`` and ``mse``, one row per σ in the given order.
    """
    volume, reference, mask = _as_pair(volume, reference, mask)
    if volume.ndim != 3:
        raise ResolutionError(f"gaussian fit needs 3D volumes; got shape {volume.shape}")
    if not voxel_size_um > 0:
        raise ResolutionError(f"voxel_size_um = {voxel_size_um}; expected a positive voxel size")
    sigmas = np.asarray(blur_sigmas_um, dtype=np.float64).ravel()
    if sigmas.size == 0 or np.any(~np.isfinite(sigmas)) or np.any(sigmas < 0):
        raise ResolutionError(f"blur_sigmas_um = {sigmas.tolist()}; expected finite values ≥ 0")

    shape = volume.shape
    sigma_max_vox = float(sigmas.max()) / voxel_size_um
    # mirror padding of 4 σ (at most one reflection of the side), then sizes the FFT likes
    pads = []
    for n in shape:
        pad = min(n - 1, int(math.ceil(_TRUNCATE * sigma_max_vox)))
        total = sfft.next_fast_len(n + 2 * pad, real=True)
        pads.append((pad, total - n - pad))
    padded = np.pad(reference, pads, mode="symmetric") if sigma_max_vox > 0 else reference
    spectrum = sfft.rfftn(padded, workers=workers) if sigma_max_vox > 0 else None
    full_shape = padded.shape
    crop = tuple(slice(p, p + n) for (p, _), n in zip(pads, shape))
    del padded

    rows = []
    work = None
    for sigma_um in sigmas:
        sigma_vox = float(sigma_um) / voxel_size_um
        if sigma_vox == 0:
            blurred = reference
        else:
            hz = _gaussian_transfer(full_shape[0], sigma_vox, real=False)
            hy = _gaussian_transfer(full_shape[1], sigma_vox, real=False)
            hx = _gaussian_transfer(full_shape[2], sigma_vox, real=True)
            if work is None:
                work = np.empty_like(spectrum)
            np.multiply(spectrum, (hy[:, None] * hx[None, :])[None], out=work)
            work *= hz[:, None, None]
            blurred = sfft.irfftn(work, s=full_shape, workers=workers, overwrite_x=True)[crop]
        rows.append({"blur_sigma_um": float(sigma_um), "mse": mse(volume, blurred, mask)})
        log.debug("gaussian fit: σ %.3f µm -> MSE %.6g", sigma_um, rows[-1]["mse"])
    return pd.DataFrame(rows, columns=["blur_sigma_um", "mse"])


def best_gaussian_fit(curve_df: pd.DataFrame) -> dict[str, float]:
    """Best-fitting blur of a Gaussian-fit curve (columns ``blur_sigma_um``, ``mse``).

    The grid minimum is refined by the vertex of the parabola through it and its two neighbours
    (kept inside their interval); at either end of the grid, or where the three points are not
    convex, the grid value is returned and a warning is logged (the true minimum may lie outside
    the grid).

    Returns
    -------
    dict with ``best_blur_sigma_um`` (µm, refined), ``best_fwhm_um`` (µm) and ``mse`` (the
    smallest MSE measured on the grid, not the parabola's extrapolation).
    """
    for col in ("blur_sigma_um", "mse"):
        if col not in curve_df.columns:
            raise ResolutionError(f"gaussian fit table lacks column '{col}'; expected blur_sigma_um and mse")
    curve = curve_df[["blur_sigma_um", "mse"]].dropna().sort_values("blur_sigma_um")
    if curve.empty:
        raise ResolutionError("gaussian fit table has no finite rows; expected at least one")
    x = curve["blur_sigma_um"].to_numpy(dtype=np.float64)
    y = curve["mse"].to_numpy(dtype=np.float64)
    i = int(np.argmin(y))
    best_x, best_y = x[i], y[i]  # the reported MSE is the measured grid minimum
    if 0 < i < len(x) - 1:
        # the parabola through the minimum and its neighbours (uneven spacing is fine)
        curvature, slope, intercept = np.polyfit(x[i - 1 : i + 2], y[i - 1 : i + 2], 2)
        if curvature > 0:
            vertex = -slope / (2.0 * curvature)
            if x[i - 1] <= vertex <= x[i + 1]:
                best_x = float(vertex)
    else:
        log.warning(
            "gaussian fit: the smallest MSE is at the end of the grid (σ = %.3g µm); the best fit may lie outside",
            best_x,
        )
    return {"best_blur_sigma_um": float(best_x), "best_fwhm_um": float(best_x * FWHM_PER_SIGMA), "mse": float(best_y)}


def _taper(shape: tuple[int, ...], alpha: float) -> list[np.ndarray]:
    return [tukey(n, alpha).astype(np.float32) if n > 2 else np.ones(n, np.float32) for n in shape]


def fourier_shell_correlation(
    volume,
    reference,
    voxel_size_um: float,
    n_shells: int | None = None,
    mask_taper: bool = True,
    workers: int = 1,
) -> pd.DataFrame:
    """Fourier shell correlation of ``volume`` with ``reference``.

    Parameters
    ----------
    volume, reference : (nz, ny, nx) volumes (material fraction).
    voxel_size_um : voxel edge, µm (isotropic).
    n_shells : number of shells k = 1..n_shells at frequencies k · nyquist / n_shells, each one
        shell width wide (nyquist = 1 / (2 voxel)); default half the smallest side, i.e. shells one
        Fourier voxel wide. The DC term is left out (the means are removed).
    mask_taper : multiply both volumes by a separable Tukey window (alpha 0.25) after removing
        their (windowed) means, so that the cut faces do not correlate spuriously.
    workers : threads for the FFTs.

    Returns
    -------
    DataFrame with ``frequency`` (shell centre, cycles/µm, ascending) and ``fsc`` (NaN for an
    empty shell).
    """
    volume, reference, _ = _as_pair(volume, reference)
    if volume.ndim != 3:
        raise ResolutionError(f"FSC needs 3D volumes; got shape {volume.shape}")
    if not voxel_size_um > 0:
        raise ResolutionError(f"voxel_size_um = {voxel_size_um}; expected a positive voxel size")
    shape = volume.shape
    if n_shells is None:
        n_shells = max(1, min(shape) // 2)
    n_shells = int(n_shells)
    if n_shells < 1:
        raise ResolutionError(f"n_shells = {n_shells}; expected at least 1")

    def prepared(v: np.ndarray) -> np.ndarray:
        if not mask_taper:
            return v - np.float32(v.mean(dtype=np.float64))
        wz, wy, wx = _taper(shape, TUKEY_ALPHA)
        w = wz[:, None, None] * (wy[:, None] * wx[None, :])[None]
        mean = float(np.sum(w * v, dtype=np.float64) / np.sum(w, dtype=np.float64))
        out = v - np.float32(mean)
        out *= w
        return out

    f1 = sfft.rfftn(prepared(volume), workers=workers)
    f2 = sfft.rfftn(prepared(reference), workers=workers)

    nyquist = 0.5 / voxel_size_um
    width = nyquist / n_shells
    fz = sfft.fftfreq(shape[0], d=voxel_size_um)
    fy = sfft.fftfreq(shape[1], d=voxel_size_um)
    fx = sfft.rfftfreq(shape[2], d=voxel_size_um)
    # the half spectrum stands for both halves: columns 0 < kx < nx/2 count twice
    weight_x = np.full(fx.size, 2.0)
    weight_x[0] = 1.0
    if shape[2] % 2 == 0:
        weight_x[-1] = 1.0
    fyx2 = fy[:, None] ** 2 + fx[None, :] ** 2
    num = np.zeros(n_shells, np.float64)
    den1 = np.zeros(n_shells, np.float64)
    den2 = np.zeros(n_shells, np.float64)
    for k in range(shape[0]):  # plane by plane: no volume-sized index arrays
        radius = np.sqrt(fz[k] ** 2 + fyx2)
        shell = np.rint(radius / width).astype(np.int64)  # shell k: |f| within half a width of k·width
        keep = (shell >= 1) & (shell <= n_shells)  # the DC term (shell 0) carries only the removed mean
        idx = shell[keep] - 1
        a1, a2 = f1[k][keep], f2[k][keep]
        wgt = np.broadcast_to(weight_x, radius.shape)[keep]
        num += np.bincount(idx, weights=wgt * (a1.real * a2.real + a1.imag * a2.imag), minlength=n_shells)
        den1 += np.bincount(idx, weights=wgt * (a1.real**2 + a1.imag**2), minlength=n_shells)
        den2 += np.bincount(idx, weights=wgt * (a2.real**2 + a2.imag**2), minlength=n_shells)
    with np.errstate(invalid="ignore", divide="ignore"):
        fsc = num / np.sqrt(den1 * den2)
    fsc[(den1 <= 0) | (den2 <= 0)] = np.nan
    frequency = np.arange(1, n_shells + 1) * width
    return pd.DataFrame({"frequency": frequency, "fsc": fsc})


def fsc_resolution(fsc_df: pd.DataFrame, threshold: float = 1 / 7) -> float:
    """Resolution (µm) = 1 / the frequency where the FSC first falls below ``threshold``.

    The crossing is interpolated linearly between the last shell above and the first below. NaN
    when the curve never falls below the threshold, or is below it from the first shell on.
    """
    for col in ("frequency", "fsc"):
        if col not in fsc_df.columns:
            raise ResolutionError(f"FSC table lacks column '{col}'; expected frequency and fsc")
    curve = fsc_df[["frequency", "fsc"]].dropna().sort_values("frequency")
    f = curve["frequency"].to_numpy(dtype=np.float64)
    c = curve["fsc"].to_numpy(dtype=np.float64)
    below = np.flatnonzero(c < threshold)
    if below.size == 0:
        return math.nan
    i = int(below[0])
    if i == 0:
        log.warning("FSC is below %.3g already in the first shell (%.4g cycles/µm)", threshold, f[0])
        return math.nan
    f_cross = f[i - 1] + (f[i] - f[i - 1]) * (c[i - 1] - threshold) / (c[i - 1] - c[i])
    return float(1.0 / f_cross)
