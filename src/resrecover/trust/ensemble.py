"""Ensembles of independently trained networks: the ensemble mean and its spread.

Member 0 of an ensemble is the study's model (``results/models/{network}/sigma{σ}/member0/``); members
1..K−1 are trained by the same :func:`resrecover.methods.training.train_job`, with the same
settings and iterations, from the seed :func:`resrecover.config.training_seed` gives their member
number, which changes their initial weights, every random training tile and (SRCNN) the
training/validation split. The ensemble's recovery is the voxel-wise mean of the K recovered
volumes and its disagreement map their sample standard deviation
(:func:`resrecover.trust.maps.disagreement_map`), both computed slab by slab so that K volumes
larger than memory can be combined.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .maps import TrustError

log = logging.getLogger(__name__)

#: suffix of an ensemble's method name: ``deepnet`` -> ``deepnet_ensemble``
ENSEMBLE_SUFFIX = "_ensemble"


def ensemble_method(network: str) -> str:
    """Method name of the ensemble of ``network`` (its results live under that name)."""
    return f"{network}{ENSEMBLE_SUFFIX}"


def ensemble_from_files(
    member_paths,
    output_path: str | Path,
    slab_slices: int = 16,
    **attrs,
) -> dict:
    """Write the ensemble mean (dataset ``volume``) and disagreement (dataset ``disagreement``).

    Parameters
    ----------
    member_paths : K ≥ 2 recovered volumes (HDF5, dataset ``volume``) on one grid.
    output_path : HDF5 written atomically: ``volume`` (float32 mean, material fraction),
        ``disagreement`` (float32 sample std, ddof = 1), attributes ``voxel_size_um``,
        ``ensemble_size``, ``members`` (JSON list of paths) and ``attrs``.
    slab_slices : z slices read from each member at a time.

    Returns
    -------
    dict with ``ensemble_size`` and ``disagreement_median`` / ``disagreement_p99`` (material fraction).
    """
    import h5py

    from ..io import atomic_output, check_free_disk, read_volume_lazy
    from ..io.hdf5 import create_volume_dataset, provenance, set_attrs

    paths = [str(p) for p in member_paths]
    if len(paths) < 2:
        raise TrustError(f"an ensemble needs at least 2 members; got {len(paths)} ({', '.join(paths)})")
    sources = [read_volume_lazy(p) for p in paths]
    try:
        shape = sources[0].shape
        voxel = sources[0].attrs.get("voxel_size_um")
        for src in sources[1:]:
            if src.shape != shape:
                raise TrustError(f"{src.path}: shape {src.shape} differs from {sources[0].path} {shape}; expected one grid")
        if voxel is None:
            raise TrustError(f"{sources[0].path}: no attribute 'voxel_size_um'")
        check_free_disk(output_path, 2 * int(np.prod(shape)) * 4)
        sample = []
        with atomic_output(output_path) as tmp, h5py.File(tmp, "w") as fh:
            mean_ds = create_volume_dataset(fh, "volume", shape=shape)
            std_ds = create_volume_dataset(fh, "disagreement", shape=shape)
            for z0 in range(0, shape[0], int(slab_slices)):
                z1 = min(z0 + int(slab_slices), shape[0])
                stack = np.stack([src[z0:z1] for src in sources]).astype(np.float64)
                mean_ds[z0:z1] = stack.mean(axis=0).astype(np.float32)
                spread = stack.std(axis=0, ddof=1).astype(np.float32)
                std_ds[z0:z1] = spread
                sample.append(spread[:: max(1, spread.shape[0] // 2), ::4, ::4].ravel())
            fh.attrs["voxel_size_um"] = float(voxel)
            fh.attrs["ensemble_size"] = len(paths)
            fh.attrs["members"] = json.dumps(paths)
            fh.attrs["disagreement_units"] = "material fraction (sample std, ddof=1)"
            set_attrs(fh, provenance())
            set_attrs(fh, attrs)
    finally:
        for src in sources:
            src.close()
    values = np.concatenate(sample)
    summary = {
        "ensemble_size": len(paths),
        "disagreement_median": float(np.median(values)),
        "disagreement_p99": float(np.percentile(values, 99)),
    }
    log.info("%s: mean of %d members; disagreement median %.4g, p99 %.4g", output_path, len(paths),
             summary["disagreement_median"], summary["disagreement_p99"])
    return summary
