"""Recovery methods (docs/design.md#recovery): DeepNet (2.5D U-Net), SRCNN-3D, Richardson-Lucy, and their plumbing.

- :mod:`.deepnet`, :mod:`.srcnn`: the two networks;
- :mod:`.training`: :func:`train_model`, resumable training on one registered LRES/HRES pair;
- :mod:`.modelio`: :func:`save_model` / :func:`load_model` (safetensors + JSON settings, no pickle);
- :mod:`.device`: :func:`acquire_device`, one GPU per concurrent job;
- :mod:`.tiling`, :mod:`.infer`, :mod:`.rl`: inference over whole volumes and Richardson-Lucy.

Names are imported lazily so that ``import resrecover.methods`` does not load torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DeepNet": "deepnet",
    "SRCNN3D": "srcnn",
    "train_model": "training",
    "save_model": "modelio",
    "load_model": "modelio",
    "NormalizedModel": "modelio",
    "normalize": "modelio",
    "denormalize": "modelio",
    "acquire_device": "device",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
