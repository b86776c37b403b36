"""The two networks, their model files (safetensors + JSON, no pickle) and the per-job GPU choice."""

import json
import pickle
import struct
import subprocess
import sys
import threading
import time

import pytest
import torch

from resrecover import ResrecoverError
from resrecover.methods.deepnet import DeepNet
from resrecover.methods.device import acquire_device, claim_gpu, cuda_device_count, try_lock_gpu
from resrecover.methods.modelio import (
    ModelFileError,
    NormalizedModel,
    check_safetensors_file,
    load_model,
    save_model,
    sha256_file,
)
from resrecover.methods.srcnn import SRCNN3D


def n_parameters(model):
    return sum(p.numel() for p in model.parameters())


# --- networks --------------------------------------------------------------------------------


def test_deepnet_maps_slice_stacks_to_slice_stacks():
    torch.manual_seed(0)
    net = DeepNet(n_slices=5, base_channels=4, depth=2, extra_convs=2).eval()
    x = torch.randn(3, 5, 24, 32)
    final, intermediate = net(x, return_intermediate=True)
    assert final.shape == intermediate.shape == x.shape
    assert torch.equal(net(x), final)
    # the refinement starts at the identity; it is a separate, trainable stage
    assert torch.equal(final, intermediate)
    assert any(p.requires_grad for p in net.refine.parameters())


def test_deepnet_layers_follow_its_arguments():
    small = DeepNet(n_slices=5, base_channels=4, depth=2, extra_convs=0)
    assert len(small.down) == 2 and len(small.up) == 2 and len(small.refine) == 0
    deeper = DeepNet(n_slices=5, base_channels=4, depth=3, extra_convs=3)
    assert len(deeper.down) == 3
    assert sum(isinstance(m, torch.nn.Conv2d) for m in deeper.refine) == 3
    assert n_parameters(deeper) > n_parameters(small)
    # channels double at each level down
    assert deeper.bottom[0].out_channels == 4 * 2**3


def test_deepnet_refuses_sizes_that_do_not_pool_evenly():
    net = DeepNet(n_slices=5, base_channels=4, depth=2, extra_convs=1)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.zeros(1, 5, 30, 32))
    with pytest.raises(ValueError, match=r"\(B, 5, H, W\)"):
        net(torch.zeros(1, 3, 32, 32))


def test_srcnn_keeps_the_size_and_starts_at_the_identity():
    torch.manual_seed(0)
    net = SRCNN3D(kernels=(9, 5, 5), filters=(8, 4))
    x = torch.randn(2, 1, 11, 13, 12)
    y = net(x)
    assert y.shape == x.shape
    assert torch.equal(y, x)  # residual network: the untrained correction is zero
    direct = SRCNN3D(kernels=(9, 1, 5), filters=(8, 4), residual=False)
    assert direct(x).shape == x.shape and not torch.allclose(direct(x), x)
    assert sum(isinstance(m, torch.nn.BatchNorm3d) for m in net.modules()) == 2
    with pytest.raises(ValueError, match="odd"):
        SRCNN3D(kernels=(9, 4, 5))


# --- model files ------------------------------------------------------------------------------


def _trained_looking(model, seed=0):
    """Give every tensor (BN running stats too) non-default values, as after training."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) * 0.2 + 0.05)
    return model


def _settings(method, model, normalization=None):
    return {
        "method": method,
        "architecture": model.architecture(),
        "normalization": normalization or {"offset": 0.4, "scale": 0.25},
        "seed": 3,
    }


@pytest.fixture
def saved_deepnet(tmp_path):
    net = _trained_looking(DeepNet(n_slices=5, base_channels=4, depth=2, extra_convs=2))
    w, s = tmp_path / "model.safetensors", tmp_path / "model.json"
    save_model(net, _settings("deepnet", net), w, s)
    return net, w, s


def test_model_round_trip_gives_the_same_network(saved_deepnet):
    net, w, s = saved_deepnet
    model, settings = load_model(w, s)
    assert isinstance(model, NormalizedModel) and not model.training
    assert settings["weights_sha256"] == sha256_file(w)
    assert settings["tensors"]["head.weight"] == [5, 4, 1, 1]
    for name, tensor in net.state_dict().items():
        assert torch.equal(model.network.state_dict()[name], tensor), name
    # the loaded model applies the stored normalization around the network
    x = torch.rand(2, 5, 16, 16)
    net.eval()
    with torch.no_grad():
        expected = net((x - 0.4) / 0.25) * 0.25 + 0.4
        got = model(x)
        got_final, got_intermediate = model(x, return_intermediate=True)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(got_final, expected, atol=1e-6) and got_intermediate.shape == x.shape


def test_srcnn_round_trip_is_identity_at_initialisation(tmp_path):
    net = SRCNN3D(kernels=(3, 1, 3), filters=(4, 2))
    w, s = tmp_path / "m.safetensors", tmp_path / "m.json"
    save_model(net, _settings("srcnn", net, {"offset": 0.3, "scale": 0.1}), w, s)
    model, settings = load_model(w, s)
    x = torch.rand(1, 1, 8, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), x, atol=1e-6)  # normalize then denormalize, zero correction
    assert settings["architecture"] == {"kernels": [3, 1, 3], "filters": [4, 2], "residual": True}


@pytest.mark.parametrize("writer", ["torch.save", "torch.save legacy", "pickle.dumps"])
def test_pickle_payloads_are_refused(saved_deepnet, writer, tmp_path):
    net, _, s = saved_deepnet
    bad = tmp_path / "evil.safetensors"
    if writer == "torch.save":
        torch.save(net.state_dict(), bad)
    elif writer == "torch.save legacy":
        torch.save(net.state_dict(), bad, _use_new_zipfile_serialization=False)
    else:
        bad.write_bytes(pickle.dumps({k: v.numpy() for k, v in net.state_dict().items()}))
    settings = json.loads(s.read_text())
    settings["weights_sha256"] = sha256_file(bad)  # even with a matching hash
    s.write_text(json.dumps(settings))
    with pytest.raises(ModelFileError, match="pickle payload refused") as info:
        load_model(bad, s)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_other_non_safetensors_files_are_refused(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"hello, this is not a model" * 3)
    with pytest.raises(ModelFileError, match="not a safetensors file"):
        check_safetensors_file(junk)
    with pytest.raises(ModelFileError, match="not found"):
        check_safetensors_file(tmp_path / "missing.safetensors")


def test_safetensors_header_that_starts_like_a_pickle_is_accepted(tmp_path):
    """A header length of 0x280 begins with the bytes 0x80 0x02, the pickle protocol-2 magic."""
    from safetensors.torch import save

    path = tmp_path / "x.safetensors"
    for pad in range(700):
        blob = save({"w": torch.zeros(2)}, metadata={"pad": "x" * pad})
        if struct.unpack("<Q", blob[:8])[0] in (0x280, 0x380, 0x480, 0x580):
            break
    else:
        pytest.fail("could not build the header length")
    path.write_bytes(blob)
    assert blob[0] == 0x80 and 2 <= blob[1] <= 5
    check_safetensors_file(path)


def test_settings_that_do_not_match_the_weights_are_refused(saved_deepnet, tmp_path):
    net, w, s = saved_deepnet
    good = json.loads(s.read_text())

    wrong_hash = dict(good, weights_sha256="0" * 64)
    s.write_text(json.dumps(wrong_hash))
    with pytest.raises(ModelFileError, match="does not match") as info:
        load_model(w, s)
    assert str(s) in str(info.value)

    # hash right, architecture wrong: the tensor shapes differ
    wider = dict(good, architecture=dict(good["architecture"], base_channels=8))
    s.write_text(json.dumps(wider))
    with pytest.raises(ModelFileError, match="has shape") as info:
        load_model(w, s)
    assert str(w) in str(info.value)

    # hash right, fewer refinement layers in the settings: the file has extra tensors
    fewer = dict(good, architecture=dict(good["architecture"], extra_convs=1))
    s.write_text(json.dumps(fewer))
    with pytest.raises(ModelFileError, match="unexpected tensors|missing tensors"):
        load_model(w, s)

    s.write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_model(w, s)
    s.write_text(json.dumps({k: v for k, v in good.items() if k != "normalization"}))
    with pytest.raises(ModelFileError, match="normalization"):
        load_model(w, s)
    s.write_text(json.dumps(good))
    load_model(w, s)  # and the right settings still load
    assert issubclass(ModelFileError, ResrecoverError)


def test_modelio_never_calls_torch_load():
    from pathlib import Path

    import resrecover.methods.modelio as modelio
    import resrecover.methods.training as training

    sources = [Path(modelio.__file__), *Path(training.__file__).parent.glob("*.py")]
    assert len(sources) > 2
    for source in sources:
        assert "torch.load(" not in source.read_text()


# --- device choice ----------------------------------------------------------------------------


def test_two_holders_get_different_gpus_and_a_third_finds_none(tmp_path):
    first = try_lock_gpu([0, 1], tmp_path)
    second = try_lock_gpu([0, 1], tmp_path)
    assert first is not None and second is not None
    assert {first.index, second.index} == {0, 1}
    assert try_lock_gpu([0, 1], tmp_path) is None
    first.release()
    third = try_lock_gpu([0, 1], tmp_path)
    assert third is not None and third.index == first.index
    second.release()
    third.release()


def test_concurrent_threads_land_on_different_gpus(tmp_path):
    chosen, barrier, locks = [], threading.Barrier(3), []

    def job():
        barrier.wait()
        lock = claim_gpu([0, 1, 2], tmp_path, keys=["GPU-a", "GPU-b", "GPU-c"], poll_s=0.01, timeout_s=5)
        chosen.append(lock.index)
        locks.append(lock)

    threads = [threading.Thread(target=job) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(chosen) == [0, 1, 2]
    for lock in locks:
        lock.release()


def test_a_job_waits_for_a_busy_gpu_and_gets_it_when_freed(tmp_path):
    holder = try_lock_gpu([0], tmp_path)
    threading.Timer(0.3, holder.release).start()
    start = time.monotonic()
    lock = claim_gpu([0], tmp_path, poll_s=0.02, timeout_s=10)
    assert lock.index == 0 and time.monotonic() - start >= 0.25
    lock.release()
    busy = try_lock_gpu([0], tmp_path)
    with pytest.raises(ResrecoverError, match="busy"):
        claim_gpu([0], tmp_path, poll_s=0.01, timeout_s=0.05)
    busy.release()


def test_another_process_holding_a_gpu_pushes_us_to_the_next(tmp_path):
    code = (
        "import sys, time\n"
        "from resrecover.methods.device import try_lock_gpu\n"
        f"lock = try_lock_gpu([0, 1], {str(tmp_path)!r})\n"
        "print(lock.index, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "0"
        mine = try_lock_gpu([0, 1], tmp_path)
        assert mine.index == 1
        mine.release()
    finally:
        proc.kill()
        proc.wait()
    # the kernel released the killed process's lock
    after = try_lock_gpu([0, 1], tmp_path)
    assert after.index == 0
    after.release()


def test_acquire_device_falls_back_to_the_cpu(caplog, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with caplog.at_level("INFO"):
        with acquire_device("auto", lock_dir=tmp_path) as device:
            assert device == torch.device("cpu")
    assert "no CUDA device: running on CPU" in caplog.text
    with pytest.raises(ResrecoverError, match="cuda"):
        with acquire_device("cuda", lock_dir=tmp_path):
            pass
    with pytest.raises(ResrecoverError, match="expected 'auto'"):
        with acquire_device("gpu0"):
            pass


FAKE_NVIDIA_SMI = """#!/bin/sh
echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)"
echo "  MIG 1g.10gb     Device  0: (UUID: MIG-bbbb)"
echo "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-cccc)"
"""

COUNT_WITHOUT_TORCH = (
    "import sys\n"
    "from resrecover.methods.device import cuda_device_count\n"
    "print(cuda_device_count(), 'torch' in sys.modules)\n"
)


@pytest.mark.parametrize(
    "visible,expected",
    [(None, "2"), ("1", "1"), ("GPU-cccc,GPU-aaaa", "2"), ("", "0"), ("-1", "0")],
)
def test_gpu_count_for_the_dag_asks_nvidia_smi_without_loading_torch(tmp_path, monkeypatch, visible, expected):
    """common.smk's SIM_GPU: nvidia-smi's GPUs (not MIG lines), within CUDA_VISIBLE_DEVICES, torch never imported."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text(FAKE_NVIDIA_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    out = subprocess.run([sys.executable, "-c", COUNT_WITHOUT_TORCH], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [expected, "False"]


def test_gpu_count_without_nvidia_smi_is_zero_and_a_torch_process_gets_torchs_count(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi here
    out = subprocess.run([sys.executable, "-c", COUNT_WITHOUT_TORCH], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "False"]
    # this test process has torch loaded: its count is the devices torch can number
    assert cuda_device_count() == torch.cuda.device_count()
