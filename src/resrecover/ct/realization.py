"""One realization's whole scan in one process: every blur level and the ground truth (rule ``scan``).

Loading RTK takes ~11 s per process on one core while an FDK of the quick preset's 160³ grid takes
~5 s, so one process per (realization, σ) spent two thirds of the CT time loading. Here one job
projects the phantom once, degrades and reconstructs each σ in turn, and reconstructs the ground
truth, with the same functions and seeds as separate steps would use: the volumes are the same.
Projections are written to ``projections_dir`` when the config keeps them, else to a temporary
folder that is removed with them.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Mapping

from ..config import config_hash, derive_seed, realization_seeds, sigma_tag
from .simulate import select_backend
from .stages import degrade_scan_file, fdk_file, ground_truth_file, job_gpu, project_phantom_file

log = logging.getLogger(__name__)


def noise_seed(config: dict, realization: str, sigma_um: float) -> int:
    """The seed of the photon noise of one (realization, σ) scan: input and target noise are independent."""
    return derive_seed(config["seed"], realization, sigma_tag(sigma_um))


def scan_realization(
    phantom_path: str | Path,
    config: dict,
    realization: str,
    recon_paths: Mapping[float, str | Path],
    ground_truth_path: str | Path,
    projections_dir: str | Path | None = None,
    threads: int | None = None,
) -> None:
    """Simulate and reconstruct every scan of one phantom realization.

    Parameters
    ----------
    phantom_path : the realization's phantom (rule ``phantom``).
    config : validated config (``scan:`` block, seeds).
    realization : its name (``train``, ``validation``, ``alternate``), recorded in every file and
        part of each noise seed.
    recon_paths : σ in µm → FDK volume to write (the target σ and every LRES σ).
    ground_truth_path : FDK of the noiseless, unblurred scan (:func:`.simulate.ground_truth_file`).
    projections_dir : where ``clean.h5`` and ``sigma<σ>.h5`` projections are kept; ``None``: a
        temporary folder, removed at the end.
    threads : RTK's threads (ASTRA runs on one claimed GPU for the whole job).
    """
    scan = config["scan"]
    backend = select_backend(scan["backend"])
    common = {"config_hash": config_hash(config), "realization": realization}
    seed = realization_seeds(config)[realization]
    t0 = time.perf_counter()
    with job_gpu(backend) as gpu, tempfile.TemporaryDirectory(prefix="resrecover-scan-") as scratch:
        folder = Path(projections_dir) if projections_dir is not None else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        clean = folder / "clean.h5"
        project_phantom_file(
            phantom_path, clean, config, backend=backend, threads=threads, gpu=gpu,
            phantom_seed=seed, **common,
        )
        for sigma_um, out_path in recon_paths.items():
            projections = folder / f"sigma{sigma_tag(sigma_um)}.h5"
            degrade_scan_file(
                clean, projections, sigma_um=float(sigma_um), seed=noise_seed(config, realization, sigma_um),
                photons_per_pixel=scan["photons_per_pixel"], attenuation_per_um=scan["attenuation_per_um"],
                chunk=scan["projection_chunk"], **common,
            )
            # realization, sigma_um, seed and n_projections come along from the projection file
            fdk_file(
                projections, out_path, backend=backend, hann_cutoff=scan["hann_cutoff"],
                chunk=scan["projection_chunk"], threads=threads, gpu=gpu, **common,
            )
            if projections_dir is None:
                projections.unlink()
        ground_truth_file(
            phantom_path, ground_truth_path, config, backend=backend, threads=threads, gpu=gpu,
            seed=seed, **common,
        )
    log.info("%s: %d scans and the ground truth in %.1f s", realization, len(recon_paths), time.perf_counter() - t0)
