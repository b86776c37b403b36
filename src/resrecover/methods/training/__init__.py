"""Training DeepNet and SRCNN-3D on one registered LRES/HRES pair, resumable bit for bit.

- :mod:`.settings`: one settings object per network (the config block resolved for one σ), the
  learning-rate schedule, the network's constructor arguments;
- :mod:`.tasks`: what one iteration draws (tiles, patches) and minimizes (the masked losses);
- :mod:`.checkpoint`: checkpoints (safetensors + JSON) and the running log;
- :mod:`.loop`: :func:`train_model` and :func:`train_job` (rule ``train``).
"""

from .checkpoint import LOG_COLUMNS
from .loop import train_job, train_model
from .settings import TrainingError, learning_rate_at, network_architecture, training_settings
from .tasks import patch_corners, split_patches, tile_corners_yx

__all__ = [
    "LOG_COLUMNS",
    "TrainingError",
    "learning_rate_at",
    "network_architecture",
    "patch_corners",
    "split_patches",
    "tile_corners_yx",
    "train_job",
    "train_model",
    "training_settings",
]
