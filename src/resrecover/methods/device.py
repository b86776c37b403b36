"""Which GPUs this process may use, and which one a job takes (docs/design.md#recovery).

The package's one GPU question, :func:`cuda_device_count`, is answered here for everyone:
Snakemake's DAG code (``SIM_GPU`` in workflow/rules/common.smk) and each job's device choice below.
ASTRA keeps its own guard on top (``resrecover.ct.cuda_available``: ``astra.use_cuda()``), because a
build of astra-toolbox without CUDA kills the interpreter on any 3D call whatever the GPUs are.

Snakemake counts GPUs (``--resources gpu=2``) but never sets ``CUDA_VISIBLE_DEVICES`` (Snakemake
issue #281), so each job picks its GPU itself: it holds an exclusive ``fcntl.flock`` on one lock
file per visible GPU, takes the first GPU whose lock is free, and waits while all are busy. The
kernel releases a lock when its holder exits, even after a crash or ``kill -9``, so a dead job
never blocks a GPU.

Lock files live in ``$RESRECOVER_LOCK_DIR`` (default ``/tmp/resrecover-gpu-locks``), one per GPU,
named after the GPU's UUID where torch reports it (so jobs with different ``CUDA_VISIBLE_DEVICES``
still agree on which physical GPU is which), else after its ``CUDA_VISIBLE_DEVICES`` entry.

Importing this module does not import torch (the DAG code imports it on every ``snakemake`` call).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .. import ResrecoverError

log = logging.getLogger(__name__)

DEFAULT_LOCK_DIR = "/tmp/resrecover-gpu-locks"


class DeviceError(ResrecoverError):
    """The requested device is not available."""


def cuda_device_count() -> int:
    """How many CUDA GPUs this process may use (``CUDA_VISIBLE_DEVICES`` respected); 0 when none.

    A process that has imported torch gets torch's count: those are the devices its jobs number and
    run on (a CPU-only build of torch sees none, even on a GPU host). Otherwise ``nvidia-smi -L`` is
    asked, so that Snakemake's DAG code never loads torch; no ``nvidia-smi`` on the PATH means no GPU.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            return int(torch.cuda.device_count())
        except Exception:  # noqa: BLE001 - a broken CUDA setup is no GPU
            return 0
    return _nvidia_smi_device_count()


def _nvidia_smi_device_count() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return 0
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    count = sum(1 for line in out.splitlines() if line.startswith("GPU "))
    if visible is not None:
        count = min(count, len([v for v in visible.split(",") if v.strip()]))
    return count


def lock_dir_from_env() -> Path:
    return Path(os.environ.get("RESRECOVER_LOCK_DIR") or DEFAULT_LOCK_DIR)


class GpuLock:
    """An exclusive lock on one GPU, held until :meth:`release` (or the process ends)."""

    def __init__(self, index: int, key: str, path: Path, fd: int):
        self.index = index
        self.key = key
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        import fcntl

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "GpuLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _lock_file(lock_dir: Path, key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", str(key))
    return lock_dir / f"gpu-{safe}.lock"


def try_lock_gpu(indices: list[int], lock_dir: str | Path, keys: list[str] | None = None) -> GpuLock | None:
    """Lock the first GPU of ``indices`` whose lock file is free; ``None`` when all are held.

    Parameters
    ----------
    indices : device indices as torch numbers them (after ``CUDA_VISIBLE_DEVICES``).
    lock_dir : folder of the lock files (created if missing, writable by every user).
    keys : stable names of the GPUs for the lock file names (default: the indices).
    """
    import fcntl

    lock_dir = Path(lock_dir)
    if not lock_dir.is_dir():
        lock_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(lock_dir, 0o1777)  # shared by every user's jobs on this node
    keys = [str(k) for k in (keys if keys is not None else indices)]
    if len(keys) != len(indices):
        raise ValueError(f"try_lock_gpu: {len(indices)} indices but {len(keys)} keys")
    for index, key in zip(indices, keys):
        path = _lock_file(lock_dir, key)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        # the holder's pid, for people wondering who holds a GPU (the lock itself is the flock)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return GpuLock(index, key, path, fd)
    return None


def claim_gpu(
    indices: list[int],
    lock_dir: str | Path,
    keys: list[str] | None = None,
    poll_s: float = 5.0,
    timeout_s: float | None = None,
) -> GpuLock:
    """Lock a free GPU of ``indices``, waiting (polling every ``poll_s`` s) while all are busy.

    Raises :class:`DeviceError` after ``timeout_s`` seconds (``None``: wait for ever).
    """
    if not indices:
        raise DeviceError("claim_gpu: no GPU indices to choose from")
    start = time.monotonic()
    announced = False
    while True:
        lock = try_lock_gpu(indices, lock_dir, keys)
        if lock is not None:
            return lock
        if timeout_s is not None and time.monotonic() - start >= timeout_s:
            raise DeviceError(f"{lock_dir}: all GPUs {indices} stayed busy for {timeout_s:g} s")
        if not announced:
            log.info("all %d GPU(s) busy (locks in %s): waiting", len(indices), lock_dir)
            announced = True
        time.sleep(poll_s)


def visible_gpu_keys() -> list[str]:
    """Stable names of the CUDA devices torch sees, in torch's order (UUIDs where available)."""
    import torch

    n = cuda_device_count()
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    keys = []
    for index in range(n):
        key = None
        with contextlib.suppress(Exception):
            key = str(torch.cuda.get_device_properties(index).uuid)
        if not key:
            key = visible[index] if index < len(visible) else str(index)
        keys.append(key)
    return keys


@contextlib.contextmanager
def acquire_device(prefer: str = "auto", lock_dir: str | Path | None = None, poll_s: float = 5.0):
    """Yield the ``torch.device`` this job should run on, holding its GPU lock meanwhile.

    Parameters
    ----------
    prefer : 'auto' (a free GPU when CUDA is there, else the CPU), 'cuda' (a GPU or an error),
        or 'cpu'.
    lock_dir : lock folder (default ``$RESRECOVER_LOCK_DIR`` or ``/tmp/resrecover-gpu-locks``).
    poll_s : seconds between tries while every GPU is busy.

    >>> with acquire_device() as device:  # doctest: +SKIP
    ...     train_model(..., device=device)
    """
    import torch

    if prefer not in ("auto", "cuda", "cpu"):
        raise DeviceError(f"device: {prefer!r} is not allowed; expected 'auto', 'cuda' or 'cpu'")
    if prefer == "cpu":
        log.info("running on CPU (requested)")
        yield torch.device("cpu")
        return
    if cuda_device_count() == 0:
        if prefer == "cuda":
            raise DeviceError("device: 'cuda' was requested but torch sees no CUDA device")
        log.info("no CUDA device: running on CPU")
        yield torch.device("cpu")
        return
    lock_dir = Path(lock_dir) if lock_dir is not None else lock_dir_from_env()
    keys = visible_gpu_keys()
    with claim_gpu(list(range(len(keys))), lock_dir, keys, poll_s=poll_s) as lock:
        device = torch.device("cuda", lock.index)
        torch.cuda.set_device(device)
        log.info("running on %s (%s; lock %s)", device, torch.cuda.get_device_name(device), lock.path)
        yield device


# ---------------------------------------------------------------------------------------------
# torch's CPU threads and determinism: one policy for training and inference
# ---------------------------------------------------------------------------------------------


def torch_thread_count(config: dict | None, job_threads: int | None = None) -> int | None:
    """Threads torch should use: ``compute.torch_threads`` when set (non-zero), else the job's.

    ``job_threads`` is Snakemake's ``threads:`` of the rule (or a caller's argument); ``None`` when
    neither is given leaves torch's own default.
    """
    configured = int(((config or {}).get("compute") or {}).get("torch_threads", 0) or 0)
    return configured or (int(job_threads) if job_threads else None)


@contextlib.contextmanager
def torch_runtime(threads: int | None = None, deterministic: bool = False, device=None):
    """Set torch's CPU threads (and deterministic algorithms) for the block, then restore them.

    Tests and notebooks share the interpreter, so nothing leaks out of the block. On CUDA,
    deterministic mode only warns about kernels without a deterministic version (some backward
    passes, e.g. of max-pooling) instead of failing; bit-identical resume is promised on the CPU only.
    """
    import torch

    import torch.utils.deterministic

    device_type = torch.device(device).type if device is not None else "cpu"
    previous = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    try:
        if threads:
            torch.set_num_threads(int(threads))
        if deterministic:
            if device_type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=device_type != "cpu")
            # Deterministic mode also fills every tensor torch.empty makes with NaN (a debugging aid
            # against reads of uninitialized memory): an extra pass over each new buffer, ~4% of a
            # DeepNet training iteration on the CPU (benchmarks/NOTES.md). The algorithms stay the
            # deterministic ones, so results are unchanged.
            torch.utils.deterministic.fill_uninitialized_memory = False
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1], warn_only=previous[2])
        torch.backends.cudnn.benchmark = previous[3]
        torch.backends.cudnn.deterministic = previous[4]
        torch.utils.deterministic.fill_uninitialized_memory = previous[5]
