"""Model files: weights as safetensors, settings as JSON, checked against each other on load.

A trained model is two files written side by side (docs/results.md#models):

- ``model.safetensors``: the network's tensors only (no code, no pickle);
- ``model.json``: what is needed to rebuild and use it: ``method``, ``architecture`` (constructor
  arguments), ``normalization`` (``offset``, ``scale``), the training config, seed, iteration
  count, the sha256 of the weights file, the tensor names and shapes, and the resrecover version.

:func:`load_model` refuses a weights file that is not safetensors (a pickle or ``torch.save``
archive is never unpickled) and a settings file that does not describe the weights beside it. It
returns the network wrapped in :class:`NormalizedModel`, which applies the stored normalization,
so callers feed material-fraction volumes in and get material-fraction volumes out.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import ResrecoverError, __version__
from ..io import atomic_output

SETTINGS_FORMAT = "resrecover-model/1"


class ModelFileError(ResrecoverError):
    """A model's weights or settings file is missing, unsafe, corrupt or does not match its partner."""


# ---------------------------------------------------------------------------------------------
# normalization
# ---------------------------------------------------------------------------------------------


def fit_normalization(volume: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Offset and scale that map ``volume`` (inside ``mask``) to zero mean and unit variance.

    Fitted on the training input and applied to input and target alike, so that the network's
    residual (target - input) keeps its meaning. Volumes are material fraction (≈ 0..1) already;
    the normalization is still fitted and stored so that other intensity scales (own scans) work.

    Returns ``{"offset": mean, "scale": std, "fitted_on": "input inside the FOV"}``.
    """
    values = np.asarray(volume, dtype=np.float64)
    if mask is not None:
        values = values[np.broadcast_to(np.asarray(mask, bool), values.shape)]
    if values.size == 0:
        raise ResrecoverError("normalization: the FOV mask selects no voxel of the training input")
    offset = float(values.mean())
    scale = float(values.std())
    if not np.isfinite(scale) or scale <= 1e-12:
        scale = 1.0  # a constant input: keep values unscaled rather than divide by zero
    return {"offset": offset, "scale": scale, "fitted_on": "training input inside the FOV (mean, std)"}


def normalize(array, normalization: dict):
    """``(array - offset) / scale`` for a numpy array or a torch tensor."""
    return (array - normalization["offset"]) / normalization["scale"]


def denormalize(array, normalization: dict):
    """Inverse of :func:`normalize`."""
    return array * normalization["scale"] + normalization["offset"]


class NormalizedModel(nn.Module):
    """A trained network with its normalization: material fraction in, material fraction out.

    ``forward`` takes the network's input layout ((B, n_slices, H, W) for DeepNet, (B, 1, D, H, W)
    for SRCNN-3D) and passes keyword arguments through (``return_intermediate`` of DeepNet).
    The raw network is ``.network``.
    """

    def __init__(self, network: nn.Module, normalization: dict):
        super().__init__()
        self.network = network
        self.normalization = {"offset": float(normalization["offset"]), "scale": float(normalization["scale"])}

    def forward(self, x: torch.Tensor, **kwargs):
        out = self.network(normalize(x, self.normalization), **kwargs)
        if isinstance(out, tuple):
            return tuple(denormalize(o, self.normalization) for o in out)
        return denormalize(out, self.normalization)


# ---------------------------------------------------------------------------------------------
# building networks from settings
# ---------------------------------------------------------------------------------------------


def build_network(method: str, architecture: dict) -> nn.Module:
    """A fresh network of ``method`` ('deepnet' or 'srcnn') from its constructor arguments."""
    if method == "deepnet":
        from .deepnet import DeepNet

        return DeepNet(**architecture)
    if method == "srcnn":
        from .srcnn import SRCNN3D

        return SRCNN3D(**architecture)
    raise ResrecoverError(f"method: {method!r} is not a network; expected 'deepnet' or 'srcnn'")


def _unwrap(model: nn.Module) -> nn.Module:
    return model.network if isinstance(model, NormalizedModel) else model


# ---------------------------------------------------------------------------------------------
# safetensors files
# ---------------------------------------------------------------------------------------------


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_safetensors_file(path: str | Path) -> None:
    """Raise :class:`ModelFileError` unless ``path`` looks like a safetensors file.

    A file is accepted when it starts with an 8-byte header length followed by a JSON header of
    that length. Anything else is refused without being read further; pickle streams
    (``pickle.dumps``, legacy ``torch.save``) and zip archives (``torch.save``'s default format,
    which holds a pickle) are named as "pickle payload refused".
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: weights file not found")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        header_len = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        header = fh.read(header_len) if 2 <= header_len <= min(size - 8, 100_000_000) else b""
    # a safetensors file: 8-byte little-endian header length, then a JSON object of that length
    if header[:1] == b"{":
        try:
            json.loads(header)
            return
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        raise ModelFileError(f"{path}: pickle payload refused; expected a safetensors file")
    if head[:4] == b"PK\x03\x04":
        raise ModelFileError(
            f"{path}: pickle payload refused (zip archive as written by torch.save); expected a safetensors file"
        )
    raise ModelFileError(f"{path}: not a safetensors file (no valid header in its {size} bytes)")


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> str:
    """Write ``tensors`` atomically as safetensors; return the file's sha256."""
    from safetensors.torch import save_file

    plain = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    with atomic_output(path) as tmp:
        save_file(plain, str(tmp), metadata=metadata)
        digest = sha256_file(tmp)
    return digest


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file onto the CPU after :func:`check_safetensors_file`."""
    from safetensors.torch import load_file

    check_safetensors_file(path)
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise ModelFileError(f"{path}: unreadable safetensors file ({str(exc).splitlines()[0]})") from exc


def write_json(data: Any, path: str | Path) -> None:
    """Write JSON atomically (sorted keys, indented)."""
    with atomic_output(path) as tmp:
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: settings file not found")
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------


def save_model(model: nn.Module, settings: dict, weights_path: str | Path, settings_path: str | Path) -> dict:
    """Write the network's weights (safetensors) and its settings (JSON), both atomically.

    ``settings`` must hold ``method``, ``architecture`` and ``normalization``; this function adds
    ``weights_sha256``, ``tensors`` (name -> shape), ``format`` and ``resrecover_version``.
    The weights are written first, so a settings file never points at weights that are not there.
    Returns the settings as written.
    """
    for key in ("method", "architecture", "normalization"):
        if key not in settings:
            raise ResrecoverError(f"{settings_path}: settings lack the key {key!r}")
    state = _unwrap(model).state_dict()
    # one metadata entry only: safetensors orders several entries differently from run to run,
    # and identical weights must give identical files (and hashes)
    digest = save_tensors(state, weights_path, metadata={"format": f"{SETTINGS_FORMAT} {settings['method']}"})
    written = dict(settings)
    written.update(
        {
            "format": SETTINGS_FORMAT,
            "weights_file": Path(weights_path).name,
            "weights_sha256": digest,
            "tensors": {name: list(t.shape) for name, t in state.items()},
            "resrecover_version": __version__,
        }
    )
    write_json(written, settings_path)
    return written


def load_model(weights_path: str | Path, settings_path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild a trained model from its two files; return ``(model in eval mode, settings)``.

    The model is a :class:`NormalizedModel` (material fraction in and out) on ``device``.
    Raises :class:`ModelFileError` (one line naming the file) for a weights file that is not
    safetensors (pickle payloads are refused, never loaded), a settings file that is not JSON or
    lacks keys, a sha256 that differs from the weights file, or tensors that are missing, extra
    or of another shape than the rebuilt network's.
    """
    weights_path, settings_path = Path(weights_path), Path(settings_path)
    check_safetensors_file(weights_path)
    settings = read_json(settings_path)
    for key in ("method", "architecture", "normalization", "weights_sha256"):
        if key not in settings:
            raise ModelFileError(f"{settings_path}: settings lack the key {key!r}")
    digest = sha256_file(weights_path)
    if digest != settings["weights_sha256"]:
        raise ModelFileError(
            f"{settings_path}: weights_sha256 {settings['weights_sha256'][:12]}… does not match "
            f"{weights_path} (sha256 {digest[:12]}…); the settings belong to other weights"
        )
    try:
        network = build_network(settings["method"], settings["architecture"])
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{settings_path}: architecture {settings['architecture']} is invalid ({exc})") from exc
    tensors = load_tensors(weights_path)
    check_tensors_match(network.state_dict(), tensors, weights_path)
    network.load_state_dict(tensors, strict=True)
    model = NormalizedModel(network, settings["normalization"]).to(device)
    model.eval()
    return model, settings


def check_tensors_match(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], path: str | Path) -> None:
    """Raise :class:`ModelFileError` naming ``path`` unless ``found`` has the names and shapes of ``expected``."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:3]}{'…' if len(missing) > 3 else ''}")
        if extra:
            parts.append(f"unexpected tensors {extra[:3]}{'…' if len(extra) > 3 else ''}")
        raise ModelFileError(f"{path}: does not match the network in its settings: {'; '.join(parts)}")
    for name, tensor in expected.items():
        if tuple(found[name].shape) != tuple(tensor.shape):
            raise ModelFileError(
                f"{path}: tensor {name!r} has shape {tuple(found[name].shape)}; the network in its settings "
                f"expects {tuple(tensor.shape)}"
            )
