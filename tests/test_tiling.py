"""Tiled, out-of-core inference (resrecover.methods.tiling / infer): seamless, averaged, streamed, OOM-safe."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from resrecover.io import read_volume, read_volume_lazy, write_volume
from resrecover.methods.tiling import (
    blending_weights,
    predict_volume_25d,
    predict_volume_3d,
    slab_slices_for_memory,
    streaming_memory_bytes,
    tile_starts,
    weight_sums,
)

# sizes that are multiples of none of the tiles below
SHAPE = (13, 37, 45)


@pytest.fixture
def volume():
    return np.random.default_rng(0).random(SHAPE, dtype=np.float32)


def affine_predictor(batch: np.ndarray) -> np.ndarray:
    """A fixed pointwise linear model: 2x + 1."""
    return 2.0 * batch + 1.0


def slice_mixing_predictor(n_slices: int, seed: int = 1):
    """A fixed 1x1 convolution over the stack's slices (channels) plus a per-slice bias.

    Its output depends on the position of a slice in the stack, so the stack average is tested too.
    """
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(n_slices, n_slices)).astype(np.float32)
    bias = rng.normal(size=n_slices).astype(np.float32)

    def predict(batch):
        return np.einsum("ji,bi...->bj...", matrix, batch) + bias[None, :, None, None]

    return predict


def whole_slice_25d(predictor, volume, n_slices):
    """Reference: every stack of n consecutive whole slices predicted at once, each slice averaged."""
    nz = volume.shape[0]
    total = np.zeros(volume.shape, dtype=np.float64)
    count = np.zeros(nz)
    for k in range(nz - n_slices + 1):
        total[k : k + n_slices] += predictor(volume[None, k : k + n_slices])[0]
        count[k : k + n_slices] += 1
    return total / count[:, None, None]


# ------------------------------------------------------------------------------------ the plan
@pytest.mark.parametrize("length,tile,overlap", [(10, 4, 1), (45, 16, 4), (16, 16, 4), (17, 16, 4), (100, 9, 0)])
def test_tile_starts_cover_the_axis_with_at_least_the_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))  # shared >= overlap, no gaps
    assert all(b > a for a, b in zip(starts, starts[1:]))


def test_tile_starts_for_an_axis_shorter_than_the_tile():
    assert tile_starts(3, 16, 4) == [0]


def test_triangular_weights_cross_fade_to_one_and_normalized_weights_sum_to_one():
    tile, overlap = 16, 4
    # two tiles sharing exactly `overlap` voxels: across the seam the raw ramps already sum to 1
    # (at the volume's outer edges only one tile covers, and normalization takes care of it)
    sums = weight_sums(2 * tile - overlap, tile, overlap, "triangular")
    np.testing.assert_allclose(sums[overlap:-overlap], 1.0, atol=1e-12)
    # any layout: the 3D weights accumulated over the tiles, divided by their sum, give 1 everywhere
    weights = blending_weights((5, tile, tile), (4, overlap, overlap), ("uniform", "triangular", "triangular"))
    assert weights.min() > 0 and weights.max() == 1
    accumulated = np.zeros((13, 37, 45))
    starts = [tile_starts(n, t, o) for n, t, o in zip((13, 37, 45), (5, tile, tile), (4, overlap, overlap))]
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                accumulated[z : z + 5, y : y + tile, x : x + tile] += weights
    separable = np.multiply.outer(
        np.multiply.outer(weight_sums(13, 5, 4, "uniform"), weight_sums(37, tile, overlap)),
        weight_sums(45, tile, overlap),
    )
    np.testing.assert_allclose(accumulated, separable, rtol=1e-6)
    normalized_sum = np.zeros_like(accumulated)
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                sl = np.s_[z : z + 5, y : y + tile, x : x + tile]
                normalized_sum[sl] += weights / accumulated[sl]
    np.testing.assert_allclose(normalized_sum, 1.0, atol=1e-6)


def test_triangular_ramps_are_linear_over_the_overlap():
    w = blending_weights((12,), 3, "triangular")
    np.testing.assert_allclose(w[:4], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(w[-3:], [0.75, 0.5, 0.25])


# ------------------------------------------------------------------------------ seamless tiling
@pytest.mark.parametrize("blending", ["triangular", "uniform"])
def test_25d_tiling_of_a_linear_model_equals_whole_volume_inference(volume, blending):
    predictor = slice_mixing_predictor(5)
    expected = whole_slice_25d(predictor, volume, 5)
    run = predict_volume_25d(predictor, volume, n_slices=5, tile_px=16, overlap_px=4, blending=blending,
                             batch_size=3, progress=False)
    assert run.n_tiles == 9 * len(tile_starts(37, 16, 4)) * len(tile_starts(45, 16, 4))
    np.testing.assert_allclose(run.output, expected, atol=1e-5)


def test_25d_identity_and_affine_are_reproduced(volume):
    identity = predict_volume_25d(lambda b: b, volume, tile_px=16, overlap_px=4, progress=False).output
    np.testing.assert_allclose(identity, volume, atol=1e-6)
    affine = predict_volume_25d(affine_predictor, volume, tile_px=16, overlap_px=4, progress=False).output
    np.testing.assert_allclose(affine, 2 * volume + 1, atol=1e-5)


def test_each_slice_is_the_mean_of_its_stack_predictions(volume):
    """Predictor adds the slice's position j in its stack: slice z gets the mean of z - k over its stacks k."""
    n, nz = 5, volume.shape[0]
    run = predict_volume_25d(
        lambda b: b + np.arange(n, dtype=np.float32)[None, :, None, None], volume,
        n_slices=n, tile_px=16, overlap_px=4, progress=False,
    )
    expected_offset = [np.mean([z - k for k in range(max(0, z - n + 1), min(z, nz - n) + 1)]) for z in range(nz)]
    assert expected_offset[0] == 0 and expected_offset[nz // 2] == 2 and expected_offset[-1] == 4  # clamped edges
    np.testing.assert_allclose(run.output - volume, np.broadcast_to(np.array(expected_offset)[:, None, None], SHAPE),
                               atol=1e-5)


@pytest.mark.parametrize("blending", ["triangular", "uniform"])
def test_3d_tiling_is_seamless(volume, blending):
    run = predict_volume_3d(affine_predictor, volume, tile_px=8, overlap_px=2, blending=blending, batch_size=5,
                            progress=False)
    np.testing.assert_allclose(run.output, 2 * volume + 1, atol=1e-5)
    ones = predict_volume_3d(lambda b: np.ones_like(b), volume, tile_px=8, overlap_px=2, progress=False).output
    np.testing.assert_allclose(ones, 1.0, atol=1e-6)  # the normalized blending weights sum to 1


def test_volumes_smaller_than_one_tile_are_padded_and_cropped():
    small = np.random.default_rng(2).random((3, 10, 7), dtype=np.float32)
    out = predict_volume_25d(affine_predictor, small, n_slices=5, tile_px=16, overlap_px=4, progress=False).output
    np.testing.assert_allclose(out, 2 * small + 1, atol=1e-5)
    out = predict_volume_3d(affine_predictor, small, tile_px=16, overlap_px=4, progress=False).output
    np.testing.assert_allclose(out, 2 * small + 1, atol=1e-5)


def test_tiles_are_multiples_of_the_network_size_and_aligned(volume):
    seen = []

    def predictor(batch):
        seen.append(batch.shape)
        return affine_predictor(batch)

    run = predict_volume_25d(predictor, volume, tile_px=20, overlap_px=4, size_multiple=8, progress=False)
    assert run.tile_shape == (5, 16, 16) and all(s[2] % 8 == 0 and s[3] % 8 == 0 for s in seen)
    assert (16 - run.overlap[1]) % 8 == 0  # stride aligned to the multiple
    np.testing.assert_allclose(run.output, 2 * volume + 1, atol=1e-5)


# ------------------------------------------------------------------------------------- streaming
class RecordingSource:
    """A sliceable volume that records the largest slab it was asked for."""

    def __init__(self, array):
        self.array, self.shape, self.largest = array, array.shape, 0

    def __getitem__(self, key):
        block = self.array[key]
        self.largest = max(self.largest, block.shape[0])
        return block


def test_streaming_from_and_to_hdf5_equals_in_memory(volume, tmp_path):
    predictor = slice_mixing_predictor(5)
    in_memory = predict_volume_25d(predictor, volume, tile_px=16, overlap_px=4, progress=False).output
    write_volume(tmp_path / "in.h5", volume, voxel_size_um=1.0)
    with read_volume_lazy(tmp_path / "in.h5") as source, h5py.File(tmp_path / "out.h5", "w") as fh:
        sink = fh.create_dataset("volume", shape=SHAPE, dtype=np.float32, chunks=(4, 16, 16))
        run = predict_volume_25d(predictor, source, sink, tile_px=16, overlap_px=4, slab_slices=7, progress=False)
        assert run.slab_slices == 7
        streamed = sink[...]
    np.testing.assert_allclose(streamed, in_memory, atol=1e-6)

    recorder = RecordingSource(volume)
    out3d = predict_volume_3d(affine_predictor, recorder, tile_px=6, overlap_px=2, slab_slices=10, progress=False)
    assert recorder.largest <= 10  # memory bounded by the slab, not the volume
    np.testing.assert_allclose(out3d.output, 2 * volume + 1, atol=1e-5)


def test_read_only_source_and_padded_sink_give_the_same_sums(volume):
    """The torch fast path (writable source, in-memory sink as accumulator) and the numpy fallbacks
    (read-only source; a sink that needs padding is not its own accumulator) agree exactly."""
    predictor = slice_mixing_predictor(5)
    fast = predict_volume_25d(predictor, volume, tile_px=16, overlap_px=4, slab_slices=7, progress=False).output
    frozen = volume.copy()
    frozen.flags.writeable = False
    slow = predict_volume_25d(predictor, frozen, tile_px=16, overlap_px=4, slab_slices=7, progress=False).output
    np.testing.assert_array_equal(fast, slow)
    odd = volume[:, :-3, :-5]  # padded to a multiple of 4: the accumulator is a separate buffer
    padded = predict_volume_25d(predictor, odd, tile_px=16, overlap_px=4, size_multiple=4, slab_slices=7,
                                progress=False).output
    assert padded.shape == odd.shape and np.isfinite(padded).all()


def test_memory_bound_formula_and_budget():
    nbytes = streaming_memory_bytes((1000, 1000), (5, 576, 576), slab_slices=36, batch_size=4)
    assert nbytes == 4 * (2 * 36 * 1000 * 1000 + 5 * 1000 * 1000 + 3 * 4 * 5 * 576 * 576)
    slab = slab_slices_for_memory((2000, 1000, 1000), (5, 576, 576), 4, max_memory_gb=1.0)
    assert 5 <= slab < 2000
    assert streaming_memory_bytes((1000, 1000), (5, 576, 576), slab, 4) <= 1e9


# ----------------------------------------------------------------------------------- OOM back-off
def oom_predictor(max_batch: int, max_tile: int, calls: list):
    def predict(batch):
        calls.append(batch.shape)
        if batch.shape[0] > max_batch or max(batch.shape[2:]) > max_tile:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return affine_predictor(batch)

    return predict


def test_out_of_memory_backs_off_batch_then_tile(volume, caplog):
    calls: list = []
    run = predict_volume_25d(oom_predictor(2, 16, calls), volume, tile_px=32, overlap_px=4, batch_size=8,
                             progress=False)
    np.testing.assert_allclose(run.output, 2 * volume + 1, atol=1e-5)
    assert run.batch_size <= 2 and run.tile_shape[1] <= 16
    assert len(run.backoffs) >= 2 and any("batch" in m for m in run.backoffs)
    assert any("restarting" in m for m in run.backoffs)
    assert "out of memory" in caplog.text

    calls.clear()
    run3d = predict_volume_3d(oom_predictor(1, 8, calls), volume, tile_px=16, overlap_px=2, batch_size=4,
                              progress=False)
    np.testing.assert_allclose(run3d.output, 2 * volume + 1, atol=1e-5)
    assert max(run3d.tile_shape) <= 8 and run3d.batch_size == 1


def test_runtime_error_saying_out_of_memory_is_backed_off_but_others_propagate(volume):
    def cpu_oom(batch):
        if batch.shape[0] > 1:
            raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate... out of memory")
        return batch

    out = predict_volume_3d(cpu_oom, volume, tile_px=8, overlap_px=2, batch_size=4, progress=False).output
    np.testing.assert_allclose(out, volume, atol=1e-6)

    def broken(batch):
        raise ValueError("a real bug")

    with pytest.raises(ValueError, match="a real bug"):
        predict_volume_3d(broken, volume, tile_px=8, overlap_px=2, progress=False)


def test_a_tile_that_never_fits_stops_with_a_clear_error(volume):
    from resrecover.methods.tiling import TilingError

    def never(batch):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(TilingError, match="out of memory"):
        predict_volume_3d(never, volume, tile_px=8, overlap_px=2, progress=False)


# ------------------------------------------------------------------------------ real networks
def _clean_positions(length, tile, overlap, radius):
    """Positions along an axis where every covering tile sees the whole receptive field (or the volume edge)."""
    clean = np.ones(length, bool)
    for start in tile_starts(length, tile, overlap):
        for p in range(start, start + tile):
            left_ok = start == 0 or p - start >= radius
            right_ok = start + tile == length or start + tile - 1 - p >= radius
            clean[p] &= left_ok and right_ok
    return clean


def test_deepnet_through_recover_volume_matches_whole_volume_away_from_seams(tmp_path):
    from resrecover.methods.deepnet import DeepNet
    from resrecover.methods.infer import recover_volume
    from resrecover.methods.modelio import save_model

    torch.manual_seed(0)
    net = DeepNet(n_slices=5, base_channels=4, depth=1, extra_convs=2).eval()
    with torch.no_grad():  # the refinement starts at zero; make it act so the whole network is tested
        for p in net.refine.parameters():
            p.normal_(0, 0.1)
    normalization = {"offset": 0.4, "scale": 0.3}
    save_model(net, {"method": "deepnet", "architecture": net.architecture(), "normalization": normalization},
               tmp_path / "model.safetensors", tmp_path / "model.json")
    rng = np.random.default_rng(3)
    volume = rng.random((7, 96, 96), dtype=np.float32)
    write_volume(tmp_path / "in.h5", volume, voxel_size_um=3.2)
    inference = {"tile_px": 48, "overlap_px": 7, "blending": "triangular", "batch_size": 4}
    run = recover_volume(tmp_path / "model.safetensors", tmp_path / "model.json", tmp_path / "in.h5",
                         tmp_path / "out.h5", inference, device="cpu", progress=False)
    tiled, attrs = read_volume(tmp_path / "out.h5")
    assert attrs["voxel_size_um"] == 3.2 and attrs["method"] == "deepnet" and len(attrs["model_sha256"]) == 64

    def whole(batch):  # the network on whole slices, with the stored normalization
        with torch.no_grad():
            x = (torch.from_numpy(batch) - normalization["offset"]) / normalization["scale"]
            return (net(x) * normalization["scale"] + normalization["offset"]).numpy()

    expected = whole_slice_25d(whole, volume, 5)
    # receptive-field radius of this depth-1 U-Net with 2 refinement convs is 12 px; 16 is safe
    clean_y = _clean_positions(96, run.tile_shape[1], run.overlap[1], radius=16)
    clean = np.zeros((7, 96, 96), bool)
    clean[:, clean_y[:, None] & clean_y[None, :]] = True
    assert clean.mean() > 0.2
    np.testing.assert_allclose(tiled[clean], expected[clean], atol=2e-5)
    # at the seams, the blending keeps the difference small compared with what the network changes
    change = np.sqrt(np.mean((expected - volume) ** 2))
    assert np.sqrt(np.mean((tiled - expected) ** 2)) < 0.1 * change


def test_srcnn_through_recover_volume_matches_whole_volume_away_from_seams(tmp_path):
    from resrecover.methods.infer import recover_volume
    from resrecover.methods.modelio import save_model
    from resrecover.methods.srcnn import SRCNN3D

    torch.manual_seed(1)
    net = SRCNN3D(kernels=(3, 1, 3), filters=(4, 4)).eval()
    with torch.no_grad():
        net.body[-1].weight.normal_(0, 0.2)
    save_model(net, {"method": "srcnn", "architecture": net.architecture(),
                     "normalization": {"offset": 0.0, "scale": 1.0}},
               tmp_path / "m.safetensors", tmp_path / "m.json")
    volume = np.random.default_rng(4).random((21, 26, 30), dtype=np.float32)
    write_volume(tmp_path / "in.h5", volume, voxel_size_um=1.0)
    inference = {"srcnn_tile_px": 12, "srcnn_overlap_px": 4, "blending": "triangular", "batch_size": 2}
    run = recover_volume(tmp_path / "m.safetensors", tmp_path / "m.json", tmp_path / "in.h5", tmp_path / "out.h5",
                         inference, device="cpu", progress=False)
    tiled, _ = read_volume(tmp_path / "out.h5")
    with torch.no_grad():
        expected = net(torch.from_numpy(volume)[None, None])[0, 0].numpy()
    masks = [_clean_positions(n, run.tile_shape[a], run.overlap[a], radius=2) for a, n in enumerate(volume.shape)]
    clean = masks[0][:, None, None] & masks[1][None, :, None] & masks[2][None, None, :]
    assert clean.mean() > 0.2
    np.testing.assert_allclose(tiled[clean], expected[clean], atol=2e-5)
    assert np.sqrt(np.mean((tiled - expected) ** 2)) < 0.2 * np.sqrt(np.mean((expected - volume) ** 2))



def test_recover_volume_job_passes_the_config_and_provenance_in_order(monkeypatch):
    """The workflow's adapter (rules recover_network, recover_ensemble_member) calls recover_volume with
    the job's files, the config's inference block, budget, hash and seed, then the provenance in order."""
    from types import SimpleNamespace

    from resrecover.config import config_hash, validate_config
    from resrecover.methods import infer

    config = validate_config({"realizations": {"train": 1, "alternate": 2}})
    calls = []
    monkeypatch.setattr(infer, "recover_volume", lambda *args, **kwargs: calls.append((args, kwargs)) or "run")
    common = {"max_memory_gb": config["compute"]["max_memory_gb"], "config_hash": config_hash(config),
              "seed": config["seed"], "realization": "r0", "sigma_um": 5.0}
    # the study's model (no member wildcard, or member 0) records no member; an ensemble's member k does
    for wildcards, member in ((SimpleNamespace(realization="r0", sigma="5"), {}),
                              (SimpleNamespace(realization="r0", sigma="5", member="0"), {}),
                              (SimpleNamespace(realization="r0", sigma="5", member="2"), {"ensemble_member": 2})):
        job = SimpleNamespace(input=SimpleNamespace(weights="w", settings="s", volume="in.h5"), output=["out.h5"],
                              threads=1, wildcards=wildcards)
        calls.clear()
        assert infer.recover_volume_job(job, config, note="x") == "run"
        (args, kwargs), = calls
        assert args == ("w", "s", "in.h5", "out.h5", config["inference"])
        assert kwargs == {**common, **member, "note": "x"}
        assert list(kwargs) == [*common, *member, "note"]


class _AsymmetricNet(torch.nn.Module):
    """A network that is not equivariant to flips or turns: it adds a ramp along y and shifts along x."""

    def forward(self, x):
        ramp = torch.linspace(0.0, 1.0, x.shape[-2]).reshape(-1, 1)
        return torch.roll(x, shifts=1, dims=-1) + ramp


@pytest.mark.parametrize("layout", ["2.5d", "3d"])
@pytest.mark.parametrize("name, n_transforms", [("half_turn", 2), ("flips", 4), ("dihedral", 8)])
def test_test_time_augmentation_is_the_mean_over_the_transforms_undone(layout, name, n_transforms):
    from resrecover.methods.infer import augmentation_transforms, torch_predictor

    rng = np.random.default_rng(5)
    batch = rng.random((2, 3, 8, 12), dtype=np.float32)  # not square: a quarter turn swaps y and x
    net = _AsymmetricNet()
    transforms = augmentation_transforms(name)
    assert len(set(transforms)) == n_transforms
    # the transforms are distinct images of an asymmetric tile, i.e. distinct group elements
    tile = torch.from_numpy(batch[0, 0])
    images = set()
    for fy, fx, turns in transforms:
        t = tile.flip(0) if fy else tile
        t = t.flip(1) if fx else t
        images.add(t.rot90(turns).numpy().tobytes())
    assert len(images) == n_transforms

    expected = np.zeros_like(batch)
    for fy, fx, turns in transforms:
        x = batch[:, :, ::-1] if fy else batch
        x = x[..., ::-1] if fx else x
        x = np.rot90(x, turns, axes=(-2, -1))
        y = net(torch.from_numpy(np.ascontiguousarray(x)[:, None] if layout == "3d" else np.ascontiguousarray(x)))
        y = y[:, 0].numpy() if layout == "3d" else y.numpy()
        y = np.rot90(y, -turns, axes=(-2, -1))
        y = y[..., ::-1] if fx else y
        expected += y[:, :, ::-1] if fy else y
    expected /= n_transforms

    got = torch_predictor(net, "cpu", layout, name)(batch)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    plain = torch_predictor(net, "cpu", layout, "none")(batch)
    assert np.abs(got - plain).max() > 0.05  # the augmentation changed this network's output


def test_test_time_augmentation_leaves_an_equivariant_network_unchanged_and_names_are_checked():
    from resrecover import ResrecoverError
    from resrecover.methods.infer import torch_predictor

    batch = np.random.default_rng(6).random((2, 5, 16, 16), dtype=np.float32)
    pointwise = torch.nn.Identity()
    np.testing.assert_allclose(torch_predictor(pointwise, "cpu", "2.5d", "dihedral")(batch), batch, atol=1e-6)
    with pytest.raises(ResrecoverError, match="test_time_augmentation: 'rotations'.*expected one of none, half_turn, flips, dihedral"):
        torch_predictor(pointwise, "cpu", "2.5d", "rotations")
