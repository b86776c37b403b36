"""Training DeepNet and SRCNN-3D: they learn, they resume bit for bit, SRCNN keeps its best weights."""

import copy
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage as ndi

from resrecover.config import load_config, training_seed
from resrecover.masks import disc_mask
from resrecover.methods.modelio import check_safetensors_file, load_model, read_json
from resrecover.methods.training import (
    LOG_COLUMNS,
    TrainingError,
    patch_corners,
    split_patches,
    train_model,
)

REPO = Path(__file__).resolve().parents[1]
SHAPE = (16, 32, 32)


def registered_pair(shape=SHAPE, seed=0):
    """A tiny foam (material 1, spherical voids 0) and its blurred, contrast-reduced LRES view."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    hres = np.ones(shape, np.float32)
    for _ in range(12):
        centre = rng.uniform(0, np.array(shape))
        radius = rng.uniform(2.0, 4.5)
        dist = np.sqrt((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2)
        hres = np.minimum(hres, np.clip(dist - radius + 0.5, 0, 1))
    lres = 0.4 * ndi.gaussian_filter(hres, 0.8) + 0.3
    return lres.astype(np.float32), hres


@pytest.fixture(scope="module")
def config():
    return load_config(REPO / "tests" / "config" / "test.yaml")


@pytest.fixture(scope="module")
def pair():
    return registered_pair()


def run(method, pair, cfg, folder, seed=1, **kwargs):
    folder = Path(folder)
    kwargs.setdefault("threads", 1)
    kwargs.setdefault("progress", False)
    summary = train_model(
        method,
        pair[0],
        pair[1],
        cfg,
        folder / "model.safetensors",
        folder / "model.json",
        folder / "train_log.csv",
        folder / "checkpoints",
        seed=seed,
        device="cpu",
        **kwargs,
    )
    return summary, folder


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), f"tensor {name} differs"


def recover_deepnet(model, lres):
    """Whole-volume DeepNet prediction: centre slice of each 5-slice stack (slices 2..nz-3)."""
    stacks = np.stack([lres[z : z + 5] for z in range(lres.shape[0] - 4)])
    with torch.no_grad():
        return model(torch.from_numpy(stacks))[:, 2].numpy()


# --- learning ---------------------------------------------------------------------------------


def test_deepnet_overfits_a_tiny_pair(config, pair, tmp_path):
    cfg = copy.deepcopy(config)
    cfg["deepnet"].update(iterations=250, learning_rate=4e-3, checkpoint_every=1000)
    summary, folder = run("deepnet", pair, cfg, tmp_path, augment=False)
    log = pd.read_csv(folder / "train_log.csv")
    assert list(log.columns) == LOG_COLUMNS
    assert log.iteration.tolist() == list(range(1, 251))
    assert log.loss[:5].mean() / log.loss[-20:].median() >= 10
    assert (log.loss_intermediate.notna() & log.loss_final.notna()).all() and log.val_loss.isna().all()

    model, settings = load_model(folder / "model.safetensors", folder / "model.json")
    lres, hres = pair
    recovered = recover_deepnet(model, lres)
    mse_in = np.mean((lres[2:-2] - hres[2:-2]) ** 2)
    mse_out = np.mean((recovered - hres[2:-2]) ** 2)
    assert mse_out < mse_in / 5, (mse_in, mse_out)
    assert settings["iterations"] == 250 and settings["seed"] == 1
    assert settings["normalization"]["offset"] == pytest.approx(lres.mean(), rel=1e-5)
    assert settings["normalization"]["scale"] == pytest.approx(lres.std(), rel=1e-4)
    assert settings["architecture"]["base_channels"] == cfg["deepnet"]["base_channels"]
    assert summary["finished"] and summary["selected_iteration"] == 250
    # the checkpoints are gone once the outputs are written
    assert not (folder / "checkpoints").exists()


def test_srcnn_overfits_a_tiny_pair(config, pair, tmp_path):
    cfg = copy.deepcopy(config)
    cfg["srcnn"].update(
        iterations=150,
        learning_rate=3e-3,
        kernels=[5, 3, 3],
        filters=[32, 16],
        validate_every=10,
        checkpoint_every=1000,
    )
    summary, folder = run("srcnn", pair, cfg, tmp_path, augment=False)
    log = pd.read_csv(folder / "train_log.csv")
    assert log.loss[:5].mean() / log.loss[-20:].median() >= 10
    val = log.val_loss.dropna()
    assert val.iloc[0] / val.min() >= 3
    model, _ = load_model(folder / "model.safetensors", folder / "model.json")
    lres, hres = pair
    with torch.no_grad():
        recovered = model(torch.from_numpy(lres[None, None]))[0, 0].numpy()
    assert np.mean((recovered - hres) ** 2) < np.mean((lres - hres) ** 2) / 5


def test_loss_only_counts_the_fov(config, pair, tmp_path):
    """Outside the FOV the target is garbage; with the mask the garbage cannot change training."""
    cfg = copy.deepcopy(config)
    cfg["deepnet"].update(iterations=6, checkpoint_every=1000)
    lres, hres = pair
    mask = disc_mask(SHAPE[1:], 12)
    garbage = hres.copy()
    garbage[:, ~mask] = 1e3
    run("deepnet", (lres, hres), cfg, tmp_path / "clean", mask=mask)
    run("deepnet", (lres, garbage), cfg, tmp_path / "garbage", mask=mask)
    assert_same_weights(tmp_path / "clean", tmp_path / "garbage")
    log = pd.read_csv(tmp_path / "garbage" / "train_log.csv")
    assert log.loss.max() < 100


# --- resume -----------------------------------------------------------------------------------


# what the quick preset's training adds to the paper's plain Adam: warm-up + cosine schedule, tiles
# drawn where the foam is, bf16 autocast; resume must stay exact with every one of them
SCHEDULED = {"schedule": "cosine", "warmup_iterations": 3, "final_learning_rate_fraction": 0.05, "precision": "bfloat16"}


@pytest.mark.parametrize(
    "method,extra",
    [
        ("deepnet", {}),
        ("srcnn", {}),
        ("deepnet", {**SCHEDULED, "tile_sampling": "foam", "channels_last": True}),
        ("srcnn", SCHEDULED),
    ],
    ids=["deepnet", "srcnn", "deepnet-scheduled", "srcnn-scheduled"],
)
def test_resume_gives_bit_identical_weights(config, pair, tmp_path, method, extra):
    cfg = copy.deepcopy(config)
    cfg[method].update(iterations=12, checkpoint_every=4, **extra)
    if method == "srcnn":
        cfg["srcnn"]["validate_every"] = 3
    run(method, pair, cfg, tmp_path / "straight")

    summary, folder = run(method, pair, cfg, tmp_path / "stopped", stop_after=6)
    assert not summary["finished"] and summary["iterations"] == 6
    assert not (folder / "model.safetensors").exists() and not (folder / "train_log.csv").exists()
    ckpt = sorted((folder / "checkpoints").glob("checkpoint-*"))
    assert [p.name for p in ckpt] == ["checkpoint-00000006.json", "checkpoint-00000006.safetensors"]
    check_safetensors_file(ckpt[1])  # tensors in safetensors, the rest in JSON: no pickle anywhere
    meta = read_json(ckpt[0])
    assert meta["iteration"] == 6 and "numpy" in meta["rng"] and "python" in meta["rng"]

    resumed, _ = run(method, pair, cfg, folder)
    assert resumed["resumed_from"] == 6 and resumed["finished"]
    assert_same_weights(tmp_path / "straight", folder)
    straight_log = pd.read_csv(tmp_path / "straight" / "train_log.csv")
    resumed_log = pd.read_csv(folder / "train_log.csv")
    assert resumed_log.iteration.tolist() == list(range(1, 13))
    cols = ["loss", "loss_intermediate", "loss_final", "val_loss", "learning_rate"]
    pd.testing.assert_frame_equal(straight_log[cols], resumed_log[cols])
    if extra:  # the schedule really ran: warm-up ramp, then a decay towards the final fraction
        rates = straight_log["learning_rate"].to_numpy()
        base = cfg[method]["learning_rate"]
        assert rates[0] == pytest.approx(base / 3) and rates[2] == pytest.approx(base)
        assert np.all(np.diff(rates[2:]) < 0) and rates[-1] == pytest.approx(0.05 * base)
    straight_settings = read_json(tmp_path / "straight" / "model.json")
    resumed_settings = read_json(folder / "model.json")
    assert straight_settings["weights_sha256"] == resumed_settings["weights_sha256"]
    assert straight_settings["best_val_loss"] == resumed_settings["best_val_loss"]


@pytest.mark.parametrize("extra", [{}, {**SCHEDULED, "tile_sampling": "foam", "channels_last": True}], ids=["plain", "scheduled"])
def test_resume_after_sigkill_gives_bit_identical_weights(config, pair, tmp_path, extra):
    """A real ``kill -9`` two iterations after a checkpoint; the re-run redoes those iterations."""
    cfg = copy.deepcopy(config)
    cfg["deepnet"].update(iterations=12, checkpoint_every=4, **extra)
    run("deepnet", pair, cfg, tmp_path / "straight")

    folder = tmp_path / "killed"
    np.save(tmp_path / "lres.npy", pair[0])
    np.save(tmp_path / "hres.npy", pair[1])
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    script = textwrap.dedent(f"""
        import json, os, signal
        import numpy as np
        from resrecover.methods.training import train_model
        folder = {str(folder)!r}
        def die(iteration):
            if iteration == 6:
                os.kill(os.getpid(), signal.SIGKILL)
        train_model("deepnet", np.load({str(tmp_path / 'lres.npy')!r}), np.load({str(tmp_path / 'hres.npy')!r}),
                    json.load(open({str(tmp_path / 'config.json')!r})), folder + "/model.safetensors",
                    folder + "/model.json", folder + "/train_log.csv", folder + "/checkpoints", seed=1,
                    device="cpu", threads=1, progress=False, on_iteration=die)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    running_log = pd.read_csv(folder / "checkpoints" / "train_log.csv")
    assert running_log.iteration.max() == 6  # rows 5 and 6 were written after the last checkpoint
    assert not (folder / "model.safetensors").exists()

    resumed, _ = run("deepnet", pair, cfg, folder)
    assert resumed["resumed_from"] == 4
    assert_same_weights(tmp_path / "straight", folder)
    assert pd.read_csv(folder / "train_log.csv").iteration.tolist() == list(range(1, 13))


def test_torn_or_foreign_checkpoints_are_not_resumed(config, pair, tmp_path):
    cfg = copy.deepcopy(config)
    cfg["deepnet"].update(iterations=8, checkpoint_every=4)
    run("deepnet", pair, cfg, tmp_path / "straight", seed=2)

    # a checkpoint of another run (seed 1) in the folder: ignored, training starts afresh
    _, folder = run("deepnet", pair, cfg, tmp_path / "other", seed=1, stop_after=4)
    summary, _ = run("deepnet", pair, cfg, folder, seed=2)
    assert summary["resumed_from"] == 0
    assert_same_weights(tmp_path / "straight", folder)

    # a checkpoint whose tensors were cut short by a crash: ignored
    _, folder = run("deepnet", pair, cfg, tmp_path / "torn", seed=2, stop_after=4)
    tensors = folder / "checkpoints" / "checkpoint-00000004.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-100])
    summary, _ = run("deepnet", pair, cfg, folder, seed=2)
    assert summary["resumed_from"] == 0
    assert_same_weights(tmp_path / "straight", folder)


@pytest.mark.parametrize(
    "method,settings,resumed_from",
    [
        # a constant step size: the stopped shorter run is extended from its checkpoint
        ("srcnn", {"iterations": 10, "checkpoint_every": 3, "validate_every": 2}, 4),
        # cosine: its step sizes depend on the total, so a shorter run's checkpoint is another run
        ("deepnet", {"iterations": 8, "checkpoint_every": 2, "schedule": "cosine"}, 0),
    ],
    ids=["constant-extended", "cosine-restarted"],
)
def test_a_stopped_shorter_run_is_extended_only_when_its_steps_do_not_depend_on_the_total(
    config, pair, tmp_path, method, settings, resumed_from
):
    cfg = copy.deepcopy(config)
    cfg[method].update(settings)
    run(method, pair, cfg, tmp_path / "straight")
    short = copy.deepcopy(cfg)
    short[method]["iterations"] = 6
    _, folder = run(method, pair, short, tmp_path / "stopped", stop_after=4)
    summary, _ = run(method, pair, cfg, folder)
    assert summary["resumed_from"] == resumed_from
    assert_same_weights(tmp_path / "straight", folder)


# --- settings per σ -------------------------------------------------------------------------------


def test_sigma_overrides_are_honoured_and_recorded(config, pair, tmp_path):
    cfg = copy.deepcopy(config)
    cfg["deepnet"].update(
        iterations=3,
        checkpoint_every=2,
        sigma_overrides=[{"sigma_um": 9, "iterations": 5, "learning_rate": 0.002, "schedule": "cosine"}],
    )
    summary, folder = run("deepnet", pair, cfg, tmp_path / "nine", sigma_um=9.0)
    settings = read_json(folder / "model.json")
    assert summary["iterations"] == 5 and settings["iterations"] == 5 and settings["sigma_um"] == 9.0
    assert settings["training"]["iterations"] == 5 and settings["training"]["learning_rate"] == 0.002
    assert settings["training"]["schedule"] == "cosine" and "sigma_overrides" not in settings["training"]
    assert pd.read_csv(folder / "train_log.csv").iteration.max() == 5
    # another σ keeps the block's own settings
    summary, folder = run("deepnet", pair, cfg, tmp_path / "three", sigma_um=3.0)
    settings = read_json(folder / "model.json")
    assert summary["iterations"] == 3 and settings["training"]["learning_rate"] == cfg["deepnet"]["learning_rate"]
    assert settings["training"]["schedule"] == "constant" and settings["sigma_um"] == 3.0


def test_foam_sampling_draws_tiles_centred_in_the_fov():
    from resrecover.masks import disc_mask as disc
    from resrecover.methods.training import tile_corners_yx

    mask = np.broadcast_to(disc((32, 32), 8.0), (4, 32, 32))
    corners = tile_corners_yx(mask, 8, "foam")
    assert len(corners) and mask[0][corners[:, 0] + 4, corners[:, 1] + 4].all()
    assert len(corners) < (32 - 8 + 1) ** 2
    assert tile_corners_yx(mask, 8, "uniform") is None
    with pytest.raises(TrainingError, match="tile_sampling"):
        tile_corners_yx(mask, 8, "everywhere")


# --- SRCNN keeps its best weights ------------------------------------------------------------


def test_srcnn_keeps_the_lowest_validation_loss_weights(config, pair, tmp_path):
    cfg = copy.deepcopy(config)
    # a learning rate this high makes the validation loss climb again before the end
    cfg["srcnn"].update(
        iterations=30, learning_rate=0.01, validate_every=3, kernels=[3, 1, 3], filters=[8, 4], checkpoint_every=1000
    )
    summary, folder = run("srcnn", pair, cfg, tmp_path)
    log = pd.read_csv(folder / "train_log.csv")
    val = log.dropna(subset=["val_loss"])
    assert val.iteration.tolist() == list(range(3, 31, 3))
    best = val.loc[val.val_loss.idxmin()]
    assert best.iteration != 30, "fixture: the validation loss must rise again for this test to mean anything"
    settings = read_json(folder / "model.json")
    assert settings["selected_iteration"] == summary["selected_iteration"] == int(best.iteration)
    assert settings["best_val_loss"] == pytest.approx(best.val_loss, rel=1e-6)

    # recompute the validation loss of the saved weights independently
    model, settings = load_model(folder / "model.safetensors", folder / "model.json")
    lres, hres = pair
    p, norm = cfg["srcnn"]["patch_px"], settings["normalization"]
    _, val_corners = split_patches(
        patch_corners(SHAPE, p, cfg["srcnn"]["patch_stride_px"]), cfg["srcnn"]["validation_fraction"], seed=1
    )
    sse, count = 0.0, 0
    with torch.no_grad():
        for z, y, x in val_corners:
            window = (slice(z, z + p), slice(y, y + p), slice(x, x + p))
            out = model(torch.from_numpy(np.ascontiguousarray(lres[window])[None, None]))[0, 0].numpy()
            sse += float(np.sum(((out - hres[window]) / norm["scale"]) ** 2))
            count += out.size
    assert sse / count == pytest.approx(best.val_loss, rel=1e-4)
    last_val = val.val_loss.iloc[-1]
    assert sse / count < last_val


def test_patch_split_is_seeded_and_disjoint():
    corners = patch_corners((16, 32, 32), 8, 4, mask=np.broadcast_to(disc_mask((32, 32), 12), (16, 32, 32)))
    assert len(corners) > 10
    train_a, val_a = split_patches(corners, 0.2, seed=5)
    train_b, val_b = split_patches(corners, 0.2, seed=5)
    assert np.array_equal(val_a, val_b) and np.array_equal(train_a, train_b)
    assert len(train_a) + len(val_a) == len(corners) and len(val_a) == round(0.2 * len(corners))
    assert not set(map(tuple, train_a)) & set(map(tuple, val_a))
    _, val_c = split_patches(corners, 0.2, seed=6)
    assert not np.array_equal(val_a, val_c)
    with pytest.raises(TrainingError, match="patch"):
        split_patches(corners[:1], 0.2, seed=0)


def test_bad_inputs_are_refused(config, pair, tmp_path):
    lres, hres = pair
    with pytest.raises(TrainingError, match="shape"):
        run("deepnet", (lres, hres[:, :16]), config, tmp_path)
    with pytest.raises(TrainingError, match="rl"):
        run("rl", pair, config, tmp_path)
    bad = lres.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(TrainingError, match="NaN"):
        run("deepnet", (bad, hres), config, tmp_path)
    cfg = copy.deepcopy(config)
    cfg["deepnet"]["tile_px"] = 64
    with pytest.raises(TrainingError, match="tile_px"):
        run("deepnet", pair, cfg, tmp_path)


def test_training_reads_volumes_from_files(config, pair, tmp_path):
    from resrecover.io import write_volume

    write_volume(tmp_path / "lres.h5", pair[0], 4.0)
    write_volume(tmp_path / "hres.h5", pair[1], 4.0)
    cfg = copy.deepcopy(config)
    cfg["srcnn"].update(iterations=3, validate_every=2)
    summary, folder = run("srcnn", (tmp_path / "lres.h5", tmp_path / "hres.h5"), cfg, tmp_path / "out")
    settings = read_json(folder / "model.json")
    assert settings["lres"].endswith("lres.h5") and settings["volume_shape"] == list(SHAPE)
    assert summary["selected_iteration"] in (2, 3)


def test_workflow_script_trains_with_the_config_fov(config, pair, tmp_path):
    """The rule's thin adapter, run as Snakemake runs it (a ``snakemake`` object in its globals)."""
    import runpy
    from types import SimpleNamespace

    from resrecover.io import write_volume

    write_volume(tmp_path / "lres.h5", pair[0], 4.0)
    write_volume(tmp_path / "hres.h5", pair[1], 4.0)
    cfg = copy.deepcopy(config)
    cfg["deepnet"].update(iterations=3, checkpoint_every=2)
    out = tmp_path / "models" / "deepnet" / "sigma3"
    smk = SimpleNamespace(
        input=SimpleNamespace(lres=str(tmp_path / "lres.h5"), hres=str(tmp_path / "hres.h5")),
        output=SimpleNamespace(
            weights=str(out / "model.safetensors"),
            settings=str(out / "model.json"),
            train_log=str(out / "train_log.csv"),
        ),
        params=SimpleNamespace(checkpoint_dir=str(out / "checkpoints")),
        wildcards=SimpleNamespace(network="deepnet", sigma="3", member="2"),
        threads=1,
        log=[str(tmp_path / "train.log")],
        config=cfg,
    )
    runpy.run_path(str(REPO / "workflow" / "scripts" / "train.py"), init_globals={"snakemake": smk})
    model, settings = load_model(out / "model.safetensors", out / "model.json")
    # the seed comes from the package: the member's training_seed, not a rule parameter
    assert settings["seed"] == training_seed(cfg["seed"], "deepnet", 3.0, 2) != training_seed(cfg["seed"], "deepnet", 3.0)
    assert settings["fov_masked"] and settings["iterations"] == 3
    assert "train deepnet" in (tmp_path / "train.log").read_text()  # the progress bar went to the log
    assert len(pd.read_csv(out / "train_log.csv")) == 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_runs_on_the_gpu_it_acquired(config, pair, tmp_path):
    from resrecover.methods.device import acquire_device

    cfg = copy.deepcopy(config)
    cfg["deepnet"].update(iterations=4, checkpoint_every=2)
    with acquire_device("cuda", lock_dir=tmp_path / "locks") as device:
        assert device.type == "cuda"
        summary = train_model(
            "deepnet",
            pair[0],
            pair[1],
            cfg,
            tmp_path / "m.safetensors",
            tmp_path / "m.json",
            tmp_path / "log.csv",
            tmp_path / "ck",
            seed=1,
            device=device,
            progress=False,
        )
    assert summary["finished"]
    model, settings = load_model(tmp_path / "m.safetensors", tmp_path / "m.json", device="cuda")
    assert settings["device"].startswith("cuda") and next(model.parameters()).is_cuda


def test_training_uses_the_fused_adam_step_on_the_cpu():
    """The resume tests above run with it: a restored moment must take its parameter's layout."""
    from resrecover.methods.training.loop import _adam

    param = torch.nn.Parameter(torch.zeros(2, 3, 4, 4).to(memory_format=torch.channels_last))
    assert _adam([param], 1e-3, torch.device("cpu")).defaults["fused"] is True
