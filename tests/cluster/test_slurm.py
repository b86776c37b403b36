"""The workflow through the shipped Slurm profile, on a real one-node Slurm started here.

A light target goes through Slurm: the train realization's phantom and scans (CPU jobs), one DeepNet
training and one recovery (GPU jobs): enough to prove that jobs are submitted with the profile's
partitions and GPU requests and that their outputs flow from job to job. The whole preset's outputs
are checked on the local run (tests/test_workflow.py).

Needs root (to run munged, slurmctld and slurmd); installs Debian's slurm-wlm and munge when missing.
The daemons are stopped by their PIDs at the end. There is no accounting database, so job states come
from squeue (`--slurm-status-command squeue`) and no account is given (`--slurm-no-account`).
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from conftest import REPO, TEST_CONFIG, run_snakemake  # noqa: E402

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
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


# phantom and scan of one realization (CPU), one training and one recovery (GPU)
TARGET = "results/recovered/deepnet/train/sigma9.h5"
OUTPUTS = [
    "results/phantoms/train.h5",
    "results/recon/train/ground_truth.h5",
    "results/recon/train/sigma1.h5",
    "results/recon/train/sigma9.h5",
    "results/models/deepnet/sigma9/member0/model.safetensors",
    TARGET,
]
GPU_RULES = {"train", "recover_network"}
CPU_RULES = {"phantom", "scan"}


def slurm_jobs(env) -> dict[str, str]:
    """``scontrol -o show job`` of the jobs slurmctld still holds (finished ones for MinJobAge), by rule."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], env=env, capture_output=True, text=True, check=True)
    jobs = {}
    for line in out.stdout.splitlines():
        rule = re.search(r"Comment=rule_([A-Za-z0-9_]+?)(?:_wildcards_\S*)?(?:\s|$)", line)
        if rule:
            jobs[rule.group(1)] = line
    return jobs


def test_jobs_run_through_the_slurm_profile_with_gpu_requests(slurm, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    os.environ["SLURM_CONF"] = slurm.env["SLURM_CONF"]
    t0 = time.time()
    proc = run_snakemake(
        "--profile", REPO / "profiles" / "slurm",
        "--configfile", TEST_CONFIG,
        "--directory", workdir,
        "--slurm-status-command", "squeue",
        "--slurm-no-account",
        "--slurm-init-seconds-before-status-checks", "2",
        # the plugin deletes the logs of successful jobs by default; keep them as proof of submission
        "--slurm-keep-successful-logs",
        "--jobs", "4",
        TARGET,
        check=False,
        timeout=1200,
    )
    elapsed = time.time() - t0
    print(f"Slurm run of {TARGET} and its inputs: {elapsed:.0f} s")
    assert proc.returncode == 0, proc.stdout[-8000:] + slurm.log_tail("slurmctld")
    missing = [p for p in OUTPUTS if not (workdir / p).is_file() or (workdir / p).stat().st_size == 0]
    assert not missing, f"missing outputs after the Slurm run: {missing}"
    # jobs really went through Slurm: each got a Slurm job id and left its Slurm log
    assert "slurm jobid" in proc.stdout.lower(), proc.stdout[-4000:]
    logdir = workdir / ".snakemake" / "slurm_logs"  # rule_{rule}/{wildcards}/{job id}.log
    logged = {p.relative_to(logdir).parts[0].removeprefix("rule_") for p in logdir.rglob("*.log")}
    assert logged >= GPU_RULES | CPU_RULES, f"Slurm job logs under .snakemake/slurm_logs for {sorted(logged)}"
    # ... with the profile's requests: GPU rules in the gpu partition holding a GPU, the others not
    jobs = slurm_jobs(slurm.env)
    assert set(jobs) >= GPU_RULES | CPU_RULES, f"slurmctld knows jobs of {sorted(jobs)}"
    for rule in GPU_RULES:
        assert "Partition=gpu " in jobs[rule] and re.search(r"gres[/:]gpu[:=]1\b", jobs[rule]), jobs[rule]
    for rule in CPU_RULES:
        assert "Partition=batch " in jobs[rule] and not re.search(r"gres[/:]gpu", jobs[rule]), jobs[rule]
