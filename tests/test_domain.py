"""The out-of-distribution check of a recovery (resrecover.methods.domain)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from resrecover.io import read_volume, write_volume
from resrecover.methods.domain import (
    MEAN_SHIFT_LIMIT,
    STD_RATIO_LIMIT,
    check_domain,
    intensity_statistics,
)

SETTINGS = {"normalization": {"offset": 0.4, "scale": 0.3}, "sigma_um": 9.0, "voxel_size_um": 3.2}


def _foam_like(shape=(8, 48, 48), mean=0.4, std=0.3, seed=0):
    return np.random.default_rng(seed).normal(mean, std, shape).astype(np.float32)


def test_statistics_are_taken_inside_the_slices_disc():
    volume = np.zeros((4, 40, 40), np.float32)
    volume[:, :2, :2] = 1e6  # the corners lie outside any reconstruction's field of view
    volume[:, 15:25, 15:25] = 1.0
    stats = intensity_statistics(volume)
    assert stats["p99"] == 1.0 and 0 < stats["mean"] < 1
    assert stats["n_voxels"] > 0.5 * 4 * 40 * 40


def test_a_volume_like_the_training_input_is_inside():
    check = check_domain(SETTINGS, intensity_statistics(_foam_like()), voxel_size_um=3.2, sigma_um=9.0)
    assert check.inside and check.reasons == () and "inside" in check.summary()


@pytest.mark.parametrize(
    "volume, voxel, sigma, expected",
    [
        (_foam_like(mean=0.4 + 1.5 * 0.3), 3.2, 9.0, "mean"),
        (_foam_like(std=0.3 * 1.2 * STD_RATIO_LIMIT), 3.2, 9.0, "standard deviation"),
        (_foam_like(std=0.3 / (1.2 * STD_RATIO_LIMIT)), 3.2, 9.0, "standard deviation"),
        (_foam_like(), 1.0, 9.0, "voxel size 1 µm vs 3.2 µm"),
        (_foam_like(), 3.2, 3.0, "blur sigma 3 µm vs 9 µm"),
    ],
)
def test_each_kind_of_shift_is_named(volume, voxel, sigma, expected):
    check = check_domain(SETTINGS, intensity_statistics(volume), voxel_size_um=voxel, sigma_um=sigma)
    assert not check.inside and any(expected in reason for reason in check.reasons)
    data = json.loads(check.to_json())
    assert data["inside"] is False and data["limits"]["mean_shift_std"] == MEAN_SHIFT_LIMIT


def test_what_a_side_does_not_know_is_not_compared():
    check = check_domain({"normalization": {"offset": 0.4, "scale": 0.3}}, intensity_statistics(_foam_like()),
                         voxel_size_um=1.0, sigma_um=1.0)
    assert check.inside


def test_recovering_a_uint16_volume_with_a_material_fraction_model_warns_once_and_records_it(tmp_path, caplog):
    from resrecover.methods.deepnet import DeepNet
    from resrecover.methods.infer import recover_volume
    from resrecover.methods.modelio import save_model

    torch.manual_seed(0)
    net = DeepNet(n_slices=3, base_channels=2, depth=1, extra_convs=0).eval()
    save_model(net, {"method": "deepnet", "architecture": net.architecture(), **SETTINGS},
               tmp_path / "model.safetensors", tmp_path / "model.json")
    inference = {"tile_px": 32, "overlap_px": 4, "batch_size": 4}
    like = np.clip(_foam_like((5, 32, 32)), 0, 1)
    write_volume(tmp_path / "like.h5", like, voxel_size_um=3.2)
    scan = np.random.default_rng(1).integers(0, 65535, (5, 32, 32)).astype(np.float32)  # a uint16 scan's values
    write_volume(tmp_path / "scan.h5", scan, voxel_size_um=3.2)
    with caplog.at_level(logging.WARNING, logger="resrecover.methods.domain"):
        recover_volume(tmp_path / "model.safetensors", tmp_path / "model.json", tmp_path / "like.h5",
                       tmp_path / "like_out.h5", inference, device="cpu", progress=False)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        recover_volume(tmp_path / "model.safetensors", tmp_path / "model.json", tmp_path / "scan.h5",
                       tmp_path / "scan_out.h5", inference, device="cpu", progress=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    stats = json.loads(read_volume(tmp_path / "scan_out.h5")[1]["domain_check"])["input"]
    assert "scan.h5" in warnings[0] and f"mean {stats['mean']:.4g} vs 0.4" in warnings[0]
    assert "not calibrated" in warnings[0]
    _, inside_attrs = read_volume(tmp_path / "like_out.h5")
    _, outside_attrs = read_volume(tmp_path / "scan_out.h5")
    assert json.loads(inside_attrs["domain_check"])["inside"] is True
    outside = json.loads(outside_attrs["domain_check"])
    assert outside["inside"] is False and outside["training"]["mean"] == 0.4
    assert outside["input"]["mean"] == pytest.approx(scan[:, 3:29, 3:29].mean(), rel=0.05)


def test_the_command_line_recovery_of_a_uint16_tiff_warns_and_records_it(tmp_path, caplog):
    """The new user's case: a foam model given a uint16 TIFF through `resrecover recover`'s engine."""
    tifffile = pytest.importorskip("tifffile")
    from resrecover.methods.deepnet import DeepNet
    from resrecover.methods.modelio import save_model
    from resrecover.ownscan.recovery import recover_large_fov

    torch.manual_seed(0)
    net = DeepNet(n_slices=3, base_channels=2, depth=1, extra_convs=0).eval()
    save_model(net, {"method": "deepnet", "architecture": net.architecture(), **SETTINGS},
               tmp_path / "model.safetensors", tmp_path / "model.json")
    scan = np.random.default_rng(2).integers(0, 65535, (5, 32, 32)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "scan.tif", scan)
    with caplog.at_level(logging.WARNING):
        recover_large_fov(tmp_path / "model.safetensors", tmp_path / "model.json", tmp_path / "scan.tif",
                          tmp_path / "out.h5", low_voxel_um=3.2, device="cpu", progress=False,
                          inference_config={"tile_px": 32, "overlap_px": 4})
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "scan.tif" in warnings[0] and "not calibrated" in warnings[0]
    _, attrs = read_volume(tmp_path / "out.h5")
    assert json.loads(attrs["domain_check"])["inside"] is False


def test_pore_scores_of_a_volume_outside_the_training_domain_are_marked_not_calibrated():
    from resrecover.trust.stages import scores_calibrated

    inside = check_domain(SETTINGS, intensity_statistics(_foam_like()), 3.2, 9.0)
    outside = check_domain(SETTINGS, intensity_statistics(_foam_like(mean=100.0)), 3.2, 9.0)
    assert scores_calibrated(inside.to_json()) is True
    assert scores_calibrated(outside.to_json()) is False
    assert scores_calibrated("") is True  # Richardson-Lucy: no model, no training domain
