"""How many threads a step may use."""

from __future__ import annotations

import os


def usable_cores(limit: int | None = None) -> int:
    """Cores this process may use: its CPU affinity, lowered by ``OMP_NUM_THREADS`` when set
    (Snakemake sets it to a job's ``threads``), and by ``limit``; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        cores = min(cores, int(omp))
    if limit is not None:
        cores = min(cores, int(limit))
    return max(1, cores)
