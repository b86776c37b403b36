"""The test preset through the shipped Slurm profile, on a real one-node Slurm started here.

Needs root (to run munged, slurmctld and slurmd); installs Debian's slurm-wlm and munge when missing.
The daemons are stopped by their PIDs at the end. There is no accounting database, so job states come
from squeue (`--slurm-status-command squeue`) and no account is given (`--slurm-no-account`).
"""

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from conftest import REPO, run_snakemake  # noqa: E402
from workflow_outputs import expected_outputs  # noqa: E402

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="skipped: starting a local Slurm (munged, slurmctld, slurmd) needs root; run `make test` as root",
    ),
]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    from local_slurm import LocalSlurm, ensure_installed

    ensure_installed()
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm")).start()
    yield cluster
    started = list(cluster.procs)
    cluster.stop()
    for name, proc in started:
        assert proc.poll() is not None, f"{name} still running after stop()"
    assert not (Path("/etc/slurm") / "slurm.conf").exists() or not cluster.installed


def test_test_preset_through_the_slurm_profile(slurm, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    os.environ["SLURM_CONF"] = slurm.env["SLURM_CONF"]
    t0 = time.time()
    proc = run_snakemake(
        "--profile", REPO / "profiles" / "slurm",
        "--configfile", REPO / "tests" / "config" / "test.yaml",
        "--directory", workdir,
        "--slurm-status-command", "squeue",
        "--slurm-no-account",
        "--slurm-init-seconds-before-status-checks", "5",
        # the plugin deletes the logs of successful jobs by default; keep them as proof of submission
        "--slurm-keep-successful-logs",
        "--jobs", "4",
        check=False,
        timeout=1500,
    )
    elapsed = time.time() - t0
    print(f"Slurm run of the test preset: {elapsed:.0f} s")
    assert proc.returncode == 0, proc.stdout[-8000:] + slurm.log_tail("slurmctld")
    assert "executor slurm" in proc.stdout.lower() or "slurm" in proc.stdout.lower()
    missing = [p for p in expected_outputs(REPO / "tests" / "config" / "test.yaml") if not (workdir / p).is_file() or (workdir / p).stat().st_size == 0]
    assert not missing, f"missing outputs after the Slurm run: {missing[:10]}"
    # jobs really went through Slurm: each got a Slurm job id and left its Slurm log
    assert "slurm jobid" in proc.stdout.lower(), proc.stdout[-4000:]
    slurm_logs = list((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert slurm_logs, "no Slurm job logs under .snakemake/slurm_logs"
