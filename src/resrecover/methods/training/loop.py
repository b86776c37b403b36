"""The training loop: :func:`train_model`, resumable bit for bit, and :func:`train_job` (rule ``train``).

:func:`train_model`

1. fits the intensity normalization on the training input (stored with the model);
2. trains with Adam (fused where torch has it: :func:`_adam`) at the step sizes of :func:`.settings.learning_rate_at`, drawing every batch
   from a generator seeded by ``(seed, iteration)`` (:mod:`.tasks`);
3. writes a checkpoint every ``checkpoint_every`` iterations (:mod:`.checkpoint`);
4. on a re-run with the same arguments resumes from the newest valid checkpoint whose fingerprint
   (method, training settings, seed, data) matches, and on the CPU ends with weights identical
   to those of an uninterrupted run;
5. writes ``model.safetensors`` + ``model.json`` (:func:`resrecover.methods.modelio.save_model`) and
   the CSV training log, then deletes the checkpoints (the final outputs replace them).

DeepNet keeps its last weights (no validation split, as in the paper); SRCNN-3D keeps the weights
with the lowest validation loss (evaluated every ``validate_every`` iterations and at the end).
Logged losses are mean squared errors per FOV voxel in normalized units (material fraction
divided by the fitted scale); for DeepNet ``loss = w1·loss_intermediate + w2·loss_final``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ... import __version__
from ...config import config_hash
from ...io import atomic_output, read_volume
from ...masks import checked_mask
from ..device import torch_runtime, torch_thread_count
from ..heap import retained_heap
from ..modelio import NormalizedModel, build_network, check_tensors_match, fit_normalization, normalize, save_model
from ..registry import check_network
from .checkpoint import (
    LOG_COLUMNS,
    RUNNING_LOG,
    fmt_log_value,
    optimizer_from_files,
    read_checkpoint,
    remove_checkpoints,
    restore_rng,
    subdict,
    trim_log,
    write_checkpoint,
)
from .settings import (
    TrainingError,
    learning_rate_at,
    network_architecture,
    schedule_depends_on_length,
    training_settings,
)
from .tasks import DeepNetTask, SrcnnTask

log = logging.getLogger(__name__)

#: settings that do not change what an iteration computes: a run may be resumed with other values
_RESUMABLE_KEYS = ("iterations", "checkpoint_every")


def _as_volume(volume, name: str) -> tuple[np.ndarray, str | None, float | None]:
    """(float32 array, its path or None, its voxel size in µm where a file records it)."""
    if isinstance(volume, (str, Path)):
        array, attrs = read_volume(volume)
        voxel = attrs.get("voxel_size_um")
        return np.asarray(array, dtype=np.float32), str(volume), None if voxel is None else float(voxel)
    array = np.asarray(volume, dtype=np.float32)
    if array.ndim != 3:
        raise TrainingError(f"{name}: expected a 3D z-y-x volume, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise TrainingError(f"{name}: holds NaN or infinite values")
    return array, None, None


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).view(np.uint8).reshape(-1).data)
    return h.hexdigest()


def _adam(parameters, learning_rate: float, device: torch.device) -> torch.optim.Adam:
    """Adam, in its fused form where torch has one for the device (CPU and CUDA).

    The fused step updates every parameter in one kernel: 0.7 instead of 3.8 ms per DeepNet
    iteration on 2 CPU cores (about 5% of an iteration, measured). It rounds differently from the
    per-tensor step, so the implementation is part of a run's fingerprint: a checkpoint written by
    the other one is not resumed.
    """
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.Adam(parameters, lr=learning_rate, fused=True)
        except (RuntimeError, TypeError):  # an older torch without the device's fused kernel
            pass
    return torch.optim.Adam(parameters, lr=learning_rate)


def _autocast(device: torch.device, precision: str):
    """bf16 autocast for the forward pass when asked (the loss and the optimizer stay float32)."""
    if precision == "float32":
        return contextlib.nullcontext()
    if precision == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise TrainingError(f"precision: {precision!r} is not allowed; expected 'float32' or 'bfloat16'")




def train_model(
    method: str,
    lres,
    hres,
    config: dict,
    out_weights: str | Path,
    out_settings: str | Path,
    out_log: str | Path,
    checkpoint_dir: str | Path,
    seed: int,
    device: str | torch.device = "cpu",
    *,
    mask: np.ndarray | None = None,
    threads: int | None = None,
    stop_after: int | None = None,
    on_iteration: Callable[[int], None] | None = None,
    augment: bool = True,
    max_validation_patches: int | None = None,
    architecture_overrides: dict | None = None,
    progress: bool = True,
    sigma_um: float | None = None,
    on_snapshot: Callable[[int, NormalizedModel], None] | None = None,
    snapshot_iterations=(),
) -> dict:
    """Train ``method`` ('deepnet' or 'srcnn') to map ``lres`` onto ``hres``; resume if interrupted.

    Parameters
    ----------
    method : 'deepnet' or 'srcnn'; its settings are the config's ``deepnet:`` / ``srcnn:`` block
        with the overrides for ``sigma_um`` (:func:`.settings.training_settings`).
    lres, hres : (nz, ny, nx) float32 material-fraction volumes on the same grid, or HDF5 paths
        (dataset ``volume``).
    config : validated config (defaults filled); ``compute.deterministic`` is honoured.
    out_weights, out_settings, out_log : ``model.safetensors``, ``model.json``, ``train_log.csv``.
    checkpoint_dir : folder of checkpoints and of the running log; a re-run with the same
        arguments resumes from it. Emptied (checkpoints removed) once the outputs are written.
    seed : seeds the weights (torch) and every batch (numpy, per iteration) and the SRCNN split.
    device : torch device (see :func:`resrecover.methods.device.acquire_device`).
    mask : boolean reconstructable-FOV mask, (nz, ny, nx) or (ny, nx)
        (:func:`resrecover.masks.fov_mask`); the loss counts only its voxels. ``None``: all voxels.
    threads : torch CPU threads (``None``: leave torch's setting).
    stop_after : stop after this iteration with a checkpoint and without final outputs (an
        interruption on purpose, for tests and time-limited jobs).
    on_iteration : called with the iteration number after each iteration (after its checkpoint).
    augment : random in-plane flips and 90° rotations of the training tiles / patches.
    max_validation_patches : evaluate SRCNN's validation loss on at most this many patches.
    architecture_overrides : constructor arguments replacing those derived from the config
        (e.g. ``{"residual": False}`` for a direct SRCNN, ``{"batch_norm": False}`` for DeepNet).
    progress : tqdm bar on stderr.
    sigma_um : the LRES blur of ``lres`` in µm: selects the block's ``sigma_overrides`` and is
        recorded in ``model.json`` (``None``: a pair of unknown blur, no override).
    on_snapshot : called as ``on_snapshot(iteration, model)`` after each iteration of
        ``snapshot_iterations``, with the current weights wrapped as a
        :class:`~resrecover.methods.modelio.NormalizedModel` in eval mode (material fraction in
        and out; training goes on afterwards). For learning curves.

    Returns
    -------
    dict with ``method``, ``iterations`` (done so far), ``finished``, ``resumed_from``,
    ``selected_iteration`` (the iteration whose weights were saved), ``final_loss``,
    ``best_val_loss``, ``seconds`` and ``seconds_per_iteration`` (of this call's iterations).
    """
    from tqdm import tqdm

    check_network(method, error=TrainingError)
    device = torch.device(device)
    x_raw, lres_path, voxel_size_um = _as_volume(lres, "lres")
    y_raw, hres_path, _ = _as_volume(hres, "hres")
    if x_raw.shape != y_raw.shape:
        raise TrainingError(
            f"hres: shape {y_raw.shape} differs from the lres shape {x_raw.shape}; expected the same grid"
        )
    fov = checked_mask(mask, x_raw.shape, error=TrainingError)
    block = training_settings(config, method, sigma_um)
    precision = str(block.get("precision", "float32"))
    # NHWC convolutions: faster on CPUs with oneDNN (measured 1.1-1.2x for DeepNet), 2D networks only
    channels_last = bool(block.get("channels_last", False)) and method == "deepnet"
    iterations = int(block["iterations"])
    checkpoint_every = int(block["checkpoint_every"])
    deterministic = bool(config.get("compute", {}).get("deterministic", True))
    architecture = {**network_architecture(method, config, sigma_um), **(architecture_overrides or {})}

    normalization = fit_normalization(x_raw, fov)
    x = normalize(x_raw, normalization).astype(np.float32)
    y = normalize(y_raw, normalization).astype(np.float32)
    del x_raw, y_raw
    fingerprint = hashlib.sha256(
        json.dumps(
            # iterations and checkpoint_every do not change what each iteration computes (unless the
            # schedule depends on the length): a run may be resumed with more iterations
            {
                "method": method,
                "seed": int(seed),
                "architecture": architecture,
                "block": {
                    k: v
                    for k, v in block.items()
                    if k not in _RESUMABLE_KEYS or (k == "iterations" and schedule_depends_on_length(block))
                },
                "augment": augment,
                "max_validation_patches": max_validation_patches,
                "data": _digest(x, y, fov),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()

    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    running_log = checkpoint_dir / RUNNING_LOG

    with torch_runtime(threads, deterministic, device):
        torch.manual_seed(int(seed))
        model = build_network(method, architecture).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = _adam(model.parameters(), float(block["learning_rate"]), device)
        fingerprint = hashlib.sha256(
            f"{fingerprint}:adam-fused={bool(optimizer.defaults.get('fused'))}".encode()
        ).hexdigest()
        if method == "deepnet":
            task = DeepNetTask(x, y, fov, block, int(seed), device, augment)
        else:
            task = SrcnnTask(x, y, fov, block, int(seed), device, augment, max_validation_patches)

        state = {
            "fingerprint": fingerprint,
            "best_val_loss": None,
            "best_iteration": None,
            "best_state": None,
            "elapsed_s": 0.0,
        }
        start = 0
        found = read_checkpoint(checkpoint_dir, fingerprint)
        if found is not None and int(found[0]["iteration"]) >= iterations:
            log.warning(
                "%s: checkpoint at iteration %d is beyond the %d iterations asked for; starting afresh",
                checkpoint_dir,
                found[0]["iteration"],
                iterations,
            )
            found = None
        if found is not None:
            meta, tensors = found
            model_state = subdict(tensors, "model.")
            check_tensors_match(model.state_dict(), model_state, checkpoint_dir)
            model.load_state_dict(model_state)
            optimizer_from_files(optimizer, meta["optimizer"], tensors)
            best = subdict(tensors, "best.")
            state.update(
                best_val_loss=meta["best_val_loss"],
                best_iteration=meta["best_iteration"],
                best_state={k: v.to(device) for k, v in best.items()} or None,
                elapsed_s=float(meta["elapsed_s"]),
            )
            restore_rng(meta["rng"], tensors)
            start = int(meta["iteration"])
            trim_log(running_log, start)
            log.info("%s: resuming %s training at iteration %d of %d", checkpoint_dir, method, start, iterations)
        else:
            remove_checkpoints(checkpoint_dir)
            trim_log(running_log, -1)
            log.info(
                "training %s for %d iterations on %s (%s voxels, seed %d)",
                method,
                iterations,
                device,
                "×".join(map(str, x.shape)),
                seed,
            )

        snapshots = {int(i) for i in snapshot_iterations}
        stop = iterations if stop_after is None else min(iterations, max(int(stop_after), start))
        session_start = time.perf_counter()
        elapsed_before = state["elapsed_s"]  # training seconds of earlier, interrupted runs
        last_parts: dict = {}
        model.train()
        bar = tqdm(
            total=iterations,
            initial=start,
            desc=f"train {method}",
            file=sys.stderr,
            disable=not progress,
            mininterval=1.0,
            dynamic_ncols=True,
        )
        # every iteration frees and re-allocates the same activations and gradients: keeping the
        # freed heap saves the 4,000-18,000 page faults per iteration glibc's trimming costs
        # (7-15% of an iteration on the CPU; methods/heap.py)
        with open(running_log, "a", newline="") as log_fh, retained_heap():
            writer = csv.DictWriter(log_fh, fieldnames=LOG_COLUMNS)
            for iteration in range(start + 1, stop + 1):
                batch = task.batch(iteration)
                if channels_last:
                    batch = tuple(t.contiguous(memory_format=torch.channels_last) for t in batch)
                learning_rate = learning_rate_at(iteration, block)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate
                optimizer.zero_grad(set_to_none=True)
                with _autocast(device, precision):
                    loss, last_parts = task.losses(model, batch)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"{method}: loss became {float(loss)} at iteration {iteration}; "
                        f"try a lower {method}.learning_rate than {block['learning_rate']}"
                    )
                loss.backward()
                optimizer.step()

                val_loss = None
                if task.validate is not None and (
                    iteration % int(block["validate_every"]) == 0 or iteration == iterations
                ):
                    val_loss = task.validate(model)
                    if state["best_val_loss"] is None or val_loss < state["best_val_loss"]:
                        state["best_val_loss"] = val_loss
                        state["best_iteration"] = iteration
                        state["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}

                elapsed = elapsed_before + time.perf_counter() - session_start
                writer.writerow(
                    {
                        "iteration": iteration,
                        "loss": fmt_log_value(last_parts.get("loss")),
                        "loss_intermediate": fmt_log_value(last_parts.get("loss_intermediate")),
                        "loss_final": fmt_log_value(last_parts.get("loss_final")),
                        "val_loss": fmt_log_value(val_loss),
                        "learning_rate": fmt_log_value(learning_rate),
                        "seconds": f"{elapsed:.3f}",
                    }
                )
                log_fh.flush()
                bar.update(1)
                if val_loss is not None:
                    bar.set_postfix(loss=f"{last_parts['loss']:.4g}", val=f"{val_loss:.4g}", refresh=False)
                else:
                    bar.set_postfix(loss=f"{last_parts['loss']:.4g}", refresh=False)

                if iteration < iterations and (iteration % checkpoint_every == 0 or iteration == stop):
                    state["elapsed_s"] = elapsed
                    write_checkpoint(checkpoint_dir, iteration, model, optimizer, state)
                if on_snapshot is not None and iteration in snapshots:
                    model.eval()
                    on_snapshot(iteration, NormalizedModel(model, normalization))
                    model.train()
                if on_iteration is not None:
                    on_iteration(iteration)
        bar.close()
        done = max(stop, start)
        run_seconds = time.perf_counter() - session_start
        summary = {
            "method": method,
            "iterations": done,
            "finished": done >= iterations,
            "resumed_from": start,
            "final_loss": last_parts.get("loss"),
            "best_val_loss": state["best_val_loss"],
            "seconds": elapsed_before + run_seconds,
            "seconds_per_iteration": run_seconds / (done - start) if done > start else None,
        }
        if done < iterations:
            summary["selected_iteration"] = None
            return summary

        if method == "srcnn" and state["best_state"] is not None:
            model.load_state_dict(state["best_state"])
            selected = state["best_iteration"]
        else:
            selected = iterations
        summary["selected_iteration"] = selected
        settings = {
            "method": method,
            "architecture": architecture,
            "normalization": normalization,
            "normalization_applied_by": "load_model (NormalizedModel): material fraction in and out",
            "input_layout": (
                "(B, n_slices, H, W): consecutive z slices as channels, H and W divisible by " "2**depth"
                if method == "deepnet"
                else "(B, 1, D, H, W)"
            ),
            "training": block,
            "seed": int(seed),
            "sigma_um": None if sigma_um is None else float(sigma_um),
            # the training input's voxel size (µm) where its file records it: the recovery's domain check
            "voxel_size_um": voxel_size_um,
            "config_hash": config_hash(config),
            "iterations": iterations,
            "selected_iteration": selected,
            "best_val_loss": state["best_val_loss"],
            "fov_masked": mask is not None,
            "augment": augment,
            "volume_shape": list(x.shape),
            "lres": lres_path,
            "hres": hres_path,
            "device": str(device),
            "torch_version": torch.__version__,
            "resrecover_version": __version__,
        }
        save_model(model, settings, out_weights, out_settings)
        with atomic_output(out_log) as tmp:
            tmp.write_bytes(running_log.read_bytes())
        # the outputs are complete: the checkpoints and the running log are no longer needed
        remove_checkpoints(checkpoint_dir)
        with contextlib.suppress(FileNotFoundError):
            running_log.unlink()
        with contextlib.suppress(OSError):
            checkpoint_dir.rmdir()
        log.info("%s: trained %s (%d iterations, weights of iteration %s)", out_weights, method, iterations, selected)
        return summary


def train_job(job, config: dict, prefer_device: str = "auto") -> dict:
    """Rule ``train``: one member of one network at one σ, trained on two HDF5 volumes.

    ``job`` is Snakemake's ``snakemake`` object (or any object alike): ``input.lres``,
    ``input.hres``, ``output.weights``, ``output.settings``, ``output.train_log``,
    ``params.checkpoint_dir``, ``threads`` and ``wildcards.network``, ``wildcards.sigma``,
    ``wildcards.member``. The seed is :func:`resrecover.config.training_seed` of the config's
    seed, the network, σ and the member: member 0 is the study's model, members 1, 2, ... the trust
    ensemble's extra networks (other initial weights, other tiles, for SRCNN another split). The
    loss is restricted to the reconstructable FOV of the cone-beam geometry
    (:func:`resrecover.masks.fov_mask`); torch uses ``compute.torch_threads`` threads, or the job's
    when that is 0; the device is a free GPU when there is one
    (:func:`resrecover.methods.device.acquire_device`).
    """
    from ...config import training_seed
    from ...io import volume_info
    from ...masks import fov_mask
    from ...snakemake_support import ensemble_member
    from ..device import acquire_device

    wildcards = job.wildcards
    sigma_um = float(wildcards.sigma)
    mask = fov_mask(config, volume_info(job.input.lres)["shape"])
    with acquire_device(prefer_device) as device:
        return train_model(
            wildcards.network,
            job.input.lres,
            job.input.hres,
            config,
            job.output.weights,
            job.output.settings,
            job.output.train_log,
            job.params.checkpoint_dir,
            training_seed(config["seed"], wildcards.network, sigma_um, ensemble_member(wildcards)),
            device,
            mask=mask,
            threads=torch_thread_count(config, job.threads),
            sigma_um=sigma_um,
        )
