"""DeepNet training throughput on the CPU: our loop against a textbook PyTorch loop, same tiles and batch.

Settings: config/quick.yaml's ``deepnet`` block at 9 µm (32 base channels, depth 3, 9 slices,
96-px tiles drawn in the foam, batch 4, Adam with the cosine schedule, bf16 autocast and
channels_last as configured), on a 160³ pair of the quick preset's foam at 3.2 µm (the foam as HRES,
its 9 µm Gaussian blur as LRES, the loss inside the reconstructable FOV).

ours: :func:`resrecover.methods.training.train_model`, the rule ``train``'s call (normalization,
seeded batches, schedule, Adam's fused step, CSV log every iteration, a checkpoint every 100
iterations, the model written at the end); ``iterations`` timed iterations per call.

peer: a plain loop of the textbook kind: a ``Dataset`` of random tiles (the same tiles: it replays
our per-iteration random stream), ``DataLoader(batch_size=4)`` with its defaults, the same
network, initialization, loss (w1·SSE(intermediate) + w2·SSE(final) in the FOV), Adam with its
defaults (a per-tensor step on the CPU) and schedule (``LambdaLR``), ``zero_grad / forward /
backward / step``, nothing else.

Both sides use the same precision settings (the honest comparison of the network's cost); a
float32 round of both sides shows what the bf16 + channels_last options give. Same result: the
first iteration's loss must be equal, the last ones close (same tiles, weights and steps; the
fused and the per-tensor Adam step round differently, which grows to ~1% of the loss in 120
iterations).
"""

from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path

from benchmarks import harness

NAME = "training"
TITLE = "DeepNet training throughput"
DEFAULTS = {
    "n": 160,
    "voxel_size_um": 3.2,
    "sigma_um": 9.0,
    "seed": 0,
    "iterations": 120,
    "warmup_iterations": 8,
    "precision": None,  # None: the config's (bfloat16)
    "channels_last": None,  # None: the config's (true)
    "repeats": 3,
    "budget_s": 150.0,
    "float32_rounds": 1,
    "profile_iterations": 40,
}

#: tiny sizes for `run_all.py --smoke` (checks that the script works, measures nothing)
SMOKE = {"n": 112, "voxel_size_um": 4.5, "iterations": 4, "warmup_iterations": 2, "float32_rounds": 1,
         "profile_iterations": 3}


def _opts(options):
    return harness.merged_options(DEFAULTS, options)


def quick_config(o: dict) -> dict:
    """config/quick.yaml, validated, with the pair's grid and the deepnet block's precision options."""
    from resrecover.config import load_config

    config = load_config(harness.ROOT / "config" / "quick.yaml")
    config["voxel_size_um"] = float(o["voxel_size_um"])
    config["volume_shape"] = [int(o["n"])] * 3
    block = config["deepnet"]
    if o["precision"] is not None:
        block["precision"] = o["precision"]
    if o["channels_last"] is not None:
        block["channels_last"] = bool(o["channels_last"])
    return config


def prepare(workdir: Path, options: dict) -> tuple[Path, Path]:
    """The cached (LRES, HRES) pair: the quick preset's foam and its Gaussian blur of ``sigma_um``."""
    import numpy as np
    from scipy import ndimage as ndi

    o = _opts(options)
    hres = harness.cached_foam(workdir, n=o["n"], voxel_size_um=o["voxel_size_um"])
    lres = Path(workdir) / f"training_lres_{o['n']}_{o['voxel_size_um']:g}um_sigma{o['sigma_um']:g}.npy"
    harness.cached_array(lres, lambda: ndi.gaussian_filter(np.load(hres), o["sigma_um"] / o["voxel_size_um"]))
    return lres, hres


def _inputs(workdir: Path, o: dict):
    import numpy as np

    from resrecover.masks import fov_mask

    lres, hres = prepare(workdir, o)
    config = quick_config(o)
    x, y = np.load(lres), np.load(hres)
    return x, y, fov_mask(config, x.shape), config


def _block(config: dict, o: dict, iterations: int) -> dict:
    """The deepnet block at ``sigma_um`` with ``iterations`` iterations (overrides included)."""
    from resrecover.methods.training import training_settings

    block = training_settings(config, "deepnet", o["sigma_um"])
    block["iterations"] = int(iterations)
    return block


# ------------------------------------------------------------------------------------------ ours
def _train_ours(workdir: Path, o: dict, x, y, mask, config, iterations: int, tag: str) -> dict:
    from resrecover.methods.training import train_model

    config = copy.deepcopy(config)
    config["deepnet"]["iterations"] = int(iterations)
    for entry in config["deepnet"].get("sigma_overrides") or []:
        if "iterations" in entry:
            entry["iterations"] = int(iterations)
    out = Path(workdir) / f"training_ours_{tag}"
    shutil.rmtree(out, ignore_errors=True)
    summary = train_model(
        "deepnet", x, y, config, out / "model.safetensors", out / "model.json", out / "train_log.csv", out / "ckpt",
        seed=o["seed"], device="cpu", mask=mask, threads=harness.usable_cores(), progress=False, sigma_um=o["sigma_um"],
    )
    summary["log"] = out / "train_log.csv"
    return summary


def side_ours(workdir: Path, options: dict) -> dict:
    import pandas as pd

    o = _opts(options)
    x, y, mask, config = _inputs(workdir, o)
    baseline = harness.current_rss_mb()
    summaries = []
    timing = harness.measure(
        lambda: summaries.append(_train_ours(workdir, o, x, y, mask, config, o["iterations"], "timed")),
        repeats=o["repeats"],
        warmup=lambda: _train_ours(workdir, o, x, y, mask, config, o["warmup_iterations"], "warmup"),
    )
    timing.pop("result")
    log = pd.read_csv(summaries[-1]["log"])
    timing["losses"] = [float(log["loss"].iloc[0]), float(log["loss"].iloc[-1])]  # first and last iteration
    timing["loop_s_per_iteration"] = summaries[-1]["seconds_per_iteration"]
    timing["baseline_rss_mb"] = round(baseline, 1)
    return timing


# ------------------------------------------------------------------------------------------ peer
class PlainTiles:
    """A map-style dataset of random (n_slices, tile, tile) stacks: item k is tile k % B of iteration k // B + 1.

    It draws exactly the tiles of our loop (the same seeded stream per iteration, the same foam
    corners and in-plane flips and turns), so both sides train on the same data; for the textbook
    loop it is just a dataset of random tiles.
    """

    def __init__(self, x, y, mask, corners, block, seed, iterations):
        self.x, self.y, self.mask, self.corners = x, y, mask, corners
        self.n, self.tile, self.batch = int(block["n_slices"]), int(block["tile_px"]), int(block["batch_size"])
        self.seed, self.iterations = int(seed), int(iterations)

    def __len__(self):
        return self.iterations * self.batch

    def __getitem__(self, k):
        import numpy as np
        import torch

        rng = np.random.default_rng([self.seed, 1, k // self.batch + 1])  # our STREAM_BATCH is 1
        for _ in range(k % self.batch + 1):
            z0 = int(rng.integers(0, self.x.shape[0] - self.n + 1))
            y0, x0 = (int(c) for c in self.corners[rng.integers(0, len(self.corners))])
            flip_y, flip_x, turns = rng.integers(0, 2), rng.integers(0, 2), rng.integers(0, 4)
        window = (slice(z0, z0 + self.n), slice(y0, y0 + self.tile), slice(x0, x0 + self.tile))
        out = []
        for a in (self.x[window], self.y[window], self.mask[window].astype(np.float32)):
            if flip_y:
                a = np.flip(a, -2)
            if flip_x:
                a = np.flip(a, -1)
            out.append(torch.from_numpy(np.ascontiguousarray(np.rot90(a, int(turns), axes=(-2, -1)))))
        return tuple(out)


def _plain_setup(x, y, mask, config, o: dict, iterations: int):
    """Normalized data, model, optimizer, schedule and loader of the textbook loop."""
    import torch
    from torch.utils.data import DataLoader

    from resrecover.methods.deepnet import DeepNet
    from resrecover.methods.modelio import fit_normalization, normalize
    from resrecover.methods.training import learning_rate_at, network_architecture, tile_corners_yx

    block = _block(config, o, iterations)
    norm = fit_normalization(x, mask)
    xn, yn = normalize(x, norm).astype("float32"), normalize(y, norm).astype("float32")
    torch.manual_seed(int(o["seed"]))
    model = DeepNet(**network_architecture("deepnet", config, o["sigma_um"])).train()
    if block["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    lr = float(block["learning_rate"])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_at(step + 1, block) / lr)
    corners = tile_corners_yx(mask, int(block["tile_px"]), block["tile_sampling"])
    data = PlainTiles(xn, yn, mask, corners, block, o["seed"], iterations)
    return block, model, optimizer, schedule, DataLoader(data, batch_size=int(block["batch_size"]))


def _plain_step(block, model, optimizer, schedule, xb, yb, mb):
    import torch

    if block["channels_last"]:
        xb, yb, mb = (t.contiguous(memory_format=torch.channels_last) for t in (xb, yb, mb))
    w1, w2 = (float(w) for w in block["loss_weights"])
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=block["precision"] == "bfloat16"):
        final, intermediate = model(xb, return_intermediate=True)
        loss = w1 * ((intermediate - yb) ** 2 * mb).sum() + w2 * ((final - yb) ** 2 * mb).sum()
    loss.backward()
    optimizer.step()
    schedule.step()
    return loss.item(), float(mb.sum())


def train_plain(x, y, mask, config, o: dict, iterations: int) -> list[float]:
    """The textbook loop for ``iterations`` iterations; returns the loss per FOV voxel of each."""
    import torch

    torch.set_num_threads(harness.usable_cores())
    block, model, optimizer, schedule, loader = _plain_setup(x, y, mask, config, o, iterations)
    losses = []
    for xb, yb, mb in loader:
        loss, count = _plain_step(block, model, optimizer, schedule, xb, yb, mb)
        losses.append(loss / max(count, 1.0))
    return losses


def side_peer(workdir: Path, options: dict) -> dict:
    o = _opts(options)
    x, y, mask, config = _inputs(workdir, o)
    baseline = harness.current_rss_mb()
    timing = harness.measure(
        lambda: train_plain(x, y, mask, config, o, o["iterations"]),
        repeats=o["repeats"],
        warmup=lambda: train_plain(x, y, mask, config, o, o["warmup_iterations"]),
    )
    losses = timing.pop("result")
    timing["losses"] = [losses[0], losses[-1]]  # first and last iteration
    timing["baseline_rss_mb"] = round(baseline, 1)
    return timing


# --------------------------------------------------------------------------------------- profile
def _phase_clock(phases: dict):
    """``tick(phase, t0)``: adds the time since ``t0`` to ``phases[phase]`` and returns now."""

    def tick(phase, t0):
        now = time.perf_counter()
        phases[phase] += now - t0
        return now

    return tick


def _profile_ours(x, y, mask, config, o: dict, n: int, phases: dict) -> None:
    """Our loop's own pieces (task, model, precision, deterministic runtime, retained heap), timed by phase."""
    import torch

    from resrecover.methods.device import torch_runtime
    from resrecover.methods.heap import retained_heap
    from resrecover.methods.modelio import fit_normalization, normalize
    from resrecover.methods.training.loop import _adam, _autocast
    from resrecover.methods.training.tasks import DeepNetTask

    block, model, _, _, _ = _plain_setup(x, y, mask, config, o, 2 * n)
    optimizer = _adam(model.parameters(), float(block["learning_rate"]), torch.device("cpu"))  # ours: fused
    norm = fit_normalization(x, mask)
    task = DeepNetTask(normalize(x, norm).astype("float32"), normalize(y, norm).astype("float32"), mask, block,
                       int(o["seed"]), torch.device("cpu"))
    tick = _phase_clock(phases)
    deterministic = bool(config.get("compute", {}).get("deterministic", True))
    with torch_runtime(harness.usable_cores(), deterministic, "cpu"), retained_heap():
        for iteration in range(1, 2 * n + 1):
            if iteration == n + 1:  # the first n iterations warm up
                phases.update(dict.fromkeys(phases, 0.0))
            t0 = time.perf_counter()
            batch = task.batch(iteration)
            if block["channels_last"]:
                batch = tuple(t.contiguous(memory_format=torch.channels_last) for t in batch)
            t0 = tick("sampling", t0)
            optimizer.zero_grad(set_to_none=True)
            with _autocast(torch.device("cpu"), block["precision"]):
                loss, _ = task.losses(model, batch)
            t0 = tick("forward + loss", t0)
            loss.backward()
            t0 = tick("backward", t0)
            optimizer.step()
            tick("optimizer", t0)


def _profile_textbook(x, y, mask, config, o: dict, n: int, phases: dict) -> None:
    """The textbook loop, timed by phase (sampling: the loader's next batch and its NHWC copy)."""
    import torch

    torch.set_num_threads(harness.usable_cores())
    block, model, optimizer, schedule, loader = _plain_setup(x, y, mask, config, o, 2 * n)
    w1, w2 = (float(w) for w in block["loss_weights"])
    tick = _phase_clock(phases)
    t0 = time.perf_counter()
    for iteration, (xb, yb, mb) in enumerate(loader, start=1):
        if iteration == n + 1:  # the first n iterations warm up (this one's sampling is counted)
            phases.update(dict.fromkeys(phases, 0.0))
        if block["channels_last"]:
            xb, yb, mb = (t.contiguous(memory_format=torch.channels_last) for t in (xb, yb, mb))
        t0 = tick("sampling", t0)
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=block["precision"] == "bfloat16"):
            final, intermediate = model(xb, return_intermediate=True)
            loss = w1 * ((intermediate - yb) ** 2 * mb).sum() + w2 * ((final - yb) ** 2 * mb).sum()
        t0 = tick("forward + loss", t0)
        loss.backward()
        t0 = tick("backward", t0)
        optimizer.step()
        schedule.step()
        loss.item()
        t0 = tick("optimizer", t0)


def side_profile(workdir: Path, options: dict) -> dict:
    """Milliseconds per iteration in each phase of one loop (``profile_loop``: 'ours' or 'textbook'),
    timed around each phase (the CPU runs torch's ops synchronously, so a phase's wall time is its
    cost): sampling, forward + loss, backward, optimizer (+ schedule). For ours also the whole
    ``train_model`` loop per iteration, whose excess over the phases is the log line and bookkeeping.
    Each loop in its own process, so that neither inherits the other's heap."""
    o = _opts(options)
    x, y, mask, config = _inputs(workdir, o)
    n = int(o["profile_iterations"])
    phases = dict.fromkeys(("sampling", "forward + loss", "backward", "optimizer"), 0.0)
    out = {"phases_ms": {}, "times_s": [0.0], "median_s": 0.0}
    if o.get("profile_loop", "ours") == "ours":
        _profile_ours(x, y, mask, config, o, n, phases)
        out["loop_ms"] = 1e3 * _train_ours(workdir, o, x, y, mask, config, 2 * n, "profile")["seconds_per_iteration"]
    else:
        _profile_textbook(x, y, mask, config, o, n, phases)
    out["phases_ms"] = {k: 1e3 * v / n for k, v in phases.items()}
    return out


def profile_text(workdir: Path, o: dict) -> str:
    """Both loops' phases (each :func:`side_profile` in a fresh process) as a small table."""
    runs = {loop: harness.run_side(__file__, "profile", workdir, {**o, "profile_loop": loop})
            for loop in ("ours", "textbook")}
    if any("error" in r for r in runs.values()):
        return "; ".join(r["error"] for r in runs.values() if "error" in r)
    ours, book = runs["ours"]["phases_ms"], runs["textbook"]["phases_ms"]
    lines = [f"{'ms per iteration':24s} {'ours':>8s} {'textbook':>9s}"]
    lines += [f"{phase:24s} {ours[phase]:8.1f} {book[phase]:9.1f}" for phase in ours]
    lines.append(f"{'sum of the phases':24s} {sum(ours.values()):8.1f} {sum(book.values()):9.1f}")
    lines.append(f"{'train_model loop (whole)':24s} {runs['ours']['loop_ms']:8.1f}  (log line, bookkeeping: "
                 f"{runs['ours']['loop_ms'] - sum(ours.values()):+.1f} ms)")
    lines.append(f"{o['profile_iterations']} iterations after as many of warm-up, each loop in its own process; "
                 f"{harness.usable_cores()} threads")
    return "\n".join(lines)


SIDES = {"ours": side_ours, "peer": side_peer, "profile": side_profile}


# ------------------------------------------------------------------------------------------- run
def _rate(side: dict, iterations: int) -> str:
    return f"{iterations / side['median_s']:.2f} it/s" if side.get("median_s") else "–"


def run(workdir: Path, options: dict | None = None) -> dict:
    o = _opts(options)
    workdir, ours, peer = harness.prepare_and_run_pair(__file__, workdir, o, prepare)
    config = quick_config(o)
    block = _block(config, o, o["iterations"])
    arch = f"{block['base_channels']} base channels, depth {block['depth']}, {block['n_slices']} slices"
    row = harness.result_row(
        NAME, TITLE, ours, peer,
        sizes=f"{o['iterations']} iterations of DeepNet ({arch}), {block['tile_px']}² tiles, batch "
        f"{block['batch_size']}, {block['precision']} autocast, channels_last {block['channels_last']} "
        f"(config/quick.yaml at {o['sigma_um']:g} µm), on a {o['n']}³ pair at {o['voxel_size_um']:g} µm; "
        f"{harness.usable_cores()} threads",
        ours_label="resrecover.methods.training.train_model",
        peer_label="textbook PyTorch loop: Dataset + DataLoader(batch_size) defaults, same network, loss, Adam, "
        "schedule and tiles",
        target="≥ 1.0× (iterations per second), where the time goes reported",
        notes=[],
    )
    if harness.side_failed(row, ours, peer):
        return row
    a, b = ours["losses"], peer["losses"]
    first = abs(a[0] - b[0]) / abs(b[0])
    last = abs(a[-1] - b[-1]) / abs(b[-1])
    row["check"] = (f"loss per FOV voxel, iteration 1: ours {a[0]:.6g}, textbook {b[0]:.6g} (rel. diff {first:.1e}); "
                    f"iteration {o['iterations']}: {a[-1]:.6g} vs {b[-1]:.6g} (rel. diff {last:.1e})")
    row["check_short"] = f"{_rate(ours, o['iterations'])} vs {_rate(peer, o['iterations'])}; same losses (iteration 1: {first:.0e})"
    extra = [("iterations per second", f"ours {_rate(ours, o['iterations'])}, textbook {_rate(peer, o['iterations'])}; "
              f"ours' loop alone {1 / ours['loop_s_per_iteration']:.2f} it/s (setup and the final save excluded)")]
    if o["float32_rounds"]:
        fp32 = {**o, "precision": "float32", "channels_last": False}
        sides = harness.run_pair(__file__, workdir, fp32, rounds=o["float32_rounds"])
        if "error" not in sides["ours"] and "error" not in sides["peer"]:
            f_ours, f_peer = sides["ours"], sides["peer"]
            extra.append((
                "float32, NCHW (both sides)",
                f"ours {_rate(f_ours, o['iterations'])}, textbook {_rate(f_peer, o['iterations'])}; ratio "
                f"{harness.ratio(f_peer, f_ours):.2f}×; our bf16 + channels_last options: "
                f"{f_ours['median_s'] / ours['median_s']:.2f}× the iterations per second of float32",
            ))
            row["ratio_float32"] = harness.ratio(f_peer, f_ours)
    row["extra_fields"] = extra
    row["met"] = bool(row["ratio"] is not None and row["ratio"] >= 1.0 and first < 1e-3)
    row["profile"] = profile_text(workdir, o)
    row["notes"].append(
        "Whole calls are timed on both sides (ours: normalization, data fingerprint, model set-up, the loop with "
        "its CSV log and a checkpoint every 100 iterations, the final save; the textbook loop: normalization, "
        "set-up, the loop). Both sides run torch on the same threads; ours in the deterministic mode the "
        "workflow uses (compute.deterministic; without its NaN fill of new buffers) and with its freed heap "
        "retained (methods/heap.py)."
    )
    for f in workdir.glob("training_ours_*"):
        shutil.rmtree(f, ignore_errors=True)
    return row


if __name__ == "__main__":
    harness.main(SIDES, run, __doc__)
