"""Own scans (docs/own_scans.md): train on a registered low/high-res pair, recover the large FOV out of core.

A synthetic foam block stands in for the sample: its low-res scan (3 µm voxels, the whole field of
view) and a high-res scan (1 µm) of an interior cube at a known offset; the block itself is the
truth the recoveries are scored against.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from resrecover import ResrecoverError
from resrecover.cli import main
from resrecover.config import ConfigError, validate_config
from resrecover.io import open_volume, read_volume, write_volume, write_volume_as
from resrecover.methods.device import torch_runtime
from resrecover.methods.infer import torch_predictor
from resrecover.methods.modelio import load_model, save_model
from resrecover.methods.tiling import predict_volume_25d
from resrecover.ownscan.example import example_recovery_metrics, make_multiscale_pair, random_voids, voxelize_voids
from resrecover.ownscan.grid import UpsampledLow, large_fov_grid, parse_roi, resample_low_to_high, resolve_roi
from resrecover.ownscan.pairs import configured_pairs
from resrecover.ownscan.recovery import recover_large_fov
from resrecover.ownscan.registration import load_registration
from resrecover.ownscan.training import open_registered_pair, overlap_box, registered_training_pair, train_pair

FOV = (96, 96, 96)  # µm, and voxels of the 1 µm truth
HIGH_START = (31, 28, 34)  # high-res voxels: 10.33, 9.33, 11.33 low-res voxels from the corner
HIGH_SHAPE = (40, 40, 40)
MINIMAL = {"realizations": {"train": 1, "alternate": 2}}


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """low.tif (32³ of 3 µm), high.h5 (40³ of 1 µm), truth.h5 (96³ of 1 µm) and their registration."""
    d = tmp_path_factory.mktemp("scans")
    truth = voxelize_voids(random_voids(FOV, 300, (3.0, 9.0), seed=1), FOV, 1.0)
    low, high, offset = make_multiscale_pair(truth, 1.0, ratio=3, roi_start_vox=HIGH_START, roi_shape_vox=HIGH_SHAPE,
                                             noise=0.05, seed=3)
    write_volume_as(d / "low.tif", low, 3.0)
    write_volume_as(d / "high.h5", high, 1.0)
    write_volume(d / "truth.h5", truth, voxel_size_um=1.0)
    stage = [o + e for o, e in zip(offset, (2.0, -3.0, 1.5))]  # motor positions are a few µm off
    assert main(["register", str(d / "low.tif"), str(d / "high.h5"), "--offset-um", *map(str, stage),
                 "--out", str(d / "reg.json")]) == 0
    config = {
        **MINIMAL, "volume_shape": [96, 96, 96],
        "deepnet": {"base_channels": 8, "depth": 2, "extra_convs": 1, "iterations": 60, "batch_size": 4,
                    "tile_px": 32, "learning_rate": 0.002, "checkpoint_every": 1000},
        "inference": {"tile_px": 64, "overlap_px": 8, "batch_size": 4},
    }
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    return {"dir": d, "truth": truth, "offset": np.asarray(offset), **{k: d / f for k, f in (
        ("low", "low.tif"), ("high", "high.h5"), ("truth_h5", "truth.h5"), ("reg", "reg.json"),
        ("config", "config.yaml"))}}


@pytest.fixture(scope="module")
def trained(scans):
    """DeepNet trained through the CLI on the registered pair (``train ... --registration``)."""
    out = scans["dir"] / "model"
    with torch_runtime(1):
        code = main(["train", "deepnet", str(scans["low"]), str(scans["high"]), "--registration", str(scans["reg"]),
                     "--config", str(scans["config"]), "--out", str(out)])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def whole_fov(scans, trained):
    out = scans["dir"] / "lfov.h5"
    with torch_runtime(1):
        run = recover_large_fov(trained / "model.safetensors", trained / "model.json", scans["low"], out,
                                registration=scans["reg"], inference_config={"tile_px": 64, "overlap_px": 8},
                                device="cpu", max_memory_gb=0.5, progress=False)
    print(f"large FOV {run.plan.out_shape} recovered in {run.seconds:.1f} s")
    return out


# ------------------------------------------------------------------------------------------ geometry
def test_large_fov_grid_is_in_phase_with_the_high_res_scan():
    plain = large_fov_grid((32, 30, 20), 3.0, 1.0)
    assert plain.shape == (96, 90, 60) and plain.origin_um == (0.0, 0.0, 0.0) and plain.high_start_vox is None
    # a registration a hair off the grid keeps every slice and puts the high-res scan on whole voxels
    grid = large_fov_grid((32, 32, 32), 3.0, 1.0, offset_um=(31.006, 27.98, 34.4), high_shape=(40, 40, 40))
    assert grid.shape == (96, 96, 96) and grid.high_start_vox == (31, 28, 34)
    np.testing.assert_allclose(grid.origin_um, (0.006, -0.02, 0.4), atol=1e-9)
    # a non-integer ratio: the output covers the same field of view
    assert large_fov_grid((10, 10, 10), 2.5, 1.0).shape == (25, 25, 25)
    assert large_fov_grid((10, 10, 10), 2.0).shape == (10, 10, 10)
    with pytest.raises(Exception, match="high_voxel_um=3 is larger than low_voxel_um=1"):
        large_fov_grid((10, 10, 10), 1.0, 3.0)


def test_upsampled_view_samples_the_low_res_volume_like_the_registration():
    low = np.random.default_rng(0).random((12, 14, 16), dtype=np.float32)
    grid = large_fov_grid(low.shape, 3.0, 1.0, offset_um=(4.0, 5.2, 6.9))
    view = UpsampledLow(low, grid)
    whole = resample_low_to_high(low, grid.origin_um, 3.0, 1.0, grid.shape)
    np.testing.assert_allclose(view[10:20], whole[10:20], atol=1e-5)
    np.testing.assert_allclose(view[3:9, 5:40, 7:8], whole[3:9, 5:40, 7:8], atol=1e-5)
    identity = UpsampledLow(low, large_fov_grid(low.shape, 3.0))
    np.testing.assert_array_equal(identity[2:5], low[2:5])


def test_roi_text_and_its_errors():
    assert parse_roi("10:20, 0:5,:") == ((10, 20), (0, 5), (None, None))
    assert resolve_roi("10:20,0:5,:", (30, 40, 50)) == ((10, 20), (0, 5), (0, 50))
    assert resolve_roi(None, (3, 4, 5)) == ((0, 3), (0, 4), (0, 5))
    with pytest.raises(Exception, match=r"roi: '1:2,3:4' is not a region of interest; expected 'z0:z1,y0:y1,x0:x1'"):
        parse_roi("1:2,3:4")
    with pytest.raises(Exception, match=r"roi: 0:10,0:5,40:60 does not fit the output volume \(30, 40, 50\)"):
        resolve_roi("0:10,0:5,40:60", (30, 40, 50))


def test_overlap_box_keeps_the_high_res_voxels_inside_the_low_res_fov(scans):
    registration = load_registration(scans["reg"])
    assert overlap_box(registration) == ((0, 40), (0, 40), (0, 40))
    # the registration found the true offset to a small fraction of a high-res voxel
    assert np.max(np.abs(np.asarray(registration.offset_um) - scans["offset"])) < 0.3


# ------------------------------------------------------------------------------------------ CLI train
def test_cli_train_with_a_registration_trains_on_the_overlap(trained, capsys):
    settings = json.loads((trained / "model.json").read_text())
    assert settings["method"] == "deepnet" and settings["volume_shape"] == list(HIGH_SHAPE)
    assert settings["fov_masked"] is False and settings["iterations"] == 60
    log = pd.read_csv(trained / "train_log.csv")
    assert len(log) == 60 and log["loss"].iloc[-10:].mean() < log["loss"].iloc[:10].mean()


# ------------------------------------------------------------------------------------------ accuracy
def test_model_trained_on_the_pair_improves_the_large_fov_outside_the_training_region(scans, whole_fov):
    volume, attrs = read_volume(whole_fov)
    assert volume.shape == FOV and attrs["voxel_size_um"] == 1.0
    assert list(attrs["high_start_vox"]) == list(HIGH_START)
    table = example_recovery_metrics({"deepnet": whole_fov}, scans["truth_h5"], scans["low"], window_px=7)
    scores = table.set_index(["method", "region"])
    print(table.to_string(index=False))
    outside_up, outside_net = scores.loc[("upsampled", "outside")], scores.loc[("deepnet", "outside")]
    assert outside_net.n_voxels == np.prod(FOV) - np.prod(HIGH_SHAPE)
    # the network generalizes beyond the region it saw: sharper than the plain upsampled scan
    assert outside_net.ssim > outside_up.ssim + 0.05, table
    assert outside_net.mse < 0.8 * outside_up.mse, table


# ------------------------------------------------------------------------------------------ CLI recover
def test_cli_recover_roi_writes_only_the_roi_and_prints_its_size(scans, trained, whole_fov, capsys):
    out = scans["dir"] / "roi.tif"
    with torch_runtime(1):
        code = main(["recover", str(trained), str(scans["low"]), "--registration", str(scans["reg"]),
                     "--roi", "10:30,20:70,5:45", "--out", str(out), "--config", str(scans["config"])])
    assert code == 0
    printed = capsys.readouterr().out
    assert "output: 20x50x40 voxels of 1 µm (ROI 10:30,20:70,5:45 of the (96, 96, 96) grid), float32, 160.0 kB" in printed
    assert "free on" in printed
    with open_volume(out) as src:
        assert src.shape == (20, 50, 40) and src.voxel_size_um == pytest.approx(1.0)
        roi = src.read()
    whole, _ = read_volume(whole_fov)
    crop = whole[10:30, 20:70, 5:45]
    # the same recovery up to where the tile seams fall (exactness is tested with one tile below)
    contrast = np.abs(crop - crop.mean()).mean()
    assert np.abs(roi - crop).mean() < 0.03 * contrast and np.abs(roi - crop).max() < 0.3 * contrast


def test_cli_recover_refuses_an_output_the_disk_cannot_hold(scans, trained, capsys):
    out = scans["dir"] / "huge.h5"
    # the 96 µm field of view at 5 nm voxels: 19200³ float32 voxels, about 28 TB
    code = main(["recover", str(trained), str(scans["low"]), "--high-voxel-um", "0.005", "--out", str(out),
                 "--config", str(scans["config"])])
    captured = capsys.readouterr()
    assert code == 2
    assert "output: 19200x19200x19200 voxels of 0.005 µm" in captured.out
    assert captured.err.startswith(f"resrecover: error: {out}: needs ") and "are free on" in captured.err
    assert not out.exists()


# ------------------------------------------------------------------------------------------ memory
CHILD = textwrap.dedent('''
    import json, re, sys, time
    import h5py, numpy, scipy.ndimage, torch, tqdm  # imported before the baseline is taken
    from resrecover.methods.modelio import load_model
    from resrecover.ownscan.recovery import recover_large_fov

    def status(key):
        return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024

    torch.set_num_threads(1)
    d, budget = sys.argv[1], float(sys.argv[2])
    load_model(d + "/model.safetensors", d + "/model.json")
    open("/proc/self/clear_refs", "w").write("5")  # restart the peak (VmHWM) from here
    baseline = status("VmRSS")
    started = time.perf_counter()
    run = recover_large_fov(d + "/model.safetensors", d + "/model.json", d + "/low.npy", d + "/out.h5",
                            low_voxel_um=3.0, high_voxel_um=1.0, max_memory_gb=budget, device="cpu", order=1,
                            inference_config={"tile_px": 128, "overlap_px": 8, "batch_size": 4}, progress=False)
    print(json.dumps({"baseline": baseline, "peak": status("VmHWM"), "seconds": time.perf_counter() - started,
                      "slab_slices": run.tiling.slab_slices}))
''')


def _tiny_deepnet(path, n_slices, seed=0):
    torch.manual_seed(seed)
    from resrecover.methods.deepnet import DeepNet

    net = DeepNet(n_slices=n_slices, base_channels=1, depth=1, extra_convs=0, batch_norm=False).eval()
    save_model(net, {"method": "deepnet", "architecture": net.architecture(),
                     "normalization": {"offset": 0.5, "scale": 0.3}},
               path / "model.safetensors", path / "model.json")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc peak-RSS reset")
def test_large_fov_recovery_stays_within_the_memory_budget_and_equals_the_in_memory_result(tmp_path):
    budget_gb = 0.1
    _tiny_deepnet(tmp_path, n_slices=1)
    low = np.random.default_rng(0).random((120, 120, 120), dtype=np.float32)
    np.save(tmp_path / "low.npy", low)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), str(budget_gb)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    on_disk = (tmp_path / "out.h5").stat().st_size
    used = report["peak"] - report["baseline"]
    print(f"output {on_disk / 1e9:.3f} GB on disk, peak RSS +{used / 1e9:.3f} GB for a budget of {budget_gb} GB, "
          f"{report['seconds']:.1f} s, slabs of {report['slab_slices']} slices")
    assert on_disk > 1.8 * budget_gb * 1e9  # the output is far larger than the budget...
    assert used < budget_gb * 1e9  # ...and the recovery stayed within it
    assert report["slab_slices"] < 360
    # slabs, including those across slab boundaries, equal the same computation held in memory
    model, _ = load_model(tmp_path / "model.safetensors", tmp_path / "model.json")
    grid = large_fov_grid(low.shape, 3.0, 1.0)
    with h5py.File(tmp_path / "out.h5") as fh:
        assert fh["volume"].shape == (360, 360, 360)
        for z0 in (0, report["slab_slices"] - 2, 357):
            upsampled = UpsampledLow(low, grid, order=1)[z0 : z0 + 3]
            with torch_runtime(1):
                expected = predict_volume_25d(torch_predictor(model, "cpu", "2.5d"), upsampled, n_slices=1,
                                              tile_px=128, overlap_px=8, batch_size=4, size_multiple=2,
                                              progress=False).output
            np.testing.assert_allclose(fh["volume"][z0 : z0 + 3], expected, atol=1e-6)


def test_slab_by_slab_recovery_with_slice_stacks_equals_the_whole_volume_in_memory(tmp_path):
    """Stacks of 3 slices straddle the slabs: the carried partial sums must make them seamless."""
    _tiny_deepnet(tmp_path, n_slices=3, seed=1)
    low = np.random.default_rng(1).random((15, 80, 80), dtype=np.float32)
    write_volume_as(tmp_path / "low.h5", low, 3.0)
    inference = {"tile_px": 128, "overlap_px": 8, "batch_size": 2}
    with torch_runtime(1):
        run = recover_large_fov(tmp_path / "model.safetensors", tmp_path / "model.json", tmp_path / "low.h5",
                                tmp_path / "out.zarr", high_voxel_um=1.0, inference_config=inference,
                                max_memory_gb=0.095, device="cpu", progress=False)
        assert run.tiling.slab_slices < 45 and run.plan.out_shape == (45, 240, 240)
        model, _ = load_model(tmp_path / "model.safetensors", tmp_path / "model.json")
        upsampled = UpsampledLow(low, large_fov_grid(low.shape, 3.0, 1.0))[:]
        expected = predict_volume_25d(torch_predictor(model, "cpu", "2.5d"), upsampled, n_slices=3, tile_px=128,
                                      overlap_px=8, batch_size=2, size_multiple=2, slab_slices=1000,
                                      progress=False).output
    with open_volume(tmp_path / "out.zarr") as src:
        assert src.voxel_size_um == 1.0
        np.testing.assert_allclose(src.read(), expected, atol=1e-5)


def test_roi_is_recovered_with_context_as_in_the_whole_volume(tmp_path):
    """With one in-plane tile in both runs, the ROI equals the whole recovery: its faces see real data."""
    _tiny_deepnet(tmp_path, n_slices=3, seed=2)
    low = np.random.default_rng(2).random((15, 80, 80), dtype=np.float32)
    np.save(tmp_path / "low.npy", low)
    inference = {"tile_px": 256, "overlap_px": 12, "batch_size": 2}  # 12 px of context: the network's reach
    outputs = {}
    with torch_runtime(1):
        for name, roi in (("whole", None), ("roi", "5:20,30:200,40:90")):
            run = recover_large_fov(tmp_path / "model.safetensors", tmp_path / "model.json", tmp_path / "low.npy",
                                    tmp_path / f"{name}.h5", low_voxel_um=3.0, high_voxel_um=1.0, roi=roi,
                                    inference_config=inference, device="cpu", progress=False)
            outputs[name] = read_volume(tmp_path / f"{name}.h5")
    roi, attrs = outputs["roi"]
    assert roi.shape == (15, 170, 50) and list(attrs["origin_um"]) == [5.0, 30.0, 40.0]
    np.testing.assert_allclose(roi, outputs["whole"][0][5:20, 30:200, 40:90], atol=1e-5)


# ------------------------------------------------------------------------------------------ config
BAD_PAIRS = [
    ({"name": "a", "low": "l.tif"}, "pairs[0]: 'high' is a required property"),
    ({"name": "a", "low": "l.tif", "high": "h.h5", "lowres_um": 3}, "pairs[0]: unknown key(s) 'lowres_um'"),
    ({"name": "a", "low": "l.tif", "high": "h.h5", "low_voxel_um": -3},
     "pairs[0].low_voxel_um: -3 is out of range; expected a value > 0"),
    ({"name": "a", "low": "l.tif", "high": "h.h5", "offset_um": [1, 2]}, "pairs[0].offset_um: [1, 2] has 2 item(s)"),
    ({"name": "a", "low": "l.tif", "high": "h.h5", "methods": ["rl"]}, "pairs[0].methods[0]: 'rl' is not allowed"),
    ({"name": "a/b", "low": "l.tif", "high": "h.h5"}, "pairs[0].name: 'a/b' does not match"),
]


@pytest.mark.parametrize("entry,message", BAD_PAIRS, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD_PAIRS)])
def test_pairs_block_refuses_a_bad_entry_with_one_line_naming_the_key(entry, message):
    with pytest.raises(ConfigError) as err:
        validate_config({**MINIMAL, "pairs": [entry]})
    assert "\n" not in str(err.value) and str(err.value).startswith(message), str(err.value)


def test_configured_pairs_fill_defaults_add_the_example_and_refuse_repeats():
    config = validate_config({**MINIMAL, "pairs": [{"name": "rock", "low": "l.tif", "high": "h.h5:/scan"}],
                              "multiscale_example": {"enabled": True}})
    pairs = configured_pairs(config, "resources/multiscale_example")
    assert list(pairs) == ["rock", "example"]
    assert pairs["rock"]["methods"] == ["deepnet"] and pairs["rock"]["offset_file"] is None
    assert pairs["example"]["offset_file"] == "resources/multiscale_example/truth.json"
    assert pairs["example"]["low"] == "resources/multiscale_example/low.tif"
    with pytest.raises(ResrecoverError, match="give example_dir"):  # the workflow says where the example lives
        configured_pairs(config)
    assert configured_pairs(validate_config(dict(MINIMAL))) == {}  # nothing configured: nothing to do
    twice = validate_config({**MINIMAL, "pairs": [{"name": "a", "low": "l", "high": "h"}] * 2})
    with pytest.raises(ConfigError, match=r"^pairs\[1\].name: 'a' repeats an earlier pair"):
        configured_pairs(twice)
    bad_roi = validate_config({**MINIMAL, "pairs": [{"name": "a", "low": "l", "high": "h", "roi": "0:5,1:2"}]})
    with pytest.raises(ConfigError, match=r"^pairs\[0\].roi: '0:5,1:2' is not a region of interest"):
        configured_pairs(bad_roi)


def test_srcnn_trains_on_a_small_pair_and_recovers_the_large_fov(tmp_path, scans):
    """SRCNN-3D through the same path: its patch is fitted to the overlap, its tiles are 3D."""
    with open_registered_pair(scans["low"], scans["high"], scans["reg"]) as (low, high, registration):
        lres, hres, _ = registered_training_pair(low, high, registration)
    config = validate_config({**MINIMAL, "volume_shape": [96, 96, 96], "deepnet": {"tile_px": 64},
                              "srcnn": {"kernels": [3, 1, 3], "filters": [4, 4], "patch_px": 64, "batch_size": 2,
                                        "iterations": 3, "validate_every": 3, "checkpoint_every": 3}})
    with torch_runtime(1):
        summary = train_pair("srcnn", lres[:20, :20, :20], hres[:20, :20, :20], config, tmp_path / "m", seed=0,
                             device="cpu")
        assert summary["finished"] and json.loads((tmp_path / "m" / "model.json").read_text())["training"]["patch_px"] == 11
        run = recover_large_fov(tmp_path / "m" / "model.safetensors", tmp_path / "m" / "model.json", scans["low"],
                                tmp_path / "srcnn.npy", registration=scans["reg"], roi="0:30,0:40,0:50",
                                inference_config={"srcnn_tile_px": 24, "srcnn_overlap_px": 4}, device="cpu",
                                progress=False)
    out = np.load(tmp_path / "srcnn.npy")
    assert out.shape == (30, 40, 50) and run.tiling.tile_shape == (24, 24, 24) and np.isfinite(out).all()
