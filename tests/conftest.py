import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
TEST_CONFIG = REPO / "tests" / "config" / "test.yaml"

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


@pytest.fixture(scope="session")
def test_preset_run(tmp_path_factory):
    """The working folder of one run of the whole test preset, made once per session.

    Tests only read it (or add files of their own, such as the report); a test that needs to change
    or re-run something works on a copy (tests/test_workflow.py).
    """
    workdir = tmp_path_factory.mktemp("test_preset")
    t0 = time.time()
    run_snakemake("--cores", "2", "--configfile", TEST_CONFIG, "--directory", workdir)
    print(f"test preset end to end: {time.time() - t0:.0f} s")
    return workdir
