"""Checkpoints of a training run (safetensors + JSON, never pickle) and its running CSV log.

A checkpoint holds the model, the optimizer state, the RNG states (torch, numpy, python), the
iteration, the best-validation bookkeeping and the elapsed seconds. The JSON is written last and
holds the sha256 of the tensors file, so a checkpoint torn by a kill is recognised and skipped;
one whose fingerprint (method, settings, seed, data) differs belongs to another run and is ignored.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import random
from pathlib import Path

import numpy as np
import torch

from ... import ResrecoverError
from ...io import atomic_output
from ..modelio import load_tensors, read_json, save_tensors, sha256_file, write_json

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "resrecover-checkpoint/1"
RUNNING_LOG = "train_log.csv"
LOG_COLUMNS = ["iteration", "loss", "loss_intermediate", "loss_final", "val_loss", "learning_rate", "seconds"]




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


def restore_rng(state: dict, tensors: dict[str, torch.Tensor]) -> None:
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


def optimizer_from_files(optimizer: torch.optim.Optimizer, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
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
    # The files hold each moment as a contiguous tensor, but a channels_last network's parameters
    # are NHWC: give every per-parameter tensor its parameter's memory layout again. The fused
    # Adam step walks parameter and moments through memory in the same order, so a layout
    # mismatch would pair the wrong elements (and a per-tensor step would round differently).
    for group in optimizer.param_groups:
        for param in group["params"]:
            entries = optimizer.state.get(param, {})
            for name, value in entries.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    entries[name] = torch.empty_like(param, dtype=value.dtype).copy_(value)


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


def remove_checkpoints(checkpoint_dir: Path, keep: int | None = None) -> None:
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


def write_checkpoint(checkpoint_dir: Path, iteration: int, model, optimizer, state: dict) -> None:
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
    remove_checkpoints(checkpoint_dir, keep=iteration)


def read_checkpoint(checkpoint_dir: Path, fingerprint: str):
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


def subdict(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


# ---------------------------------------------------------------------------------------------
# the running log (kept in checkpoint_dir until training ends: Snakemake deletes a failed job's
# outputs, and the log must survive a resume)
# ---------------------------------------------------------------------------------------------


def trim_log(path: Path, last_iteration: int) -> None:
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


def fmt_log_value(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)
