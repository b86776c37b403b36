"""The test preset through real Snakemake runs: every output, the tables' columns, the report (all read
from one shared run, the session fixture ``test_preset_run``), determinism (the simulation, one
training and its recoveries run again from scratch) and a killed training that resumes to the same
weights.

Other killed-run guarantees: a killed writer leaves no file under the final name
(tests/test_reliability.py); training resumes bit for bit at the function level (tests/test_training.py).
"""

import os
import shutil
import signal
import subprocess
import time
import zipfile

import h5py
import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

from conftest import REPO, SNAKEMAKE, TEST_CONFIG, run_snakemake
from workflow_outputs import expected_outputs

pytestmark = pytest.mark.slow

# the columns each table promises (docs/results.md#tables)
CONTRACT_COLUMNS = {
    "image_metrics": ["method", "realization", "sigma_um", "mse", "psnr", "ssim"],
    "pores_summary": ["method", "realization", "sigma_um", "n_pores", "recovery_pct", "porosity",
                      "porosity_error_pct", "sphericity_mean", "sphericity_std", "n_matched", "n_missed",
                      "n_spurious"],
    "gaussian_fit": ["method", "realization", "sigma_um", "blur_sigma_um", "mse"],
    "fsc": ["method", "realization", "sigma_um", "frequency", "fsc"],
    "summary": ["method", "sigma_um", "ssim", "psnr_db", "n_pores", "recovery_pct", "n_matched", "n_spurious",
                "porosity_error_pct", "sphericity_mean", "effective_sigma_um", "fsc_resolution_um"],
}


def test_every_output_of_the_test_preset(test_preset_run):
    missing = [p for p in expected_outputs(TEST_CONFIG) if not (test_preset_run / p).is_file()]
    assert not missing, missing
    empty = [p for p in expected_outputs(TEST_CONFIG) if (test_preset_run / p).stat().st_size == 0]
    assert not empty, empty
    # scan projections are temporary unless the config keeps them
    assert not list((test_preset_run / "results" / "projections").rglob("*.h5"))


def test_tables_have_the_contract_columns(test_preset_run):
    for table, columns in CONTRACT_COLUMNS.items():
        df = pd.read_csv(test_preset_run / "results" / "tables" / f"{table}.csv")
        assert list(df.columns[: len(columns)]) == columns, (table, list(df.columns))
        assert len(df) > 0
    metrics = pd.read_csv(test_preset_run / "results" / "tables" / "image_metrics.csv")
    assert set(metrics.method) >= {"deepnet", "srcnn", "rl"}
    assert set(metrics.realization) == {"train", "alternate"}


def test_nothing_left_to_do_and_report_builds(test_preset_run):
    proc = run_snakemake("-n", "--cores", "1", "--configfile", TEST_CONFIG, "--directory", test_preset_run)
    assert "Nothing to be done" in proc.stdout, proc.stdout[-2000:]
    report = test_preset_run / "results" / "report.zip"
    run_snakemake("--cores", "1", "--configfile", TEST_CONFIG, "--directory", test_preset_run, "--report", report)
    with zipfile.ZipFile(report) as zf:
        names = zf.namelist()
    assert any(n.endswith("report.html") for n in names)
    assert sum("fig" in n and n.endswith(".png") for n in names) >= 9


def _volume(path, dataset="volume"):
    with h5py.File(path, "r") as fh:
        return fh[dataset][...]


def _assert_same_weights(a, b):
    wa, wb = load_file(a), load_file(b)
    assert sorted(wa) == sorted(wb), (a, b)
    for name in wa:
        assert np.array_equal(wa[name], wb[name]), f"{b}: tensor {name} differs from the first run's"


def test_simulation_training_and_recovery_are_deterministic(test_preset_run, tmp_path):
    """The train realization's phantom and scans, one SRCNN training and the recoveries of one σ, run
    again from scratch in a fresh folder: the same data as the shared run, bit for bit (network
    recoveries to 1e-6)."""
    model = "results/models/srcnn/sigma9/member0/model.safetensors"
    recovered = ["results/recovered/srcnn/train/sigma9.h5", "results/recovered/rl/train/sigma9.h5"]
    run_snakemake("--cores", "2", "--configfile", TEST_CONFIG, "--directory", tmp_path, model, *recovered)

    phantom = "results/phantoms/train.h5"
    for dataset in ("volume", "spheres"):
        assert np.array_equal(_volume(test_preset_run / phantom, dataset), _volume(tmp_path / phantom, dataset))
    scans = sorted(p.relative_to(test_preset_run) for p in (test_preset_run / "results/recon/train").glob("*.h5"))
    assert len(scans) == 4, scans  # the target σ, two inputs, the ground truth
    for rel in scans:
        assert np.array_equal(_volume(test_preset_run / rel), _volume(tmp_path / rel)), rel
    _assert_same_weights(test_preset_run / model, tmp_path / model)
    np.testing.assert_allclose(_volume(test_preset_run / recovered[0]), _volume(tmp_path / recovered[0]), atol=1e-6)
    assert np.array_equal(_volume(test_preset_run / recovered[1]), _volume(tmp_path / recovered[1]))


# A checkpoint after every iteration (it changes nothing the iterations compute), so that the kill lands
# mid-training however fast or loaded the machine is.
CHECKPOINT_EVERY_ITERATION = "deepnet:\n  checkpoint_every: 1\n"


def test_a_killed_training_resumes_to_the_same_weights(test_preset_run, tmp_path):
    """Snakemake killed (SIGKILL to its process group, a power cut) while a training job runs, unlocked
    and restarted: the job resumes from its checkpoint and ends with the shared run's weights."""
    for rel in ("results/phantoms/train.h5", "results/recon/train"):
        src, dst = test_preset_run / rel, tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)  # mtimes kept: the scans stay up to date
    override = tmp_path / "checkpoint_every.yaml"
    override.write_text(CHECKPOINT_EVERY_ITERATION)
    model_dir = "results/models/deepnet/sigma3/member0"
    target = f"{model_dir}/model.safetensors"
    args = ["--cores", "2", "--configfile", TEST_CONFIG, override, "--directory", tmp_path]

    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), *map(str, args), target]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if list((tmp_path / model_dir / "checkpoints").glob("checkpoint-*.json")):
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"snakemake exited ({proc.returncode}) before the training wrote a checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and its job get no chance to clean up
    proc.wait()
    assert list((tmp_path / model_dir / "checkpoints").glob("checkpoint-*.json")), "no checkpoint before the kill"
    assert not (tmp_path / target).exists(), "the training finished before the kill"

    # after a hard kill Snakemake's directory lock is stale: `--unlock` is the documented recovery
    run_snakemake("--unlock", *args)
    run_snakemake(*args, target)
    log = (tmp_path / "logs/train/deepnet/sigma3/member0.log").read_text()
    assert "resuming deepnet training at iteration" in log, log[-2000:]
    _assert_same_weights(test_preset_run / target, tmp_path / target)
    assert not list((tmp_path / model_dir).rglob("checkpoint-*")), "checkpoints left after the resumed run"
