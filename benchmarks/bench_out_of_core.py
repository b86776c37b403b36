"""Out-of-core recovery of a volume twice the memory budget, against the in-memory path.

ours: :func:`resrecover.methods.infer.recover_volume` with ``max_memory_gb=budget``: the input
HDF5 is read lazily slab by slab, the 2.5D tiling streams through it and the output is written to
a chunked HDF5 as slices become final.

peer (what a user does without it): read the whole volume (:func:`resrecover.io.read_volume`),
run the same tiling on the in-memory array with its default buffers
(:func:`resrecover.methods.tiling.predict_volume_25d`), and write the result
(:func:`resrecover.io.write_volume`).

Both load the same trained-model files (a DeepNet saved with :func:`save_model`: the smallest
configuration, 2 base channels, depth 1, and stacks of 3 slices instead of 5, so that the network's
cost does not swamp a 2-core CPU; the memory behaviour is the tiling's and the I/O's, and the
streaming path is the same for any stack depth) and use the quick preset's inference settings
(128² tiles, 16 px overlap, batches of 8, which ``recover_volume`` may reduce to fit the budget).
The volume is ``2 × budget`` of float32 slices of 1024×1024.

Peak memory is each subprocess's own ``VmHWM``. The budget governs the tiling buffers, not the
interpreter, torch and the model, which every run pays whatever the volume size: the row reports
the process's peak RSS and its growth over the RSS measured after the imports (the "baseline");
the target is judged on the growth, and the total is reported next to it.
"""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks import harness

NAME = "out_of_core"
TITLE = "Out-of-core recovery"
DEFAULTS = {
    "budget_gb": 0.15,
    "slice_px": 1024,
    "architecture": {"n_slices": 3, "base_channels": 2, "depth": 1, "extra_convs": 0, "batch_norm": False},
    "inference": {"tile_px": 128, "overlap_px": 16, "blending": "triangular", "batch_size": 8},
    "voxel_size_um": 3.2,
    "volume_factor": 2.0,  # volume size / budget
}

#: tiny sizes for `run_all.py --smoke` (checks that the script works, measures nothing)
SMOKE = {"budget_gb": 0.045, "slice_px": 256, "volume_factor": 0.2}


def _opts(options):
    return harness.merged_options(DEFAULTS, options)


def _shape(o) -> tuple[int, int, int]:
    plane = o["slice_px"] ** 2 * 4
    return (math.ceil(o["volume_factor"] * o["budget_gb"] * 1e9 / plane), o["slice_px"], o["slice_px"])


def prepare(workdir: Path, options: dict) -> dict[str, Path]:
    """The input volume (HDF5, 2 × budget), a small one for the warm-up, and the model files."""
    import numpy as np

    o = _opts(options)
    workdir = Path(workdir)
    shape = _shape(o)
    arch = o["architecture"]
    tag = "s{n_slices}c{base_channels}d{depth}e{extra_convs}{bn}".format(**arch, bn="bn" if arch["batch_norm"] else "")
    paths = {
        "input": workdir / f"ooc_input_{'x'.join(map(str, shape))}.h5",
        "small": workdir / "ooc_input_small.h5",
        "weights": workdir / f"ooc_model_{tag}.safetensors",
        "settings": workdir / f"ooc_model_{tag}.json",
    }
    from resrecover.io import write_volume

    if not paths["input"].exists():
        rng = np.random.default_rng(31)
        volume = np.empty(shape, np.float32)
        for z in range(shape[0]):  # slice by slice: the parent never holds float64 copies
            volume[z] = rng.random(shape[1:], dtype=np.float32)
        write_volume(paths["input"], volume, o["voxel_size_um"])
        del volume
    if not paths["small"].exists():
        small = np.random.default_rng(32).random((8, 256, 256), dtype=np.float32)
        write_volume(paths["small"], small, o["voxel_size_um"])
    if not paths["settings"].exists():
        import torch

        from resrecover.methods.deepnet import DeepNet
        from resrecover.methods.modelio import save_model

        torch.manual_seed(0)
        model = DeepNet(**o["architecture"])
        settings = {"method": "deepnet", "architecture": model.architecture(),
                    "normalization": {"offset": 0.5, "scale": 0.29}}
        save_model(model, settings, paths["weights"], paths["settings"])
    return paths


def _imports():
    import h5py  # noqa: F401
    import torch

    import resrecover.io  # noqa: F401
    import resrecover.methods.infer  # noqa: F401
    import resrecover.methods.modelio  # noqa: F401

    torch.set_num_threads(harness.usable_cores())


def side_ours(workdir: Path, options: dict) -> dict:
    from resrecover.methods.infer import recover_volume

    o, paths, baseline, out = _setup(workdir, options, "ooc_out_ours.h5")
    runs = []

    def call(source=paths["input"]):
        run = recover_volume(paths["weights"], paths["settings"], source, out, o["inference"], device="cpu",
                             max_memory_gb=o["budget_gb"], progress=False)
        runs.append(run)
        return run

    return _timed_run(call, paths, baseline)


def _setup(workdir: Path, options: dict, out_name: str):
    """A side's options, prepared inputs, RSS after the imports (the baseline) and output path."""
    o = _opts(options)
    paths = prepare(workdir, o)
    _imports()
    baseline = harness.current_rss_mb()
    return o, paths, baseline, Path(workdir) / out_name


def _timed_run(call, paths: dict, baseline: float) -> dict:
    """One timed ``call()`` after a warm-up on the small file, with the tiling run's sizes."""
    timing = harness.measure(call, repeats=1, warmup=lambda: call(paths["small"]))
    run = timing.pop("result")
    timing.update(
        baseline_rss_mb=round(baseline, 1),
        slab_slices=run.slab_slices,
        tiling_buffers_mb=round(run.memory_bytes / 2**20, 1),
        n_windows=run.n_tiles,
        batch_size=run.batch_size,
    )
    return timing


def side_peer(workdir: Path, options: dict) -> dict:
    from resrecover.io import read_volume, write_volume
    from resrecover.methods.infer import torch_predictor
    from resrecover.methods.modelio import load_model
    from resrecover.methods.tiling import predict_volume_25d

    o, paths, baseline, out = _setup(workdir, options, "ooc_out_peer.h5")
    inf = o["inference"]
    arch = o["architecture"]

    def call(source=paths["input"]):
        volume, attrs = read_volume(source)
        model, _ = load_model(paths["weights"], paths["settings"], device="cpu")
        run = predict_volume_25d(
            torch_predictor(model, "cpu", "2.5d"), volume, n_slices=arch["n_slices"], tile_px=inf["tile_px"],
            overlap_px=inf["overlap_px"], blending=inf["blending"], batch_size=inf["batch_size"],
            size_multiple=2 ** arch["depth"], progress=False,
        )
        write_volume(out, run.output, float(attrs["voxel_size_um"]))
        return run

    return _timed_run(call, paths, baseline)


SIDES = {"ours": side_ours, "peer": side_peer}


def _max_diff(a_path: Path, b_path: Path) -> float:
    import h5py
    import numpy as np

    worst = 0.0
    with h5py.File(a_path, "r") as fa, h5py.File(b_path, "r") as fb:
        a, b = fa["volume"], fb["volume"]
        for z0 in range(0, a.shape[0], 16):
            worst = max(worst, float(np.abs(a[z0 : z0 + 16] - b[z0 : z0 + 16]).max()))
    return worst


def run(workdir: Path, options: dict | None = None) -> dict:
    o = _opts(options)
    # memory is the target: one run each
    workdir, ours, peer = harness.prepare_and_run_pair(__file__, workdir, o, prepare, rounds=1)
    shape = _shape(o)
    volume_mb = math.prod(shape) * 4 / 2**20
    budget_mb = o["budget_gb"] * 1e9 / 2**20
    row = harness.result_row(
        NAME, TITLE, ours, peer,
        sizes=f"{'×'.join(map(str, shape))} float32 HDF5 = {volume_mb:.0f} MB, budget max_memory_gb={o['budget_gb']:g} "
        f"({budget_mb:.0f} MB); DeepNet {o['architecture']}",
        ours_label=f"resrecover.methods.infer.recover_volume(..., max_memory_gb={o['budget_gb']:g})",
        peer_label="in memory: read_volume → predict_volume_25d on the array → write_volume",
        target="peak RSS ≤ budget",
        notes=[],
    )
    if harness.side_failed(row, ours, peer):
        return row
    diff = _max_diff(workdir / "ooc_out_ours.h5", workdir / "ooc_out_peer.h5")
    for f in ("ooc_out_ours.h5", "ooc_out_peer.h5"):
        (workdir / f).unlink(missing_ok=True)
    growth = ours["peak_rss_mb"] - ours["baseline_rss_mb"]
    peer_growth = peer["peak_rss_mb"] - peer["baseline_rss_mb"]
    row["check"] = f"outputs max |diff| {diff:.1e}"
    row["check_short"] = f"max |diff| {diff:.0e}"
    row["extra_fields"] = [
        ("RSS growth over the baseline", f"ours {growth:.0f} MB (budget {budget_mb:.0f} MB, "
                                         f"tiling buffers bound {ours['tiling_buffers_mb']:.0f} MB, slabs of "
                                         f"{ours['slab_slices']} slices, batch {ours.get('batch_size')}); in-memory "
                                         f"{peer_growth:.0f} MB (slabs of {peer['slab_slices']}, batch "
                                         f"{peer.get('batch_size')})"),
        ("peak RSS ≤ budget", f"growth: {'yes' if growth <= budget_mb else 'no'}; total process "
                              f"{ours['peak_rss_mb']:.0f} MB: {'yes' if ours['peak_rss_mb'] <= budget_mb else 'no'} "
                              f"(interpreter + torch + model baseline {ours['baseline_rss_mb']:.0f} MB)"),
    ]
    row["met"] = bool(growth <= budget_mb)
    row["notes"].append(
        "One timed run per side (memory is the target; the warm-up runs the same call on an 8×256×256 file). "
        "The times are not like for like when the budget made recover_volume shrink its batch."
    )
    return row


if __name__ == "__main__":
    harness.main(SIDES, run, __doc__)
