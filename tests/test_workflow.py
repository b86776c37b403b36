"""The test preset through real Snakemake runs: every output, the tables' columns, the report,
determinism (two runs from scratch) and an interrupted run that resumes to identical outputs."""

import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import REPO, SNAKEMAKE, run_snakemake
from workflow_outputs import expected_outputs

TEST_CONFIG = REPO / "tests" / "config" / "test.yaml"
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


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("first")
    t0 = time.time()
    run_snakemake("--cores", "2", "--configfile", TEST_CONFIG, "--directory", workdir)
    print(f"test preset end to end: {time.time() - t0:.0f} s")
    return workdir


def test_every_output_of_the_test_preset(first_run):
    missing = [p for p in expected_outputs(TEST_CONFIG) if not (first_run / p).is_file()]
    assert not missing, missing
    empty = [p for p in expected_outputs(TEST_CONFIG) if (first_run / p).stat().st_size == 0]
    assert not empty, empty
    # scan projections are temporary unless the config keeps them
    assert not list((first_run / "results" / "projections").rglob("*.h5"))


def test_tables_have_the_contract_columns(first_run):
    for table, columns in CONTRACT_COLUMNS.items():
        df = pd.read_csv(first_run / "results" / "tables" / f"{table}.csv")
        assert list(df.columns[: len(columns)]) == columns, (table, list(df.columns))
        assert len(df) > 0
    metrics = pd.read_csv(first_run / "results" / "tables" / "image_metrics.csv")
    assert set(metrics.method) >= {"deepnet", "srcnn", "rl"}
    assert set(metrics.realization) == {"train", "alternate"}


def test_nothing_left_to_do_and_report_builds(first_run):
    proc = run_snakemake("-n", "--cores", "1", "--configfile", TEST_CONFIG, "--directory", first_run)
    assert "Nothing to be done" in proc.stdout, proc.stdout[-2000:]
    report = first_run / "results" / "report.zip"
    run_snakemake("--cores", "1", "--configfile", TEST_CONFIG, "--directory", first_run, "--report", report)
    with zipfile.ZipFile(report) as zf:
        names = zf.namelist()
    assert any(n.endswith("report.html") for n in names)
    assert sum("fig" in n and n.endswith(".png") for n in names) >= 9


def _volume(path):
    with h5py.File(path, "r") as fh:
        return fh["volume"][...]


def test_killed_run_resumes_to_the_same_outputs_and_runs_are_deterministic(first_run, tmp_path):
    """Second run from scratch, killed mid-way (SIGINT to Snakemake, as Ctrl-C), then restarted."""
    workdir = tmp_path / "second"
    workdir.mkdir()
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--cores", "2", "--configfile", str(TEST_CONFIG),
           "--directory", str(workdir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # kill once training has started: some outputs exist, many do not
    deadline = time.time() + 600
    while time.time() < deadline and not list((workdir / "results" / "models").rglob("checkpoint*")):
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # a power cut: Snakemake gets no chance to clean up
    proc.wait()
    assert not (workdir / "results" / "tables" / "pores_summary.csv").exists(), "the run finished before the kill"
    # after a hard kill Snakemake's directory lock is stale: `--unlock` is the documented recovery
    run_snakemake("--unlock", "--configfile", TEST_CONFIG, "--directory", workdir)
    run_snakemake("--cores", "2", "--configfile", TEST_CONFIG, "--directory", workdir)

    for rel in expected_outputs(TEST_CONFIG):
        if not rel.endswith(".h5"):
            continue
        a, b = first_run / rel, workdir / rel
        if "/recovered/deepnet/" in rel or "/recovered/srcnn/" in rel:
            np.testing.assert_allclose(_volume(a), _volume(b), atol=1e-6, err_msg=rel)
        else:  # phantoms, reconstructions, RL: byte-identical data
            assert np.array_equal(_volume(a), _volume(b)), rel
            if "/phantoms/" in rel:
                with h5py.File(a) as fa, h5py.File(b) as fb:
                    assert np.array_equal(fa["spheres"][...], fb["spheres"][...])
    for table in ("pores_summary", "image_metrics"):
        pd.testing.assert_frame_equal(
            pd.read_csv(first_run / "results" / "tables" / f"{table}.csv"),
            pd.read_csv(workdir / "results" / "tables" / f"{table}.csv"),
            atol=1e-5,
        )
