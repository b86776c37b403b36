"""3D Richardson-Lucy deconvolution with a Gaussian PSF (docs/design.md#recovery; paper §2.1.3).

The classical baseline of the study: the kernel is the 3D Gaussian of the degradation σ, 30
iterations. The update (Richardson 1972, Lucy 1974), for data ``d``, PSF ``h`` and estimate ``u``::

    u <- u * (h_mirror (*) (d / (h (*) u)))

Implementation choices
----------------------
* **FFT convolution.** The Gaussian is symmetric, so ``h_mirror = h`` and one real transfer
  function (the ``rfftn`` of the kernel, real because the kernel is even) serves both convolutions;
  it is computed once, as the outer product of the 1D transforms of the separable kernel. The kernel
  is the sampled Gaussian truncated at ``truncate`` σ (4, as scipy's ``gaussian_filter``), each
  1D factor normalized to sum 1 (:func:`gaussian_psf` returns the same kernel as an array).
* **Boundaries.** FFT convolution is circular, so the volume is padded by reflection (default
  ``ceil(3σ)`` per side, as ``rl.pad_um: 0`` says) and each padded axis is grown to a fast FFT
  length (:func:`scipy.fft.next_fast_len`, the extra also reflected; :func:`rl_padding`). With
  reflection the padded data continue the volume smoothly, so the edges are not darkened as they are
  with zero padding (a constant volume stays exactly constant); the padding is cropped at the end.
* **Positivity.** RL needs non-negative data. Our volumes are material fraction (material ≈ 1,
  voids and air ≈ 0) with reconstruction noise, so voids hold small negative values. They are clipped
  at ``epsilon`` (1e-6) after an optional ``background`` shift (added before, subtracted after;
  default 0, i.e. plain clipping, which keeps the material level of 1 unchanged). Clipping slightly
  raises the mean of noisy voids (the negative half of their noise is lost).
* **Start.** The estimate starts from the (clipped) data, the usual choice ("iterative refinements
  of the initial input", paper §2.1.3); ``initial=0.5`` reproduces scikit-image's flat start.
* **Precision and devices.** float32 work arrays (complex64 spectra). On a CUDA device torch's FFT
  is used; otherwise scipy.fft with ``workers`` threads.

Memory: about ``4 * N * 4.5`` bytes for ``N`` padded voxels (data, estimate, one real and one
half-spectrum complex temporary, the half-size transfer function); 512³ padded to 540³ ~ 2.8 GB.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.fft

from resrecover import ResrecoverError
from resrecover.parallel import usable_cores

log = logging.getLogger(__name__)

#: Small value added to the re-blurred estimate before dividing (as scikit-image's 1e-12).
_DIVISION_GUARD = 1e-12


def _per_axis(value, ndim: int = 3, name: str = "sigma_vox") -> tuple[float, ...]:
    values = tuple(float(v) for v in np.broadcast_to(np.asarray(value, dtype=float), (ndim,)))
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ResrecoverError(f"{name}: {value!r} is not allowed; expected finite values >= 0")
    return values


def gaussian_kernel_1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Sampled Gaussian of std ``sigma`` voxels on ``[-r, r]``, ``r = int(truncate * sigma + 0.5)``, summing to 1."""
    radius = int(truncate * sigma + 0.5)
    if sigma == 0 or radius == 0:
        return np.ones(1)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_psf(sigma_vox: float | Sequence[float], truncate: float = 4.0) -> np.ndarray:
    """The 3D Gaussian PSF used by :func:`richardson_lucy_3d`, as an odd-sized float64 array summing to 1.

    ``sigma_vox`` is the standard deviation in voxels, one value or one per axis (z, y, x).
    """
    sz, sy, sx = _per_axis(sigma_vox)
    kz, ky, kx = (gaussian_kernel_1d(s, truncate) for s in (sz, sy, sx))
    return kz[:, None, None] * ky[None, :, None] * kx[None, None, :]


def rl_padding(shape: Sequence[int], pad_vox: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Pad widths ``((before, after), ...)``: ``pad_vox`` each side, the end grown to a fast FFT length."""
    widths = []
    for n, p in zip(shape, pad_vox):
        p = int(p)
        total = scipy.fft.next_fast_len(int(n) + 2 * p, real=True)
        widths.append((p, total - int(n) - p))
    return tuple(widths)


def _transfer_function(padded_shape: Sequence[int], sigma: Sequence[float], truncate: float) -> np.ndarray:
    """Real rfftn of the kernel wrapped onto the padded grid (centre at index 0), float32."""
    factors = []
    for axis, (n, s) in enumerate(zip(padded_shape, sigma)):
        kernel = gaussian_kernel_1d(s, truncate)
        radius = len(kernel) // 2
        wrapped = np.zeros(n)
        np.add.at(wrapped, np.arange(-radius, radius + 1) % n, kernel)  # % n also folds a kernel wider than n
        spectrum = np.fft.rfft(wrapped) if axis == 2 else np.fft.fft(wrapped)
        factors.append(spectrum.real)  # an even kernel has a real transform
    fz, fy, fx = factors
    return (fz[:, None, None] * fy[None, :, None] * fx[None, None, :]).astype(np.float32)


def _use_torch(device, backend: str | None) -> bool:
    """torch for a CUDA device (or when asked), scipy.fft otherwise (faster than torch on the CPU)."""
    if backend not in (None, "numpy", "torch"):
        raise ResrecoverError(f"backend: {backend!r} is not allowed; expected 'numpy', 'torch' or None")
    if backend is not None:
        return backend == "torch"
    if device is None:
        try:
            import torch

            return torch.cuda.is_available()
        except ImportError:
            return False
    return str(device).startswith("cuda")


def richardson_lucy_3d(
    volume: np.ndarray,
    sigma_vox: float | Sequence[float],
    iterations: int,
    pad_vox: int | Sequence[int] | None = None,
    device=None,
    *,
    initial: str | float = "input",
    epsilon: float = 1e-6,
    background: float = 0.0,
    filter_epsilon: float | None = None,
    pad_mode: str = "reflect",
    truncate: float = 4.0,
    workers: int | None = None,
    backend: str | None = None,
) -> np.ndarray:
    """Richardson-Lucy deconvolution of a 3D volume by a Gaussian PSF (see the module docstring).

    Parameters
    ----------
    volume : (nz, ny, nx) array, material fraction (≈ 0..1).
    sigma_vox : PSF standard deviation in voxels, one value or (σz, σy, σx).
    iterations : RL iterations (paper: 30).
    pad_vox : padding per side in voxels, one value or per axis; ``None`` = ``ceil(3σ)``.
    device : ``None`` (CUDA through torch when available, else NumPy), ``'cpu'`` or a torch device.
    initial : ``'input'`` (start from the clipped data) or a constant (scikit-image uses 0.5).
    epsilon : data below it are clipped to it (positivity).
    background : added before the clipping and subtracted from the result.
    filter_epsilon : where the re-blurred estimate is below it, the ratio is set to 0 (as
        scikit-image's ``filter_epsilon``); ``None`` does not filter.
    pad_mode : ``numpy.pad`` mode; ``'reflect'`` (default) avoids darkened edges, ``'constant'``
        (zeros) shows them.
    truncate : kernel radius in σ.
    workers : threads of scipy.fft on the CPU (default: all cores).
    backend : ``None`` (torch on a CUDA device, else scipy.fft), ``'numpy'`` or ``'torch'``
        (torch on ``device``, the CPU when ``device`` is ``None`` and no GPU is there).

    Returns
    -------
    float32 array of ``volume``'s shape.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ResrecoverError(f"volume: shape {volume.shape}; expected a 3D (z, y, x) volume")
    if int(iterations) < 0:
        raise ResrecoverError(f"iterations: {iterations}; expected >= 0")
    sigma = _per_axis(sigma_vox)
    pad = (
        tuple(int(math.ceil(3 * s)) for s in sigma)
        if pad_vox is None
        else tuple(int(round(p)) for p in _per_axis(pad_vox, name="pad_vox"))
    )
    widths = rl_padding(volume.shape, pad)
    data = np.pad(volume.astype(np.float32) + np.float32(background), widths, mode=pad_mode)
    np.maximum(data, np.float32(epsilon), out=data)
    otf = _transfer_function(data.shape, sigma, truncate)
    crop = tuple(slice(before, before + n) for (before, _), n in zip(widths, volume.shape))
    started = time.perf_counter()
    use_torch = _use_torch(device, backend)
    if use_torch:
        estimate = _iterate_torch(data, otf, int(iterations), initial, filter_epsilon, device)
    else:
        estimate = _iterate_numpy(data, otf, int(iterations), initial, filter_epsilon, workers)
    log.info(
        "Richardson-Lucy: %s padded to %s, sigma %s vox, %d iterations in %.2f s (%s)",
        volume.shape, data.shape, sigma, iterations, time.perf_counter() - started,
        f"torch on {device or 'the default device'}" if use_torch else "scipy.fft",
    )
    result = estimate[crop]
    if background:
        result = result - np.float32(background)
    return np.ascontiguousarray(result, dtype=np.float32)


def _iterate_numpy(data, otf, iterations, initial, filter_epsilon, workers) -> np.ndarray:
    workers = workers or usable_cores()
    shape = data.shape
    estimate = data.copy() if initial == "input" else np.full(shape, np.float32(initial), dtype=np.float32)

    def blur(array: np.ndarray) -> np.ndarray:
        spectrum = scipy.fft.rfftn(array, workers=workers)
        spectrum *= otf
        # irfftn in its two steps, each overwriting its input: ~25% faster than scipy's irfftn,
        # which copies (benchmarks/NOTES.md)
        spectrum = scipy.fft.ifftn(spectrum, axes=(0, 1), workers=workers, overwrite_x=True)
        return scipy.fft.irfft(spectrum, n=shape[-1], axis=-1, workers=workers, overwrite_x=True)

    for _ in range(iterations):
        reblurred = blur(estimate)
        reblurred += np.float32(_DIVISION_GUARD)
        small = reblurred < filter_epsilon if filter_epsilon else None  # as scikit-image's filter
        ratio = np.divide(data, reblurred, out=reblurred)
        if small is not None:
            ratio[small] = 0
        estimate *= blur(ratio)
    return estimate


def _iterate_torch(data, otf, iterations, initial, filter_epsilon, device) -> np.ndarray:
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    shape = data.shape
    d = torch.from_numpy(data).to(device)
    h = torch.from_numpy(otf).to(device)
    estimate = d.clone() if initial == "input" else torch.full(shape, float(initial), device=device)

    def blur(array):
        return torch.fft.irfftn(torch.fft.rfftn(array) * h, s=shape)

    for _ in range(iterations):
        reblurred = blur(estimate) + _DIVISION_GUARD
        ratio = d / reblurred
        if filter_epsilon:
            ratio = torch.where(reblurred < filter_epsilon, torch.zeros_like(ratio), ratio)
        estimate *= blur(ratio)
        del reblurred, ratio
    return estimate.cpu().numpy()


def psf_in_voxels(sigma_um, pad_um: float, voxel_size_um: float):
    """(σ, padding) of a deconvolution in voxels from µm: σ per axis, and the padding per axis
    rounded up, or ``None`` for ``pad_um`` 0 (:func:`richardson_lucy_3d` then pads 3σ)."""
    sigma_vox = tuple(s / voxel_size_um for s in _per_axis(sigma_um, name="sigma_um"))
    pad_vox = None if not pad_um else tuple(math.ceil(p / voxel_size_um) for p in _per_axis(pad_um, name="pad_um"))
    return sigma_vox, pad_vox


def richardson_lucy_file(
    input_path: str | Path,
    output_path: str | Path,
    sigma_um: float | Sequence[float],
    iterations: int,
    pad_um: float = 0.0,
    device=None,
    workers: int | None = None,
    **provenance,
) -> None:
    """Deconvolve the HDF5 volume ``input_path`` and write ``output_path`` (docs/results.md layout).

    Parameters
    ----------
    sigma_um : PSF standard deviation in µm (the degradation σ), converted with the input's
        ``voxel_size_um``.
    iterations : RL iterations (config ``rl.iterations``).
    pad_um : reflective padding per side in µm; 0 = ``ceil(3σ)`` (config ``rl.pad_um``).
    device : see :func:`richardson_lucy_3d`.
    provenance : extra attributes stored with the output (config hash, ...).
    """
    from resrecover.io import read_volume, write_volume

    volume, attrs = read_volume(input_path)
    voxel_size_um = attrs.get("voxel_size_um")
    if voxel_size_um is None:
        raise ResrecoverError(f"{input_path}: no attribute 'voxel_size_um'; expected the voxel size in µm")
    voxel_size_um = float(voxel_size_um)
    sigma_vox, pad_vox = psf_in_voxels(sigma_um, pad_um, voxel_size_um)
    started = time.perf_counter()
    result = richardson_lucy_3d(volume, sigma_vox, iterations, pad_vox=pad_vox, device=device, workers=workers)
    write_volume(
        output_path,
        result,
        voxel_size_um,
        method="rl",
        sigma_um=list(_per_axis(sigma_um, name="sigma_um")),
        sigma_vox=list(sigma_vox),
        iterations=int(iterations),
        pad_vox=list(pad_vox) if pad_vox else "auto (ceil(3 sigma))",
        input=str(input_path),
        device=str(device) if device is not None else "auto",
        seconds=round(time.perf_counter() - started, 3),
        **provenance,
    )
