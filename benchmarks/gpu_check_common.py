"""What every sub-check of the GPU check shares: sizes, results, synthetic volumes, device and memory helpers.

The GPU check (:mod:`benchmarks.gpu_check`) runs each sub-check in a fresh worker process; a worker
fills one :class:`CheckResult` and saves it (also part-way, so that a worker stopped at its time
limit still leaves the numbers it had) as ``OUT/parts/{check}.json``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PAPER_CONFIG = ROOT / "config" / "config.yaml"
TEST_CONFIG = ROOT / "tests" / "config" / "test.yaml"

PASS, FAIL, NOT_RUN = "PASS", "FAIL", "NOT RUN"
#: The sub-checks' titles, as the report shows them.
TITLES = {
    "a": "Training: DeepNet and SRCNN-3D at the paper's settings, float32 (TF32) and bf16 autocast",
    "b": "The test preset through Snakemake (--resources gpu=1) from CT inputs made on a CPU",
    "c": "Richardson-Lucy: torch on the GPU vs the CPU path (scipy.fft)",
    "d": "Tiled inference: in memory and out of core (HDF5)",
    "e": "Two GPU jobs at once on one GPU: the per-GPU lock serializes them",
    "f": "Paper preset on one GPU: projected wall time against the goal of ≤ 2 h on one H100",
    "g": "CUDA out of memory during inference: caught and retried smaller, one log line",
}

#: One size set per mode. GPU: the paper preset's settings; CPU: tiny sizes that exercise the same
#: code in seconds on two cores (the test preset's small networks, 64×64×5 tiles).
SIZES: dict[str, dict[str, Any]] = {
    "gpu": {
        "config": "paper",
        "train": {"deepnet_iterations": 50, "srcnn_iterations": 60, "warmup": 10,
                  "deepnet_volume": (16, 576, 576), "srcnn_volume": (128, 192, 192)},
        "rl": {"n": 512, "iterations": 30, "sigma_vox": 5.0},
        "infer": {"block": 256, "memory_shape": (512, 512, 512), "srcnn_shape": (128, 512, 512),
                  "ooc_shape": (256, 2048, 2048), "ooc_seconds_needed": 60},
        "locks": {"shape": (48, 512, 512)},
        "oom": {"shape": (12, 576, 576)},
    },
    "cpu": {
        "config": "test",
        "train": {"deepnet_iterations": 20, "srcnn_iterations": 30, "warmup": 4, "deepnet_tile": 64,
                  "srcnn_patch": 16, "deepnet_volume": (12, 80, 80), "srcnn_volume": (40, 48, 48)},
        "rl": {"n": 32, "iterations": 30, "sigma_vox": 2.0},
        "infer": {"block": 32, "memory_shape": (32, 64, 64), "srcnn_shape": (32, 64, 64),
                  "ooc_shape": (12, 160, 160), "ooc_seconds_needed": 5, "ooc_budget_gb": 0.3,
                  "inference_overrides": {"tile_px": 64}},
        "locks": {"shape": (8, 64, 64)},
        "oom": {"shape": (8, 64, 64)},
    },
}


@dataclass
class CheckResult:
    """One sub-check: its measurements (rows), raw numbers, notes and PASS / FAIL / NOT RUN."""

    check: str
    title: str
    status: str = NOT_RUN
    summary: str = ""
    rows: list[dict] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float | None = None

    def add(self, what: str, value, unit: str = "", criterion: str = "", ok: bool | None = None) -> None:
        """One measured row; ``ok`` None means informational (no criterion)."""
        if isinstance(value, float) and not math.isfinite(value):
            ok = False if ok is not None or criterion else ok
        self.rows.append({"what": what, "value": value, "unit": unit, "criterion": criterion, "ok": ok})

    def fail(self, message: str) -> None:
        """Record an error that ends the sub-check (the others go on)."""
        self.error = message
        self.status = FAIL

    def finish(self, summary: str = "") -> None:
        """PASS unless an error or a row with ``ok`` False was recorded."""
        if summary:
            self.summary = summary
        if self.error is None:
            self.status = FAIL if any(r["ok"] is False for r in self.rows) else PASS

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class WorkerContext:
    """What a sub-check worker is told: its mode, where results and scratch files go, its deadline."""

    mode: str  # 'gpu' or 'cpu'
    out: Path  # results folder (small files only: parts, logs, the report)
    workdir: Path  # scratch folder for large files (never under ``out``)
    deadline: float | None = None  # epoch seconds by which the worker must be done
    prepared: Path | None = None  # folder made by ``--prepare`` (CT inputs, CPU reference, wheels)

    @property
    def sizes(self) -> dict:
        return SIZES[self.mode]

    def scratch(self, check: str) -> Path:
        folder = Path(self.workdir) / check
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def seconds_left(self) -> float:
        return deadline_left(self.deadline)


def parts_dir(out: Path) -> Path:
    return Path(out) / "parts"


def save_part(out: Path, result: CheckResult) -> None:
    """Write ``OUT/parts/{check}.json`` atomically (called part-way and at the end)."""
    folder = parts_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{result.check}.json.tmp"
    tmp.write_text(json.dumps(result.to_dict(), indent=1, default=json_default))
    tmp.replace(folder / f"{result.check}.json")


def load_part(out: Path, check: str) -> dict | None:
    path = parts_dir(out) / f"{check}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def json_default(value):
    """JSON for numpy scalars, paths and tuples."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.bool_):
        return bool(value)
    return str(value)


def deadline_left(deadline: float | None) -> float:
    """Seconds until ``deadline`` (epoch seconds); infinite when there is none."""
    return math.inf if deadline is None else deadline - time.time()


# ------------------------------------------------------------------------------------ configs
def mode_config(mode: str) -> dict:
    """The validated config whose networks a mode measures: the paper preset (GPU) or the test preset (CPU)."""
    from resrecover.config import load_config

    return load_config(PAPER_CONFIG if SIZES[mode]["config"] == "paper" else TEST_CONFIG)


def inference_model_settings(config: dict, method: str) -> dict:
    """Settings of a network built from ``config`` as :func:`resrecover.methods.modelio.save_model` wants them."""
    from resrecover.methods.training import network_architecture

    return {
        "method": method,
        "architecture": network_architecture(method, config),
        "normalization": {"offset": 0.0, "scale": 1.0},
    }


def save_random_model(config: dict, method: str, folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A freshly initialized network of ``config`` saved as model.safetensors + model.json (for inference checks)."""
    import torch

    from resrecover.methods.modelio import build_network, save_model

    settings = inference_model_settings(config, method)
    torch.manual_seed(seed)
    network = build_network(method, settings["architecture"])
    folder.mkdir(parents=True, exist_ok=True)
    weights, json_path = folder / f"{method}.safetensors", folder / f"{method}.json"
    save_model(network, settings, weights, json_path)
    return weights, json_path


# ------------------------------------------------------------------------------------ volumes
def synthetic_foam(shape, seed: int = 0, blur_vox: float = 1.5) -> np.ndarray:
    """A foam-like float32 volume: material 1 with spherical voids, blurred by a Gaussian of ``blur_vox``."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in shape)
    volume = np.ones(shape, dtype=np.float32)
    smallest = min(shape)
    n_voids = max(4, int(np.prod(shape) / (8 * (smallest / 6) ** 3)))
    for _ in range(n_voids):
        radius = rng.uniform(1.5, max(2.0, smallest / 8))
        centre = [rng.uniform(0, n) for n in shape]
        box = tuple(slice(max(0, int(c - radius)), min(n, int(c + radius) + 2)) for c, n in zip(centre, shape))
        grids = np.ogrid[box]
        distance2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
        volume[box][distance2 <= radius**2] = 0.0
    return ndimage.gaussian_filter(volume, blur_vox).astype(np.float32)


def tiled_volume(block: np.ndarray, shape) -> np.ndarray:
    """``block`` repeated along each axis (mirrored every other copy, so seams stay smooth) and cut to ``shape``."""
    reps = [math.ceil(n / b) for n, b in zip(shape, block.shape)]
    mirrored = block
    for axis, rep in enumerate(reps):
        pieces = [np.flip(mirrored, axis) if i % 2 else mirrored for i in range(rep)]
        mirrored = np.concatenate(pieces, axis=axis)
    return np.ascontiguousarray(mirrored[tuple(slice(0, n) for n in shape)])


def write_h5_volume(path: Path, shape, block: np.ndarray, voxel_size_um: float = 1.0, step: int = 16) -> None:
    """An HDF5 volume (dataset ``volume``, chunked as the workflow writes) filled slab by slab from ``block``.

    Only one slab of ``step`` slices is held at a time, so volumes larger than the RAM can be made.
    """
    import h5py

    from resrecover.io.hdf5 import create_volume_dataset

    shape = tuple(int(n) for n in shape)
    with h5py.File(path, "w") as fh:
        dataset = create_volume_dataset(fh, "volume", shape=shape)
        for z0 in range(0, shape[0], step):
            z1 = min(shape[0], z0 + step)
            slices = [z % block.shape[0] for z in range(z0, z1)]
            dataset[z0:z1] = tiled_volume(block[slices], (z1 - z0,) + shape[1:])
        fh.attrs["voxel_size_um"] = float(voxel_size_um)


def finite_in_slabs(path: Path, slab: int = 32) -> tuple[bool, tuple[int, ...], float, float]:
    """Whether the HDF5 volume at ``path`` is finite everywhere, its shape, min and max (read slab by slab)."""
    import h5py

    finite, low, high = True, math.inf, -math.inf
    with h5py.File(path, "r") as fh:
        dataset = fh["volume"]
        for z0 in range(0, dataset.shape[0], slab):
            block = dataset[z0 : z0 + slab]
            finite = finite and bool(np.isfinite(block).all())
            low, high = min(low, float(np.nanmin(block))), max(high, float(np.nanmax(block)))
        return finite, tuple(dataset.shape), low, high


# ------------------------------------------------------------------------------------ devices
def check_device(mode: str):
    """The torch device of a mode: ``cuda:0`` on the GPU, the CPU in CPU mode."""
    import torch

    return torch.device("cuda", 0) if mode == "gpu" else torch.device("cpu")


def synchronize(device) -> None:
    """Wait for the device's queued kernels (timings on CUDA are otherwise those of the launches)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def reset_gpu_peak(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def gpu_peak_gb(device) -> float | None:
    """Peak GPU memory allocated by torch since the last :func:`reset_gpu_peak` (GB); None on the CPU."""
    import torch

    if torch.device(device).type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 1e9


def reset_host_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) by writing 5 to /proc/self/clear_refs; False where refused."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
        return True
    return False


def host_peak_gb() -> float:
    """This process's peak resident set (VmHWM) in GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def usable_cores() -> int:
    from resrecover.parallel import usable_cores as cores

    return int(cores())


def machine_summary(mode: str) -> dict:
    """The GPU (name, memory, capability), torch and CUDA versions, cores and RAM of this machine."""
    import platform

    import torch

    info = {
        "mode": mode,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cores": os.cpu_count(),
        "ram_gb": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9, 1),
        "cuda_available": bool(torch.cuda.is_available()),
    }
    if info["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 1e9, 1),
                    capability=f"{props.major}.{props.minor}", gpu_count=torch.cuda.device_count(),
                    tf32_conv=bool(torch.backends.cudnn.allow_tf32),
                    tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32))
    return info
