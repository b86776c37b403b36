"""Test-time-augmentation variance: how much a network's output moves when its input is turned in-plane.

The networks were trained on tiles flipped and turned at random in-plane, so each element of that
group is an input they know, and a structure that is really in the measurement comes back the same
whichever way the input is presented. A pore the network invents from the texture of its input
need not: it may appear under one flip and not under another. :func:`tta_variance_map` applies the
model to each transformed input, undoes the transform on the output, and returns the per-voxel
variance of those outputs (material fraction²) — a per-pore feature of the "is this pore real?"
score (:mod:`.features`, :mod:`.score`) that needs no training and no ground truth.

The transforms are :data:`resrecover.methods.infer.TEST_TIME_AUGMENTATIONS` (``'flips'``: identity,
flip y, flip x, both; ``'dihedral'``: those and the four with a quarter turn).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .maps import TrustError

log = logging.getLogger(__name__)


def transform_volume(volume: np.ndarray, flip_y: int, flip_x: int, turns: int, inverse: bool = False) -> np.ndarray:
    """Apply (or undo, ``inverse=True``) one in-plane transform to a (nz, ny, nx) volume's y-x axes."""
    if not inverse:
        if flip_y:
            volume = volume[:, ::-1]
        if flip_x:
            volume = volume[:, :, ::-1]
        return np.rot90(volume, turns, axes=(1, 2)) if turns else volume
    if turns:
        volume = np.rot90(volume, -turns, axes=(1, 2))
    if flip_x:
        volume = volume[:, :, ::-1]
    return volume[:, ::-1] if flip_y else volume


def tta_variance_map(
    predict,
    volume: np.ndarray,
    transforms: str = "flips",
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """Per-voxel variance of a network's outputs over in-plane transforms of its input.

    Parameters
    ----------
    predict : callable mapping a (nz, ny, nx) float32 volume to the recovered volume of that shape
        (e.g. :func:`network_predictor`).
    volume : (nz, ny, nx) the network's input.
    transforms : a :data:`~resrecover.methods.infer.TEST_TIME_AUGMENTATIONS` name with at least two
        transforms (``'flips'`` or ``'dihedral'``).
    reference : the output for the identity transform when already computed (the recovered volume
        itself): saves one application of the network.

    Returns
    -------
    (nz, ny, nx) float32 variance (population variance over the transforms, material fraction²).
    """
    from ..methods.infer import augmentation_transforms

    group = augmentation_transforms(transforms)
    if len(group) < 2:
        raise TrustError(f"tta transforms {transforms!r}: one transform has no variance; expected 'flips' or 'dihedral'")
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise TrustError(f"volume: expected a 3D (z, y, x) array, got shape {volume.shape}")
    if reference is not None and np.shape(reference) != volume.shape:
        raise TrustError(f"reference: shape {np.shape(reference)} differs from the input's {volume.shape}")
    total = np.zeros(volume.shape, dtype=np.float64)
    total_sq = np.zeros(volume.shape, dtype=np.float64)
    for flip_y, flip_x, turns in group:
        if reference is not None and (flip_y, flip_x, turns) == (0, 0, 0):
            output = np.asarray(reference, dtype=np.float64)
        else:
            moved = np.ascontiguousarray(transform_volume(volume, flip_y, flip_x, turns))
            output = transform_volume(np.asarray(predict(moved), dtype=np.float64), flip_y, flip_x, turns, inverse=True)
        total += output
        total_sq += output * output
    n = float(len(group))
    mean = total / n
    # clipped: rounding can leave a variance of -1e-17 where every output agrees
    return np.maximum(total_sq / n - mean * mean, 0.0).astype(np.float32)


def network_predictor(model, settings: dict, inference_config: dict, device):
    """A ``predict(volume) -> recovered`` for :func:`tta_variance_map`: the recovery's own tiling and
    blending (:func:`resrecover.methods.infer.recover_source`), without test-time averaging."""
    from ..methods.infer import recover_source

    config = {**inference_config, "test_time_augmentation": "none"}

    def predict(volume: np.ndarray) -> np.ndarray:
        out = np.empty(volume.shape, dtype=np.float32)
        recover_source(model, settings, volume, out, config, device, progress=False)
        return out

    return predict


def tta_variance_from_files(
    weights_path: str | Path,
    settings_path: str | Path,
    input_path: str | Path,
    recovered_path: str | Path,
    inference_config: dict,
    transforms: str = "flips",
    device=None,
) -> np.ndarray:
    """:func:`tta_variance_map` of a trained model (its two files) on the input it recovered.

    ``recovered_path`` (the model's output for ``input_path``) serves as the identity transform's
    output; it must have been recovered without test-time augmentation (attribute ``inference``).
    """
    import json

    from ..io import read_volume
    from ..methods.device import acquire_device
    from ..methods.modelio import load_model

    if device is None:
        with acquire_device() as chosen:
            return tta_variance_from_files(weights_path, settings_path, input_path, recovered_path,
                                           inference_config, transforms, device=chosen)
    started = time.perf_counter()
    volume, _ = read_volume(input_path)
    recovered, attrs = read_volume(recovered_path)
    inference = json.loads(attrs.get("inference", "{}") or "{}")
    reference = recovered if inference.get("test_time_augmentation", "none") == "none" else None
    model, settings = load_model(weights_path, settings_path, device=device)
    variance = tta_variance_map(network_predictor(model, settings, inference_config, device), volume, transforms,
                                reference=reference)
    log.info("%s: test-time-augmentation variance over %s in %.1f s (median %.3g)", recovered_path, transforms,
             time.perf_counter() - started, float(np.median(variance)))
    return variance
