"""Training DeepNet and SRCNN-3D on one registered LRES/HRES pair, resumable bit for bit (SPEC §4.3).

:func:`train_model` is the one entry point (the ``train`` rule's script calls it). It

1. fits the intensity normalization on the training input (stored with the model);
2. trains with Adam, drawing every batch from a generator seeded by ``(seed, iteration)``, so the
   data of an iteration does not depend on how many times the run was interrupted;
3. writes a checkpoint every ``checkpoint_every`` iterations into ``checkpoint_dir``: model,
   optimizer state, RNG states (torch, numpy, python), iteration, best-validation bookkeeping and
   the running training log. Tensors go into safetensors, everything else into JSON (no pickle);
   both files are written atomically and the JSON holds the sha256 of the tensors file, so a
   checkpoint torn by a kill is recognised and skipped;
4. on a re-run with the same arguments resumes from the newest valid checkpoint whose fingerprint
   (method, training settings, seed, data) matches, and on the CPU ends with weights identical
   to those of an uninterrupted run;
5. writes ``model.safetensors`` + ``model.json`` (:func:`resrecover.methods.modelio.save_model`) and
   the CSV training log, then deletes the checkpoints (the final outputs replace them).

DeepNet (paper §2.1.1): random tiles of ``tile_px``² × ``n_slices`` consecutive slices with random
in-plane flips and 90° rotations; loss = w1·SSE(intermediate) + w2·SSE(final) over the voxels of
the reconstructable FOV; no validation split (as in the paper); the last weights are kept.

SRCNN-3D (paper §2.1.2): 3D patches of ``patch_px``³ on a grid of stride ``patch_stride_px`` whose
centre lies in the FOV, split into training and validation patches; MSE over FOV voxels; the
weights with the lowest validation loss (evaluated every ``validate_every`` iterations and at the
end) are kept.

Logged losses are mean squared errors per FOV voxel in normalized units (material fraction
divided by the fitted scale); for DeepNet ``loss = w1·loss_intermediate + w2·loss_final``.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import ResrecoverError, __version__
from ..config import config_hash
from ..io import atomic_output, read_volume
from ..masks import checked_mask
from .modelio import (
    build_network,
    check_tensors_match,
    fit_normalization,
    load_tensors,
    normalize,
    read_json,
    save_model,
    save_tensors,
    sha256_file,
    write_json,
)

log = logging.getLogger(__name__)

NETWORKS = ("deepnet", "srcnn")
LOG_COLUMNS = ["iteration", "loss", "loss_intermediate", "loss_final", "val_loss", "seconds"]
CHECKPOINT_FORMAT = "resrecover-checkpoint/1"
RUNNING_LOG = "train_log.csv"

# independent random streams derived from the run's seed
_STREAM_BATCH = 1
_STREAM_SPLIT = 2


class TrainingError(ResrecoverError):
    """Training cannot start with these inputs or settings."""


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------


def _as_volume(volume, name: str) -> tuple[np.ndarray, str | None]:
    if isinstance(volume, (str, Path)):
        array, _ = read_volume(volume)
        return np.asarray(array, dtype=np.float32), str(volume)
    array = np.asarray(volume, dtype=np.float32)
    if array.ndim != 3:
        raise TrainingError(f"{name}: expected a 3D z-y-x volume, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise TrainingError(f"{name}: holds NaN or infinite values")
    return array, None


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).view(np.uint8).reshape(-1).data)
    return h.hexdigest()


def network_architecture(method: str, config: dict) -> dict:
    """Constructor arguments of ``method``'s network from the config's ``deepnet:``/``srcnn:`` block."""
    if method == "deepnet":
        block = config["deepnet"]
        return {
            "n_slices": int(block["n_slices"]),
            "base_channels": int(block["base_channels"]),
            "depth": int(block["depth"]),
            "extra_convs": int(block["extra_convs"]),
            "batch_norm": True,
        }
    if method == "srcnn":
        block = config["srcnn"]
        return {"kernels": list(block["kernels"]), "filters": list(block["filters"]), "residual": True}
    raise TrainingError(f"method: {method!r} is not a network; expected one of {', '.join(NETWORKS)}")


# ---------------------------------------------------------------------------------------------
# batches and losses of each network
# ---------------------------------------------------------------------------------------------


def _augment(arrays: list[np.ndarray], rng: np.random.Generator, axes_yx=(-2, -1)) -> list[np.ndarray]:
    """The same random in-plane flips and 90° rotation applied to every array of ``arrays``."""
    flip_y, flip_x, quarter_turns = rng.integers(0, 2), rng.integers(0, 2), rng.integers(0, 4)
    out = []
    for a in arrays:
        if flip_y:
            a = np.flip(a, axes_yx[0])
        if flip_x:
            a = np.flip(a, axes_yx[1])
        out.append(np.ascontiguousarray(np.rot90(a, int(quarter_turns), axes=axes_yx)))
    return out


def _masked_sse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return ((prediction - target) ** 2 * mask).sum()


class _DeepNetTask:
    """Random (n_slices, tile, tile) stacks and the two-term FOV loss of DeepNet."""

    def __init__(self, x, y, mask, block, seed, device, augment=True):
        self.x, self.y, self.mask = x, y, mask
        self.n = int(block["n_slices"])
        self.tile = int(block["tile_px"])
        self.batch_size = int(block["batch_size"])
        self.w1, self.w2 = (float(w) for w in block["loss_weights"])
        self.seed, self.device, self.augment = seed, device, augment
        nz, ny, nx = x.shape
        if nz < self.n:
            raise TrainingError(f"deepnet.n_slices: {self.n} exceeds the volume's {nz} slices")
        if self.tile > min(ny, nx):
            raise TrainingError(f"deepnet.tile_px: {self.tile} exceeds the slice size {ny}×{nx}")
        if self.tile % 2 ** int(block["depth"]):
            raise TrainingError(f"deepnet.tile_px: {self.tile} is not divisible by 2**deepnet.depth")

    def batch(self, iteration: int):
        rng = np.random.default_rng([self.seed, _STREAM_BATCH, iteration])
        nz, ny, nx = self.x.shape
        xs, ys, ms = [], [], []
        for _ in range(self.batch_size):
            z0 = int(rng.integers(0, nz - self.n + 1))
            y0 = int(rng.integers(0, ny - self.tile + 1))
            x0 = int(rng.integers(0, nx - self.tile + 1))
            window = (slice(z0, z0 + self.n), slice(y0, y0 + self.tile), slice(x0, x0 + self.tile))
            tiles = [self.x[window], self.y[window], self.mask[window].astype(np.float32)]
            if self.augment:
                tiles = _augment(tiles, rng)
            xs.append(tiles[0])
            ys.append(tiles[1])
            ms.append(tiles[2])
        return tuple(torch.from_numpy(np.stack(a)).to(self.device) for a in (xs, ys, ms))

    def losses(self, model, batch):
        x, y, m = batch
        final, intermediate = model(x, return_intermediate=True)
        sse_int = _masked_sse(intermediate, y, m)
        sse_final = _masked_sse(final, y, m)
        loss = self.w1 * sse_int + self.w2 * sse_final
        count = max(float(m.sum()), 1.0)
        return loss, {
            "loss_intermediate": float(sse_int.detach()) / count,
            "loss_final": float(sse_final.detach()) / count,
            "loss": float(loss.detach()) / count,
        }

    validate = None


def patch_corners(shape, patch_px: int, stride_px: int, mask: np.ndarray | None = None) -> np.ndarray:
    """(n, 3) z-y-x corners of the ``patch_px``³ patches on a grid of ``stride_px`` inside ``shape``.

    With ``mask``, only patches whose centre voxel lies in the mask are kept.
    """
    axes = [np.arange(0, n - patch_px + 1, stride_px) for n in shape]
    if any(len(a) == 0 for a in axes):
        return np.zeros((0, 3), dtype=np.int64)
    corners = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    if mask is not None:
        centre = corners + patch_px // 2
        corners = corners[mask[centre[:, 0], centre[:, 1], centre[:, 2]]]
    return corners


def split_patches(corners: np.ndarray, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of patch corners into (training, validation); both non-empty."""
    n = len(corners)
    if n < 2:
        raise TrainingError(f"srcnn: only {n} patch(es) in the FOV; need at least 2 (reduce srcnn.patch_px)")
    order = np.random.default_rng([seed, _STREAM_SPLIT]).permutation(n)
    n_val = min(max(1, int(round(validation_fraction * n))), n - 1)
    return corners[np.sort(order[n_val:])], corners[np.sort(order[:n_val])]


class _SrcnnTask:
    """3D patches, a training/validation split and the masked MSE of SRCNN-3D."""

    def __init__(self, x, y, mask, block, seed, device, augment=True, max_validation_patches=None):
        self.x, self.y, self.mask = x, y, mask
        self.p = int(block["patch_px"])
        self.batch_size = int(block["batch_size"])
        self.seed, self.device, self.augment = seed, device, augment
        if self.p > min(x.shape):
            raise TrainingError(f"srcnn.patch_px: {self.p} exceeds the volume shape {x.shape}")
        corners = patch_corners(x.shape, self.p, int(block["patch_stride_px"]), mask)
        self.train_corners, self.val_corners = split_patches(corners, float(block["validation_fraction"]), seed)
        if max_validation_patches is not None:
            self.val_corners = self.val_corners[: int(max_validation_patches)]

    def _patches(self, corners):
        p = self.p
        windows = [(slice(z, z + p), slice(y, y + p), slice(x, x + p)) for z, y, x in corners]
        return [[self.x[w], self.y[w], self.mask[w].astype(np.float32)] for w in windows]

    @staticmethod
    def _to_batch(patches, device):
        return tuple(torch.from_numpy(np.stack([pt[i] for pt in patches])[:, None]).to(device) for i in range(3))

    def batch(self, iteration: int):
        rng = np.random.default_rng([self.seed, _STREAM_BATCH, iteration])
        picks = rng.integers(0, len(self.train_corners), self.batch_size)
        patches = self._patches(self.train_corners[picks])
        if self.augment:
            patches = [_augment(pt, rng) for pt in patches]
        return self._to_batch(patches, self.device)

    def losses(self, model, batch):
        x, y, m = batch
        sse = _masked_sse(model(x), y, m)
        count = m.sum().clamp_min(1.0)
        loss = sse / count
        value = float(loss.detach())
        return loss, {"loss": value, "loss_final": value}

    @torch.no_grad()
    def validate(self, model) -> float:
        """Mean squared error per FOV voxel over all validation patches (eval mode)."""
        was_training = model.training
        model.eval()
        sse, count = 0.0, 0.0
        for start in range(0, len(self.val_corners), self.batch_size):
            x, y, m = self._to_batch(self._patches(self.val_corners[start : start + self.batch_size]), self.device)
            sse += float(_masked_sse(model(x), y, m))
            count += float(m.sum())
        model.train(was_training)
        return sse / max(count, 1.0)


# ---------------------------------------------------------------------------------------------
# torch runtime settings, restored afterwards (tests and notebooks share the interpreter)
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def torch_runtime(threads: int | None, deterministic: bool, device: torch.device):
    """Set torch's CPU threads and deterministic algorithms for the block, then restore them.

    On CUDA, deterministic mode only warns about kernels without a deterministic version (some
    backward passes, e.g. of max-pooling) instead of failing; bit-identical resume is promised on
    the CPU only.
    """
    previous = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    try:
        if threads:
            torch.set_num_threads(int(threads))
        if deterministic:
            if device.type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1], warn_only=previous[2])
        torch.backends.cudnn.benchmark = previous[3]
        torch.backends.cudnn.deterministic = previous[4]


# ---------------------------------------------------------------------------------------------
# checkpoints: safetensors + JSON, never pickle
# ---------------------------------------------------------------------------------------------


def _rng_state_json() -> dict:
    np_state = np.random.get_state(legacy=False)
    np_state = {
        "bit_generator": np_state["bit_generator"],
        "state": {"key": np_state["state"]["key"].tolist(), "pos": int(np_state["state"]["pos"])},
        "has_gauss": int(np_state["has_gauss"]),
        "gauss": float(np_state["gauss"]),
    }
    version, internal, gauss_next = random.getstate()
    return {"numpy": np_state, "python": [version, list(internal), gauss_next]}


def _restore_rng(state: dict, tensors: dict[str, torch.Tensor]) -> None:
    np_state = dict(state["numpy"])
    np_state["state"] = {"key": np.asarray(np_state["state"]["key"], dtype=np.uint32), "pos": np_state["state"]["pos"]}
    np.random.set_state(np_state)
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        cuda_states = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng.cuda."))]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state into tensors (flattened keys ``optim.<param>.<name>``) and JSON."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_id, entries in state["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optim.{param_id}.{name}"] = value
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    groups = []
    for group in state["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()})
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_from_files(optimizer: torch.optim.Optimizer, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, param_id, name = key.split(".", 2)
            state.setdefault(int(param_id), {})[name] = value
    for param_id, entries in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(entries)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _checkpoint_paths(checkpoint_dir: Path, iteration: int) -> tuple[Path, Path]:
    stem = checkpoint_dir / f"checkpoint-{iteration:08d}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def _list_checkpoints(checkpoint_dir: Path) -> list[int]:
    if not checkpoint_dir.is_dir():
        return []
    found = []
    for path in checkpoint_dir.glob("checkpoint-*.json"):
        with contextlib.suppress(ValueError):
            found.append(int(path.stem.split("-")[1]))
    return sorted(found)


def _remove_checkpoints(checkpoint_dir: Path, keep: int | None = None) -> None:
    """Delete every checkpoint but ``keep``, and temporary files left by killed writers."""
    if not checkpoint_dir.is_dir():
        return
    for path in list(checkpoint_dir.glob(".checkpoint-*.part*")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    for path in list(checkpoint_dir.glob("checkpoint-*")):
        try:
            iteration = int(path.name.split("-")[1].split(".")[0])
        except ValueError:
            continue
        if iteration != keep:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _write_checkpoint(checkpoint_dir: Path, iteration: int, model, optimizer, state: dict) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if state.get("best_state") is not None:
        tensors.update({f"best.{k}": v for k, v in state["best_state"].items()})
    optim_tensors, optim_meta = _optimizer_to_files(optimizer)
    tensors.update(optim_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i:02d}"] = s
    weights_path, meta_path = _checkpoint_paths(checkpoint_dir, iteration)
    digest = save_tensors(tensors, weights_path)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "iteration": iteration,
        "fingerprint": state["fingerprint"],
        "tensors_sha256": digest,
        "optimizer": optim_meta,
        "rng": _rng_state_json(),
        "best_val_loss": state["best_val_loss"],
        "best_iteration": state["best_iteration"],
        "elapsed_s": state["elapsed_s"],
    }
    write_json(meta, meta_path)  # written last: a checkpoint without its JSON does not exist
    _remove_checkpoints(checkpoint_dir, keep=iteration)


def _read_checkpoint(checkpoint_dir: Path, fingerprint: str):
    """The newest intact checkpoint of this run as ``(meta, tensors)``, or ``None``."""
    for iteration in reversed(_list_checkpoints(checkpoint_dir)):
        weights_path, meta_path = _checkpoint_paths(checkpoint_dir, iteration)
        try:
            meta = read_json(meta_path)
            if meta.get("format") != CHECKPOINT_FORMAT or meta.get("fingerprint") != fingerprint:
                log.warning("%s: belongs to another training run; ignored", meta_path)
                continue
            if not weights_path.is_file() or sha256_file(weights_path) != meta["tensors_sha256"]:
                log.warning("%s: tensors file missing or torn; ignored", weights_path)
                continue
            return meta, load_tensors(weights_path)
        except ResrecoverError as exc:
            log.warning("checkpoint ignored: %s", exc)
    return None


def _subdict(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


# ---------------------------------------------------------------------------------------------
# the running log (kept in checkpoint_dir until training ends: Snakemake deletes a failed job's
# outputs, and the log must survive a resume)
# ---------------------------------------------------------------------------------------------


def _trim_log(path: Path, last_iteration: int) -> None:
    """Keep the rows up to ``last_iteration`` (rows written after the checkpoint are redone)."""
    rows = []
    if path.is_file():
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                with contextlib.suppress(KeyError, ValueError, TypeError):
                    if int(row["iteration"]) <= last_iteration:
                        rows.append(row)
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
            writer.writeheader()
            writer.writerows({k: row.get(k, "") for k in LOG_COLUMNS} for row in rows)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------------
# the entry point
# ---------------------------------------------------------------------------------------------


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
) -> dict:
    """Train ``method`` ('deepnet' or 'srcnn') to map ``lres`` onto ``hres``; resume if interrupted.

    Parameters
    ----------
    method : 'deepnet' or 'srcnn'; its settings are the config's ``deepnet:`` / ``srcnn:`` block.
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

    Returns
    -------
    dict with ``method``, ``iterations`` (done so far), ``finished``, ``resumed_from``,
    ``selected_iteration`` (the iteration whose weights were saved), ``final_loss``,
    ``best_val_loss``, ``seconds`` and ``seconds_per_iteration`` (of this call's iterations).
    """
    from tqdm import tqdm

    if method not in NETWORKS:
        raise TrainingError(f"method: {method!r} is not a network; expected one of {', '.join(NETWORKS)}")
    device = torch.device(device)
    x_raw, lres_path = _as_volume(lres, "lres")
    y_raw, hres_path = _as_volume(hres, "hres")
    if x_raw.shape != y_raw.shape:
        raise TrainingError(
            f"hres: shape {y_raw.shape} differs from the lres shape {x_raw.shape}; expected the same grid"
        )
    fov = checked_mask(mask, x_raw.shape, error=TrainingError)
    block = copy.deepcopy(config[method])
    iterations = int(block["iterations"])
    checkpoint_every = int(block["checkpoint_every"])
    deterministic = bool(config.get("compute", {}).get("deterministic", True))
    architecture = {**network_architecture(method, config), **(architecture_overrides or {})}

    normalization = fit_normalization(x_raw, fov)
    x = normalize(x_raw, normalization).astype(np.float32)
    y = normalize(y_raw, normalization).astype(np.float32)
    del x_raw, y_raw
    fingerprint = hashlib.sha256(
        json.dumps(
            # iterations and checkpoint_every do not change what each iteration computes: a run
            # may be resumed with more iterations or other checkpoint spacing
            {
                "method": method,
                "seed": int(seed),
                "architecture": architecture,
                "block": {k: v for k, v in block.items() if k not in ("iterations", "checkpoint_every")},
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
        optimizer = torch.optim.Adam(model.parameters(), lr=float(block["learning_rate"]))
        if method == "deepnet":
            task = _DeepNetTask(x, y, fov, block, int(seed), device, augment)
        else:
            task = _SrcnnTask(x, y, fov, block, int(seed), device, augment, max_validation_patches)

        state = {
            "fingerprint": fingerprint,
            "best_val_loss": None,
            "best_iteration": None,
            "best_state": None,
            "elapsed_s": 0.0,
        }
        start = 0
        found = _read_checkpoint(checkpoint_dir, fingerprint)
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
            model_state = _subdict(tensors, "model.")
            check_tensors_match(model.state_dict(), model_state, checkpoint_dir)
            model.load_state_dict(model_state)
            _optimizer_from_files(optimizer, meta["optimizer"], tensors)
            best = _subdict(tensors, "best.")
            state.update(
                best_val_loss=meta["best_val_loss"],
                best_iteration=meta["best_iteration"],
                best_state={k: v.to(device) for k, v in best.items()} or None,
                elapsed_s=float(meta["elapsed_s"]),
            )
            _restore_rng(meta["rng"], tensors)
            start = int(meta["iteration"])
            _trim_log(running_log, start)
            log.info("%s: resuming %s training at iteration %d of %d", checkpoint_dir, method, start, iterations)
        else:
            _remove_checkpoints(checkpoint_dir)
            _trim_log(running_log, -1)
            log.info(
                "training %s for %d iterations on %s (%s voxels, seed %d)",
                method,
                iterations,
                device,
                "×".join(map(str, x.shape)),
                seed,
            )

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
        with open(running_log, "a", newline="") as log_fh:
            writer = csv.DictWriter(log_fh, fieldnames=LOG_COLUMNS)
            for iteration in range(start + 1, stop + 1):
                batch = task.batch(iteration)
                optimizer.zero_grad(set_to_none=True)
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
                        "loss": _fmt(last_parts.get("loss")),
                        "loss_intermediate": _fmt(last_parts.get("loss_intermediate")),
                        "loss_final": _fmt(last_parts.get("loss_final")),
                        "val_loss": _fmt(val_loss),
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
                    _write_checkpoint(checkpoint_dir, iteration, model, optimizer, state)
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
        _remove_checkpoints(checkpoint_dir)
        with contextlib.suppress(FileNotFoundError):
            running_log.unlink()
        with contextlib.suppress(OSError):
            checkpoint_dir.rmdir()
        log.info("%s: trained %s (%d iterations, weights of iteration %s)", out_weights, method, iterations, selected)
        return summary


def train_from_files(
    method: str,
    lres_path: str | Path,
    hres_path: str | Path,
    config: dict,
    out_weights: str | Path,
    out_settings: str | Path,
    out_log: str | Path,
    checkpoint_dir: str | Path,
    seed: int,
    threads: int = 1,
    prefer_device: str = "auto",
) -> dict:
    """The ``train`` rule: train on two HDF5 volumes with the loss restricted to the config's FOV.

    The reconstructable FOV comes from the cone-beam geometry (:func:`resrecover.masks.fov_mask`);
    torch uses ``compute.torch_threads`` threads, or ``threads`` (Snakemake's) when that is 0; the
    device is a free GPU when there is one (:func:`resrecover.methods.device.acquire_device`).
    """
    from ..io import volume_info
    from ..masks import fov_mask
    from .device import acquire_device

    shape = volume_info(lres_path)["shape"]
    mask = fov_mask(config, shape)
    torch_threads = int(config.get("compute", {}).get("torch_threads", 0)) or int(threads)
    with acquire_device(prefer_device) as device:
        return train_model(
            method,
            lres_path,
            hres_path,
            config,
            out_weights,
            out_settings,
            out_log,
            checkpoint_dir,
            seed,
            device,
            mask=mask,
            threads=torch_threads,
        )
