"""Keep freed heap memory for reuse while a network runs batch after batch (glibc only).

A network's forward (and backward) pass on the CPU allocates its activations (and gradients) and
frees them before the next batch; torch's CPU allocator is glibc's ``malloc``, without a cache.
With glibc's defaults the freed top of the heap is given back to the kernel once it exceeds the
trim threshold, and blocks above the mmap threshold get fresh mappings, so the next batch faults
the same pages in again, and how many depends only on the order of allocations. Measured
(benchmarks/NOTES.md): tiled inference of the benchmark's small DeepNet over 64×1024×1024 took
2.3 million minor faults in our engine and 2.1 million in MONAI's (that was the ~4% it lost to
MONAI), 74,000 with the heap retained; one DeepNet training iteration of the quick preset took
4,000-18,000 faults (7-15% of its time), ~0-160 retained.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's largest dynamic mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX): blocks up
# to this size come from the heap; larger ones (a volume, a slab) keep their own mappings
MMAP_THRESHOLD_BYTES = 32 * 2**20
# freed heap memory kept during a run: more than a forward pass's activations of the tiles
# the presets use (the process's peak is unchanged: this is memory it held a batch earlier)
RETAIN_BYTES = 2**30


@functools.lru_cache(maxsize=1)
def _glibc():
    """The process's C library when it is glibc (``mallopt``, ``malloc_trim``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only (musl has mallopt as a no-op and no such symbol)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except (OSError, AttributeError):
        return None


def retained_bytes(max_memory_gb: float | None = None) -> int:
    """Freed heap to keep: :data:`RETAIN_BYTES`, or at most half of a RAM budget (GB) when one is set."""
    if max_memory_gb is None:
        return RETAIN_BYTES
    return max(0, min(RETAIN_BYTES, int(float(max_memory_gb) * 1e9 / 2)))


@contextlib.contextmanager
def retained_heap(retain_bytes: int = RETAIN_BYTES):
    """Within the block, freed heap memory (up to ``retain_bytes``) stays with the process for reuse.

    On exit the retained memory is given back (``malloc_trim``) and the thresholds are left where
    glibc's own dynamic rule ends up for a process that handles large arrays (mmap threshold
    :data:`MMAP_THRESHOLD_BYTES`, trim threshold twice that): setting them once switches that rule
    off for the process. Does nothing where the C library is not glibc.
    """
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    libc.mallopt(_M_TRIM_THRESHOLD, int(retain_bytes))
    try:
        yield
    finally:
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_BYTES)
        libc.malloc_trim(0)
