import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")

# Keep ITK/torch from oversubscribing the two cores when tests run workflows.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def run_snakemake(*args, cwd=REPO, timeout=1800, check=True):
    """Run the real snakemake CLI of this venv; return the CompletedProcess (stdout+stderr merged)."""
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), *map(str, args)]
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout[-6000:]}")
    return proc


@pytest.fixture(scope="session")
def repo():
    return REPO
