"""Is there a CUDA GPU? Asked without importing torch or ASTRA (cheap, safe on CPU-only hosts)."""

from __future__ import annotations

import os
import shutil
import subprocess


def cuda_device_count() -> int:
    """Number of NVIDIA GPUs visible to this process (``CUDA_VISIBLE_DEVICES`` respected), 0 if none."""
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
