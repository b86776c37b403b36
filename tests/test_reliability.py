"""Reliability with real faults: bad inputs give one clear line, killed writers leave no file under
the final name, a full disk stops a write early with the numbers.

Related guarantees tested elsewhere: config schema errors (tests/test_config.py), training resume
and refusal of pickle payloads (tests/test_training.py), a training killed under Snakemake resuming to
the same weights and run-to-run determinism of simulation, training and recovery
(tests/test_workflow.py), GPU out-of-memory back-off (tests/test_tiling.py).
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from resrecover.io import InputError, check_free_disk, read_volume, write_volume
from resrecover.io.atomic import DiskSpaceError

CLI = [sys.executable, "-m", "resrecover.cli"]


def run_cli(*args, tmp_path):
    log = tmp_path / "cli-error.log"
    proc = subprocess.run([*CLI, "--log", str(log), *map(str, args)], capture_output=True, text=True, timeout=300)
    return proc, log


@pytest.fixture
def good_volume(tmp_path):
    path = tmp_path / "good.h5"
    write_volume(path, np.random.default_rng(0).random((12, 16, 16), dtype=np.float32), voxel_size_um=2.0)
    return path


def _assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("resrecover:")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def test_missing_file_is_named(tmp_path):
    proc, _ = run_cli("deconvolve", tmp_path / "nope.h5", "--sigma-um", "3", "--out", tmp_path / "o.h5", tmp_path=tmp_path)
    _assert_one_line_error(proc, "nope.h5", "not found")
    assert not (tmp_path / "o.h5").exists()


def test_truncated_hdf5_is_refused(tmp_path, good_volume):
    data = good_volume.read_bytes()
    bad = tmp_path / "truncated.h5"
    bad.write_bytes(data[: len(data) // 2])
    proc, _ = run_cli("deconvolve", bad, "--sigma-um", "3", "--out", tmp_path / "o.h5", tmp_path=tmp_path)
    _assert_one_line_error(proc, "truncated.h5")
    with pytest.raises(InputError, match="truncated.h5"):
        read_volume(bad)


def test_corrupt_tiff_is_refused(tmp_path):
    bad = tmp_path / "corrupt.tif"
    tifffile.imwrite(bad, np.ones((4, 8, 8), np.float32), photometric="minisblack")
    raw = bytearray(bad.read_bytes())
    raw[:8] = b"garbage!"
    bad.write_bytes(bytes(raw))
    proc, _ = run_cli("simulate", bad, "--sigma-um", "3", "--voxel-um", "1", "--out", tmp_path / "o.h5", tmp_path=tmp_path)
    _assert_one_line_error(proc, "corrupt.tif")


def test_wrong_dataset_name_and_dimensionality(tmp_path):
    path = tmp_path / "wrong.h5"
    with h5py.File(path, "w") as fh:
        fh["data"] = np.ones((4, 4, 4), np.float32)
        fh["flat"] = np.ones((4, 4), np.float32)
    with pytest.raises(InputError, match=r"wrong.h5: no dataset 'volume' \(datasets present: data, flat\)"):
        read_volume(path)
    with pytest.raises(InputError, match=r"wrong.h5: dataset 'flat' has shape \(4, 4\); expected a 3D"):
        read_volume(path, dataset="flat")
    proc, _ = run_cli("deconvolve", path, "--sigma-um", "3", "--out", tmp_path / "o.h5", tmp_path=tmp_path)
    _assert_one_line_error(proc, "wrong.h5", "no dataset 'volume'")


def test_nan_and_inf_volumes_are_refused(tmp_path):
    vol = np.ones((6, 8, 8), np.float32)
    vol[2, 3, 4] = np.nan
    vol[1, 1, 1] = np.inf
    path = tmp_path / "nan.h5"
    with h5py.File(path, "w") as fh:
        fh["volume"] = vol
        fh.attrs["voxel_size_um"] = 1.0
    proc, _ = run_cli("deconvolve", path, "--sigma-um", "3", "--out", tmp_path / "o.h5", tmp_path=tmp_path)
    _assert_one_line_error(proc, "nan.h5", "NaN/inf")
    assert not (tmp_path / "o.h5").exists()


def test_mismatched_pair_shapes_are_refused(tmp_path, good_volume):
    other = tmp_path / "other.h5"
    write_volume(other, np.zeros((12, 16, 20), np.float32), voxel_size_um=2.0)
    proc, _ = run_cli("train", "deepnet", good_volume, other, "--config", "tests/config/test.yaml",
                      "--out", tmp_path / "model", tmp_path=tmp_path)
    _assert_one_line_error(proc, "good.h5", "other.h5", "shape")


def test_mismatched_pair_voxel_sizes_are_refused(tmp_path, good_volume):
    other = tmp_path / "other.h5"
    write_volume(other, np.zeros((12, 16, 16), np.float32), voxel_size_um=1.0)
    proc, _ = run_cli("train", "deepnet", good_volume, other, "--config", "tests/config/test.yaml",
                      "--out", tmp_path / "model", tmp_path=tmp_path)
    _assert_one_line_error(proc, "voxel size")


def test_unexpected_errors_go_to_the_log_not_the_terminal(tmp_path):
    # a directory where a volume file is expected makes h5py fail in an unplanned way
    proc, log = run_cli("check-config", tmp_path, tmp_path=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from resrecover.io import write_volume
    vol = np.random.default_rng(0).random((256, 512, 512), dtype=np.float32)
    print("ready", flush=True)
    write_volume(sys.argv[1], vol, voxel_size_um=1.0)
    print("done", flush=True)
    """
)


def test_a_writer_killed_mid_write_leaves_no_file_under_the_final_name(tmp_path):
    target = tmp_path / "big.h5"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    # wait until the temporary file is being written, then kill the writer
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".big.h5.*")):
        time.sleep(0.01)
    partial = list(tmp_path.glob(".big.h5.*"))
    assert partial, "the writer never started its temporary file"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not target.exists(), "a killed writer left a file under the final name"
    # the next run is not fooled either: the leftover temp name is never read as the output
    with pytest.raises(InputError, match="big.h5: file not found"):
        read_volume(target)


def test_free_disk_is_checked_before_writing(tmp_path):
    with pytest.raises(DiskSpaceError, match=r"needs 1050.0 PB|needs .* TB but only .* are free"):
        check_free_disk(tmp_path / "huge.h5", 10**18)


@pytest.mark.skipif(os.geteuid() != 0, reason="skipped: mounting a small tmpfs needs root")
def test_a_full_disk_stops_the_write_early_with_the_numbers(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        with pytest.raises(DiskSpaceError, match=r"small/vol.h5: needs 2.2 MB but only 1.0 MB are free"):
            write_volume(mnt / "vol.h5", np.zeros((32, 128, 128), np.float32), voxel_size_um=1.0)
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
