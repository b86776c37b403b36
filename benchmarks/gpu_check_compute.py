"""Sub-checks of the GPU check that run the project's compute paths directly (no Snakemake).

(a) training throughput, (c) Richardson-Lucy on the device vs the CPU path, (d) tiled inference in
memory and out of core, (g) out-of-memory back-off ((e), the lock, is in :mod:`.gpu_check_locks`).
Each ``check_*`` fills a :class:`~benchmarks.gpu_check_common.CheckResult`; in CPU mode the same
functions run at tiny sizes on the CPU (the out-of-memory error then comes from a network that raises
torch's OutOfMemoryError).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks.gpu_check_common import (
    TITLES,
    CheckResult,
    WorkerContext,
    check_device,
    finite_in_slabs,
    gpu_peak_gb,
    host_peak_gb,
    mode_config,
    reset_gpu_peak,
    reset_host_peak,
    save_part,
    save_random_model,
    synchronize,
    synthetic_foam,
    tiled_volume,
    usable_cores,
    write_h5_volume,
)

log = logging.getLogger("gpu_check")

#: Iterations the projection of (a) is made for (the paper's DeepNet trains 10,000).
PROJECTED_ITERATIONS = 10_000
#: (c): the GPU and CPU Richardson-Lucy must agree within this, relative to the largest value.
RL_TOLERANCE = 1e-3
PRECISION_LABELS = {"float32": "fp32", "bfloat16": "bf16"}


class RecordingHandler(logging.Handler):
    """Keeps (time, level, message) of the records of one logger, for checks on what was logged."""

    def __init__(self, logger_name: str):
        super().__init__(logging.DEBUG)
        self.records: list[tuple[float, str, str]] = []
        self.logger = logging.getLogger(logger_name)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.created, record.levelname, record.getMessage()))

    def __enter__(self) -> "RecordingHandler":
        self.logger.addHandler(self)
        self.logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)


# ------------------------------------------------------------------------------ (a) training
#: The measured training runs: (network, precision, channels_last); the label of each in the results.
TRAINING_VARIANTS = (("deepnet", "float32", False), ("deepnet", "bfloat16", False), ("deepnet", "bfloat16", True),
                     ("srcnn", "float32", False), ("srcnn", "bfloat16", False))


def variant_label(precision: str, channels_last: bool) -> str:
    """``float32``, ``bfloat16`` or ``bfloat16+channels_last``: the key of a run in (a)'s numbers."""
    return precision + ("+channels_last" if channels_last else "")


def training_config(config: dict, method: str, precision: str, channels_last: bool, sizes: dict, mode: str) -> dict:
    """``config`` with ``method``'s block set for a short measured run (the paper's settings otherwise).

    The warm-up of the learning rate is cut to a fifth of the run, so that the short run reaches the
    paper's step size and its loss can fall (the schedule does not change the time per iteration).
    """
    config = copy.deepcopy(config)
    block = config[method]
    iterations = int(sizes[f"{method}_iterations"])
    block.update(iterations=iterations, checkpoint_every=iterations + 1, precision=precision, sigma_overrides=[],
                 warmup_iterations=min(int(block.get("warmup_iterations", 0)), iterations // 5))
    if method == "deepnet":
        block["channels_last"] = channels_last
    if method == "srcnn":
        block["validate_every"] = iterations  # one validation, at the last (untimed) iteration
    if mode == "cpu" and method == "deepnet":
        block.update(tile_px=int(sizes["deepnet_tile"]), batch_size=4)
    if mode == "cpu" and method == "srcnn":
        block.update(patch_px=int(sizes["srcnn_patch"]), patch_stride_px=int(sizes["srcnn_patch"]) // 2)
    return config


def read_losses(path: Path) -> list[float]:
    with open(path, newline="") as fh:
        return [float(row["loss"]) for row in csv.DictReader(fh)]


class TimeSliceOver(Exception):
    """Raised from the iteration callback when a measured training run has used its seconds."""


def run_training(method: str, precision: str, channels_last: bool, ctx: WorkerContext, config: dict, pair,
                 seconds: float) -> dict:
    """Train ``method`` for the mode's iterations or ``seconds``, whichever ends first; rate after warm-up, losses."""
    from resrecover.methods.training import train_model

    sizes = ctx.sizes["train"]
    device = check_device(ctx.mode)
    folder = ctx.scratch("a") / f"{method}_{variant_label(precision, channels_last)}"
    shutil.rmtree(folder, ignore_errors=True)
    stamps: list[float] = []
    stop_at = time.perf_counter() + seconds

    def on_iteration(_iteration: int) -> None:
        synchronize(device)
        stamps.append(time.perf_counter())
        if stamps[-1] > stop_at:
            raise TimeSliceOver

    reset_gpu_peak(device)
    settings = training_config(config, method, precision, channels_last, sizes, ctx.mode)
    with contextlib.suppress(TimeSliceOver):
        train_model(method, pair[0], pair[1], settings, folder / "model.safetensors", folder / "model.json",
                    folder / "train_log.csv", folder / "checkpoints", seed=0, device=device, progress=False,
                    on_iteration=on_iteration, max_validation_patches=4)
    finished = len(stamps) == settings[method]["iterations"]
    warm = int(sizes["warmup"])
    timed = stamps[warm - 1 : len(stamps) - 1] if finished else stamps[warm - 1 :]  # the last one validates
    if len(timed) < 3:
        raise RuntimeError(f"{method} {precision}: only {len(stamps)} iterations in {seconds:.0f} s; too few to time")
    rate = (len(timed) - 1) / (timed[-1] - timed[0])
    losses = read_losses(folder / "train_log.csv" if finished else folder / "checkpoints" / "train_log.csv")
    k = max(3, len(losses) // 8)
    return {
        "iterations": len(stamps),
        "finished": finished,
        "timed_iterations": len(timed) - 1,
        "iterations_per_s": rate,
        "projected_10k_s": PROJECTED_ITERATIONS / rate,
        "loss_first": float(np.mean(losses[:k])),
        "loss_last": float(np.mean(losses[-k:])),
        "loss_finite": bool(np.isfinite(losses).all()),
        "peak_gpu_gb": gpu_peak_gb(device),
        "block": {key: settings[method][key] for key in settings[method] if key != "sigma_overrides"},
    }


def training_pair(method: str, sizes: dict) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic (LRES, HRES) pair large enough for the method's tiles or patches."""
    shape = tuple(sizes[f"{method}_volume"])
    block = synthetic_foam((min(shape[0], 64),) + tuple(min(n, 192) for n in shape[1:]), seed=1, blur_vox=0.7)
    hres = tiled_volume(block, shape)
    from scipy import ndimage

    lres = ndimage.gaussian_filter(hres, 2.5).astype(np.float32)
    return lres, hres


def add_training_rows(result: CheckResult, label: str, numbers: dict) -> None:
    """Rate, loss and projection rows of one measured training run."""
    result.add(f"{label}: iterations/s", round(numbers["iterations_per_s"], 3), "it/s", "> 0 after warm-up",
               numbers["iterations_per_s"] > 0)
    result.add(f"{label}: loss finite", numbers["loss_finite"], "", "every iteration", numbers["loss_finite"])
    result.add(f"{label}: loss first → last", f"{numbers['loss_first']:.4g} → {numbers['loss_last']:.4g}", "",
               "falling", numbers["loss_last"] < numbers["loss_first"])
    result.add(f"{label}: 10,000 iterations", round(numbers["projected_10k_s"] / 60, 2), "min")
    if numbers["peak_gpu_gb"] is not None:
        result.add(f"{label}: peak GPU memory", round(numbers["peak_gpu_gb"], 2), "GB")


def check_training(ctx: WorkerContext) -> CheckResult:
    """(a) DeepNet and SRCNN-3D training: iterations per second in float32 and bf16, loss finite and falling."""
    result = CheckResult("a", TITLES["a"])
    config = mode_config(ctx.mode)
    summary = []
    pairs = {method: training_pair(method, ctx.sizes["train"]) for method in ("deepnet", "srcnn")}
    for index, (method, precision, channels_last) in enumerate(TRAINING_VARIANTS):
        seconds = max(5.0, (ctx.seconds_left() - 10) / (len(TRAINING_VARIANTS) - index))
        numbers = run_training(method, precision, channels_last, ctx, config, pairs[method], seconds)
        key = variant_label(precision, channels_last)
        result.numbers.setdefault(method, {})[key] = numbers
        add_training_rows(result, f"{method} {key}", numbers)
        summary.append(f"{method} {PRECISION_LABELS[precision]}{' NHWC' if channels_last else ''} "
                       f"{numbers['iterations_per_s']:.2f} it/s")
        save_part(ctx.out, result)
    block = result.numbers["deepnet"]["float32"]["block"]
    srcnn = result.numbers["srcnn"]["float32"]["block"]
    result.notes.append(
        f"DeepNet tiles {block['tile_px']}×{block['tile_px']}×{block['n_slices']}, batch {block['batch_size']}, "
        f"base {block['base_channels']} channels, depth {block['depth']}, {block['extra_convs']} extra convolutions; "
        f"SRCNN-3D {srcnn['kernels']} kernels, {srcnn['filters']} filters, {srcnn['patch_px']}³ patches, batch "
        f"{srcnn['batch_size']}. compute.deterministic: {config['compute']['deterministic']} (cuDNN autotuning off). "
        f"Rates exclude {ctx.sizes['train']['warmup']} warm-up iterations and the last one (SRCNN validates "
        "there); a run stops early, with a note, when its share of the time limit is used. The learning-rate "
        "warm-up is cut to a fifth of each short run; 'channels_last' is DeepNet's NHWC option."
    )
    early = [f"{m} {p}" for m in result.numbers for p, n in result.numbers[m].items() if not n["finished"]]
    if early:
        result.notes.append(f"Stopped at the time limit before the last iteration: {', '.join(early)}.")
    result.finish("; ".join(summary))
    return result


# ------------------------------------------------------------------------------ (c) Richardson-Lucy
def check_richardson_lucy(ctx: WorkerContext) -> CheckResult:
    """(c) Richardson-Lucy on the device (torch FFT) vs the CPU path (scipy.fft), same input."""
    from resrecover.methods.rl import richardson_lucy_3d

    result = CheckResult("c", TITLES["c"])
    sizes = ctx.sizes["rl"]
    n, iterations, sigma = int(sizes["n"]), int(sizes["iterations"]), float(sizes["sigma_vox"])
    device = check_device(ctx.mode)
    volume = tiled_volume(synthetic_foam((min(n, 256),) * 3, seed=2), (n, n, n))
    richardson_lucy_3d(volume[:32, :32, :32], sigma, 2, device=device, backend="torch")  # warm-up (FFT plans)
    reset_gpu_peak(device)
    started = time.perf_counter()
    on_device = richardson_lucy_3d(volume, sigma, iterations, device=device, backend="torch")
    synchronize(device)
    device_s = time.perf_counter() - started
    peak = gpu_peak_gb(device)
    started = time.perf_counter()
    on_cpu = richardson_lucy_3d(volume, sigma, iterations, device="cpu", backend="numpy", workers=usable_cores())
    cpu_s = time.perf_counter() - started
    margin = int(math.ceil(3 * sigma))
    difference = np.abs(on_device.astype(np.float64) - on_cpu)
    scale = float(np.abs(on_cpu).max())
    interior = float(difference[margin:-margin, margin:-margin, margin:-margin].max()) / scale
    whole = float(difference.max()) / scale
    result.numbers = {"n": n, "iterations": iterations, "sigma_vox": sigma, "device": str(device),
                      "device_s": device_s, "cpu_s": cpu_s, "cpu_workers": usable_cores(),
                      "interior_max_rel_diff": interior, "max_rel_diff": whole, "interior_margin": margin,
                      "peak_gpu_gb": peak}
    result.add(f"{n}³, {iterations} iterations, torch on {device}", round(device_s, 3), "s")
    result.add(f"the same, CPU path (scipy.fft, {usable_cores()} threads)", round(cpu_s, 3), "s")
    result.add("CPU path time / torch time", f"{cpu_s / device_s:.3g}", "×")
    result.add("finite", bool(np.isfinite(on_device).all()), "", "all voxels", bool(np.isfinite(on_device).all()))
    result.add(f"max |device − CPU| / max|CPU|, ≥ {margin} voxels from the faces", f"{interior:.2e}", "",
               f"≤ {RL_TOLERANCE:g}", interior <= RL_TOLERANCE)
    result.add("the same over the whole volume", f"{whole:.2e}")
    if peak is not None:
        result.add("peak GPU memory", round(peak, 2), "GB")
    result.finish(f"{n}³ ×{iterations}: torch on {device} {device_s:.2f} s, scipy.fft on the CPU {cpu_s:.2f} s; "
                  f"rel. diff {interior:.1e} inside")
    return result


# ------------------------------------------------------------------------------ (d) inference
def timed_recovery(model, settings, source, sink, inference_config: dict, device) -> tuple[float, object]:
    """Run :func:`resrecover.methods.infer.recover_source` once; return its seconds and TilingRun."""
    from resrecover.methods.infer import recover_source

    started = time.perf_counter()
    run = recover_source(model, settings, source, sink, inference_config, device, progress=False)
    synchronize(device)
    return time.perf_counter() - started, run


def in_memory_inference(ctx: WorkerContext, method: str, weights: Path, settings_path: Path, shape, block,
                        inference_config: dict) -> dict:
    """Tiled inference of ``method`` over an in-memory volume of ``shape``: rate, memory, finiteness."""
    from resrecover.methods.modelio import load_model

    device = check_device(ctx.mode)
    model, settings = load_model(weights, settings_path, device=device)
    volume = tiled_volume(block, shape)
    warm = volume[: min(shape[0], 8), : min(shape[1], 128), : min(shape[2], 128)]
    timed_recovery(model, settings, warm, np.zeros_like(warm), inference_config, device)
    sink = np.zeros_like(volume)
    reset_gpu_peak(device)
    reset_host_peak()
    seconds, run = timed_recovery(model, settings, volume, sink, inference_config, device)
    return {"method": method, "shape": list(shape), "seconds": seconds, "voxels_per_s": volume.size / seconds,
            "peak_gpu_gb": gpu_peak_gb(device), "peak_host_gb": host_peak_gb(), "finite": bool(np.isfinite(sink).all()),
            "tile": list(run.tile_shape), "batch": run.batch_size, "n_tiles": run.n_tiles}


def out_of_core_inference(ctx: WorkerContext, weights: Path, settings_path: Path, block, budget_gb: float,
                          inference_config: dict) -> dict:
    """DeepNet over an HDF5 volume of the mode's ``ooc_shape`` read and written slab by slab."""
    from resrecover.methods.infer import recover_volume

    device = check_device(ctx.mode)
    shape = tuple(ctx.sizes["infer"]["ooc_shape"])
    folder = ctx.scratch("d")
    source, target = folder / "ooc_input.h5", folder / "ooc_output.h5"
    started = time.perf_counter()
    write_h5_volume(source, shape, block)
    write_s = time.perf_counter() - started
    reset_gpu_peak(device)
    reset_host_peak()
    started = time.perf_counter()
    run = recover_volume(weights, settings_path, source, target, inference_config, device=device,
                         max_memory_gb=budget_gb, progress=False)
    seconds = time.perf_counter() - started
    peak_gpu, peak_host = gpu_peak_gb(device), host_peak_gb()
    finite, out_shape, low, high = finite_in_slabs(target)
    source.unlink(missing_ok=True)
    target.unlink(missing_ok=True)
    voxels = int(np.prod(shape))
    return {"shape": list(shape), "input_gb": voxels * 4 / 1e9, "write_input_s": write_s, "seconds": seconds,
            "voxels_per_s": voxels / seconds, "peak_gpu_gb": peak_gpu, "peak_host_gb": peak_host,
            "budget_gb": budget_gb, "finite": finite, "same_shape": list(out_shape) == list(shape),
            "range": [low, high], "batch": run.batch_size, "slab_slices": run.slab_slices}


def add_inference_rows(result: CheckResult, label: str, numbers: dict) -> None:
    result.add(f"{label}: voxels/s", f"{numbers['voxels_per_s'] / 1e6:.3g} M", "voxels/s")
    result.add(f"{label}: seconds", round(numbers["seconds"], 2), "s")
    if numbers.get("peak_gpu_gb") is not None:
        result.add(f"{label}: peak GPU memory", round(numbers["peak_gpu_gb"], 2), "GB")
    result.add(f"{label}: peak host RSS", round(numbers["peak_host_gb"], 2), "GB")
    result.add(f"{label}: output finite", numbers["finite"], "", "all voxels", numbers["finite"])


def check_inference(ctx: WorkerContext) -> CheckResult:
    """(d) Tiled DeepNet (and SRCNN-3D) inference in memory, then DeepNet out of core from HDF5."""
    result = CheckResult("d", TITLES["d"])
    config = mode_config(ctx.mode)
    sizes = ctx.sizes["infer"]
    inference_config = dict(config["inference"], **sizes.get("inference_overrides", {}))
    block = synthetic_foam((int(sizes["block"]),) * 3, seed=3)
    models = {m: save_random_model(config, m, ctx.scratch("d") / "models") for m in ("deepnet", "srcnn")}
    for method, key in (("deepnet", "memory_shape"), ("srcnn", "srcnn_shape")):
        shape = tuple(sizes[key])
        numbers = in_memory_inference(ctx, method, *models[method], shape, block, inference_config)
        result.numbers[f"{method}_in_memory"] = numbers
        add_inference_rows(result, f"{method} in memory {'×'.join(map(str, shape))}", numbers)
        save_part(ctx.out, result)
    budget = float(sizes.get("ooc_budget_gb", config["compute"]["max_memory_gb"]))
    label = f"deepnet out of core {'×'.join(map(str, sizes['ooc_shape']))} HDF5"
    if ctx.seconds_left() < float(sizes["ooc_seconds_needed"]):
        result.add(f"{label}: not run", f"{ctx.seconds_left():.0f} s left", "", "time budget", False)
        result.notes.append("The out-of-core part did not fit in the time left: not run.")
    else:
        numbers = out_of_core_inference(ctx, *models["deepnet"], block, budget, inference_config)
        result.numbers["deepnet_out_of_core"] = numbers
        add_inference_rows(result, label, numbers)
        result.add(f"{label}: RAM budget (compute.max_memory_gb)", budget, "GB")
        result.add(f"{label}: same shape", numbers["same_shape"], "", "output = input shape", numbers["same_shape"])
    memory = result.numbers["deepnet_in_memory"]
    tail = result.numbers.get("deepnet_out_of_core")
    result.finish(f"DeepNet {memory['voxels_per_s'] / 1e6:.3g} M voxels/s in memory"
                  + (f", {tail['voxels_per_s'] / 1e6:.3g} M voxels/s out of core (peak RSS "
                     f"{tail['peak_host_gb']:.2f} GB)" if tail else ", out of core not run"))
    return result


# ------------------------------------------------------------------------------ (g) out of memory
class RaiseOutOfMemoryAbove:
    """A model wrapper for CPU mode: raises torch's OutOfMemoryError for batches above ``max_batch``."""

    def __init__(self, model, max_batch: int):
        self.model, self.max_batch = model, max_batch

    def __call__(self, x, **kwargs):
        import torch

        if x.shape[0] > self.max_batch:
            raise torch.OutOfMemoryError(f"out of memory (stand-in: batch {x.shape[0]} > {self.max_batch})")
        return self.model(x, **kwargs)


def cap_gpu_memory(model, device, tile: tuple[int, int, int], tiles_worth: float) -> dict:
    """Cap this process's GPU memory at what it holds plus ``tiles_worth`` × one tile's forward pass."""
    import torch

    from resrecover.methods.infer import torch_predictor

    predict = torch_predictor(model, device, "2.5d")
    one = np.zeros((1,) + tuple(tile), dtype=np.float32)
    predict(one)
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_reserved(device)
    torch.cuda.reset_peak_memory_stats(device)
    predict(one)
    per_tile = torch.cuda.max_memory_reserved(device) - base
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(device).total_memory
    cap = torch.cuda.memory_reserved(device) + tiles_worth * per_tile
    torch.cuda.set_per_process_memory_fraction(cap / total, device)
    return {"per_tile_gb": per_tile / 1e9, "cap_gb": cap / 1e9, "fraction": cap / total, "tiles_worth": tiles_worth}


def capped_recovery(model, settings, volume, inference_config: dict, device, tile, mode: str):
    """Recover ``volume`` short of memory; return (TilingRun, output, warnings logged, cap used).

    GPU: capped at 3 tiles' worth (a batch of 4 cannot fit), then at 1.5 if that caused no back-off;
    CPU mode: the network raises torch's OutOfMemoryError for batches above 2.
    """
    import torch

    for tiles_worth in ((3.0, 1.5) if mode == "gpu" else (None,)):
        cap = cap_gpu_memory(model, device, tile, tiles_worth) if mode == "gpu" else None
        capped = model if mode == "gpu" else RaiseOutOfMemoryAbove(model, max_batch=2)
        output = np.zeros_like(volume)
        try:
            with RecordingHandler("resrecover.methods.tiling") as records:
                _, run = timed_recovery(capped, settings, volume, output, inference_config, device)
        finally:
            if mode == "gpu":
                torch.cuda.set_per_process_memory_fraction(1.0, device)
        if run.backoffs:
            break
    return run, output, [m for _, level, m in records.records if level == "WARNING"], cap


def check_out_of_memory(ctx: WorkerContext) -> CheckResult:
    """(g) Out of memory during inference: caught, retried with a smaller batch, one log line per back-off."""
    from resrecover.methods.modelio import load_model

    result = CheckResult("g", TITLES["g"])
    config = mode_config(ctx.mode)
    device = check_device(ctx.mode)
    weights, settings_path = save_random_model(config, "deepnet", ctx.scratch("g"))
    model, settings = load_model(weights, settings_path, device=device)
    volume = tiled_volume(synthetic_foam((48, 96, 96), seed=5), tuple(ctx.sizes["oom"]["shape"]))
    inference_config = dict(config["inference"], batch_size=4)
    reference = np.zeros_like(volume)
    _, reference_run = timed_recovery(model, settings, volume, reference, inference_config, device)
    tile = tuple(reference_run.tile_shape)
    run, output, warnings, result.numbers["cap"] = capped_recovery(model, settings, volume, inference_config,
                                                                   device, tile, ctx.mode)
    difference = float(np.abs(output.astype(np.float64) - reference).max())
    result.numbers.update(backoffs=run.backoffs, warnings=warnings, batch_after=run.batch_size,
                          tile_after=list(run.tile_shape), max_difference=difference)
    result.add("back-offs", len(run.backoffs), "", "≥ 1", len(run.backoffs) >= 1)
    result.add("log lines (warnings) per back-off", f"{len(warnings)} for {len(run.backoffs)}", "",
               "one line each", len(warnings) == len(run.backoffs) and all("\n" not in w for w in warnings))
    for message in run.backoffs:
        result.add("logged", message)
    result.add("batch after back-off", run.batch_size, "tiles", "< 4", run.batch_size < 4)
    tile_kept = list(run.tile_shape) == list(tile)
    criterion = "≤ 1e-4 (same tiles)" if tile_kept else ""
    result.add("max |capped − uncapped| output", f"{difference:.1e}", "", criterion,
               difference <= 1e-4 if tile_kept else None)
    result.add("output finite", bool(np.isfinite(output).all()), "", "all voxels", bool(np.isfinite(output).all()))
    result.notes.append("GPU: memory capped with torch.cuda.set_per_process_memory_fraction at what the process "
                        "holds plus 3 (then 1.5) tiles' worth of one forward pass; CPU mode: the network raises "
                        "torch.OutOfMemoryError for batches above 2.")
    result.finish(f"{len(run.backoffs)} back-off(s), batch 4 → {run.batch_size}, output equal")
    return result


CHECKS = {"a": check_training, "c": check_richardson_lucy, "d": check_inference, "g": check_out_of_memory}
