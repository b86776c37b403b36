"""Tiled 2.5D network inference of a 64×1024×1024 volume: ours against MONAI's sliding window.

ours: :func:`resrecover.methods.tiling.predict_volume_25d` with
:func:`resrecover.methods.infer.torch_predictor` (the path ``recover_volume`` takes for DeepNet):
stacks of 5 slices at stride 1, 128×128 tiles overlapping by 16 px, triangular in-plane blending,
uniform along z (each slice the mean of its up-to-5 stack predictions), batches of 8 tiles.

peer: :func:`monai.inferers.sliding_window_inference` on the volume as a (1, 1, 64, 1024, 1024)
tensor with ``roi_size=(5, 128, 128)``, ``overlap=(0.8, 16/128, 16/128)`` (window stride 1 in z and
112 in-plane, i.e. exactly our tile origins), ``sw_batch_size=8`` and ``roi_weight_map`` set to our
blending weights (uniform along z × triangular in-plane), and a predictor that feeds each
(B, 1, 5, 128, 128) window to the network as (B, 5, 128, 128), the five slices being its channels.

So both sides run the same network on the same 4,860 windows (60 stacks × 81 tiles) and blend them
with the same weights: the same amount of network evaluation and the same result (checked), and the
difference is the tiling machinery (window extraction, batching, numpy/torch hand-over, blending,
normalization). Two networks are measured:

* ``identity`` (``torch.nn.Identity``): no network cost, the machinery alone;
* ``deepnet``: a small :class:`resrecover.methods.deepnet.DeepNet` (4 base channels, depth 2, one
  refinement conv, batch norm; random weights, seeded identically on both sides), where the
  network dominates as it does in practice.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

NAME = "tiled_inference"
TITLE = "Tiled 2.5D inference"
DEFAULTS = {
    "shape": [64, 1024, 1024],
    "n_slices": 5,
    "tile_px": 128,
    "overlap_px": 16,
    "batch_size": 8,
    "deepnet": {"base_channels": 4, "depth": 2, "extra_convs": 1, "batch_norm": True},
    "repeats": 3,
    "budget_s": 240.0,
}

#: tiny sizes for `run_all.py --smoke` (checks that the script works, measures nothing)
SMOKE = {"shape": [12, 256, 256]}


def _opts(options):
    return {**DEFAULTS, **{k: v for k, v in (options or {}).items() if v is not None}}


def prepare(workdir: Path, options: dict) -> Path:
    import numpy as np
    from scipy import ndimage as ndi

    o = _opts(options)
    shape = tuple(o["shape"])
    path = Path(workdir) / f"tiling_input_{'x'.join(map(str, shape))}.npy"
    if path.exists():
        return path
    rng = np.random.default_rng(21)
    # smooth random structure plus noise (the content does not change the cost)
    volume = rng.normal(0.0, 1.0, shape).astype(np.float32)
    volume = ndi.uniform_filter(volume, 3) + np.float32(0.5)
    harness.save_array(path, volume.astype(np.float32))
    return path


def _model(kind: str, o: dict):
    import torch

    torch.manual_seed(0)
    if kind == "identity":
        return torch.nn.Identity()
    from resrecover.methods.deepnet import DeepNet

    return DeepNet(n_slices=o["n_slices"], **o["deepnet"]).eval()


def _size_multiple(kind: str, o: dict) -> int:
    return 1 if kind == "identity" else 2 ** int(o["deepnet"]["depth"])


def _weights(o: dict):
    from resrecover.methods.tiling import blending_weights

    n = o["n_slices"]
    return blending_weights((n, o["tile_px"], o["tile_px"]), (n - 1, o["overlap_px"], o["overlap_px"]),
                            ("uniform", "triangular", "triangular"))


def side_ours(workdir: Path, options: dict) -> dict:
    import numpy as np
    import torch

    from resrecover.methods.infer import torch_predictor
    from resrecover.methods.tiling import predict_volume_25d

    o = _opts(options)
    torch.set_num_threads(harness.usable_cores())
    volume = np.load(prepare(workdir, o))
    baseline = harness.current_rss_mb()
    out: dict = {"baseline_rss_mb": round(baseline, 1), "modes": {}}
    for kind in ("identity", "deepnet"):
        predictor = torch_predictor(_model(kind, o), "cpu", "2.5d")

        def call(v=volume, predictor=predictor, kind=kind):
            return predict_volume_25d(
                predictor, v, n_slices=o["n_slices"], tile_px=o["tile_px"], overlap_px=o["overlap_px"],
                blending="triangular", batch_size=o["batch_size"], size_multiple=_size_multiple(kind, o),
                progress=False,
            )

        timing = harness.measure(call, repeats=o["repeats"], warmup=lambda call=call: call(volume[:8]))
        run = timing.pop("result")
        timing["n_windows"] = int(run.n_tiles)
        timing["tiling_buffers_mb"] = round(run.memory_bytes / 2**20, 1)
        timing["rss_after_mb"] = round(harness.peak_rss_mb(), 1)
        harness.save_array(Path(workdir) / f"tiling_out_ours_{kind}.npy", run.output)
        out["modes"][kind] = timing
    out.update({k: out["modes"]["deepnet"][k] for k in ("times_s", "median_s", "n_runs", "warmup_s")})
    return out


def side_peer(workdir: Path, options: dict) -> dict:
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    o = _opts(options)
    torch.set_num_threads(harness.usable_cores())
    volume = np.load(prepare(workdir, o))
    baseline = harness.current_rss_mb()
    weights = torch.from_numpy(_weights(o))
    n, t, ov = o["n_slices"], o["tile_px"], o["overlap_px"]
    overlap = ((n - 1) / n, ov / t, ov / t)
    out: dict = {"baseline_rss_mb": round(baseline, 1), "modes": {}}
    for kind in ("identity", "deepnet"):
        model = _model(kind, o)
        counter = {"windows": 0}

        def predictor(patch, model=model, counter=counter):
            counter["windows"] += patch.shape[0]
            return model(patch[:, 0])[:, None]  # (B, 1, 5, t, t) -> the slices as channels and back

        def call(v=volume, predictor=predictor, counter=counter):
            counter["windows"] = 0  # after the timed calls: the windows of one whole-volume call
            x = torch.from_numpy(v)[None, None]
            with torch.inference_mode():
                y = sliding_window_inference(
                    x, roi_size=(n, t, t), sw_batch_size=o["batch_size"], predictor=predictor,
                    overlap=overlap, mode="constant", roi_weight_map=weights, progress=False,
                )
            return y[0, 0].numpy()

        timing = harness.measure(call, repeats=o["repeats"], warmup=lambda call=call: call(volume[:8]))
        result = timing.pop("result")
        timing["rss_after_mb"] = round(harness.peak_rss_mb(), 1)
        timing["n_windows"] = counter["windows"]
        harness.save_array(Path(workdir) / f"tiling_out_peer_{kind}.npy", result)
        out["modes"][kind] = timing
    out.update({k: out["modes"]["deepnet"][k] for k in ("times_s", "median_s", "n_runs", "warmup_s")})
    return out


SIDES = {"ours": side_ours, "peer": side_peer}


def run(workdir: Path, options: dict | None = None) -> dict:
    import numpy as np

    o = _opts(options)
    workdir = Path(workdir)
    prepare(workdir, o)
    sides = harness.run_pair(__file__, workdir, o, rounds=o["repeats"], budget_s=o["budget_s"])
    ours, peer = sides["ours"], sides["peer"]
    shape = "×".join(map(str, o["shape"]))
    arch = o["deepnet"]
    row = {
        "name": NAME,
        "title": TITLE,
        "sizes": f"{shape} float32; stacks of {o['n_slices']} at stride 1, {o['tile_px']}² tiles, {o['overlap_px']} px "
        f"overlap, batch {o['batch_size']}; DeepNet(base_channels={arch['base_channels']}, depth={arch['depth']}, "
        f"extra_convs={arch['extra_convs']}, batch_norm={arch['batch_norm']})",
        "ours_label": "resrecover.methods.tiling.predict_volume_25d + infer.torch_predictor",
        "peer_label": "monai.inferers.sliding_window_inference, same windows, batch and blending weights",
        "ours": ours,
        "peer": peer,
        "ratio": harness.ratio(peer, ours),
        "target": "≥ 1.0× (no slower), peak memory reported",
        "notes": [],
    }
    if "error" in ours or "error" in peer:
        row["check"], row["met"] = "not compared (a side failed)", False
        return row
    checks, extra = [], []
    for kind in ("identity", "deepnet"):
        a = np.load(workdir / f"tiling_out_ours_{kind}.npy")
        b = np.load(workdir / f"tiling_out_peer_{kind}.npy")
        diff = float(np.abs(a - b).max())
        mo, mp = ours["modes"][kind], peer["modes"][kind]
        r = mp["median_s"] / mo["median_s"]
        checks.append(f"{kind}: max |diff| {diff:.1e}, windows {mo['n_windows']} = {mp['n_windows']}")
        extra.append((f"{kind} network: ours / MONAI", f"{harness.fmt_side(mo)} / {harness.fmt_side(mp)}; "
                      f"ratio {r:.2f}×; peak RSS so far {mo['rss_after_mb']:.0f} / {mp['rss_after_mb']:.0f} MB"))
        row[f"ratio_{kind}"] = r
        row[f"maxdiff_{kind}"] = diff
        for f in (workdir / f"tiling_out_ours_{kind}.npy", workdir / f"tiling_out_peer_{kind}.npy"):
            f.unlink(missing_ok=True)
    row["check"] = "; ".join(checks)
    row["check_short"] = f"max |diff| {max(row['maxdiff_identity'], row['maxdiff_deepnet']):.0e}, same windows"
    row["extra_fields"] = extra
    row["met"] = bool(row["ratio_deepnet"] >= 1.0 and row["ratio_identity"] >= 1.0)
    row["notes"].append(
        "The main ratio is the DeepNet run (the network dominates); the identity run isolates the tiling "
        "machinery. Peak RSS is per side over both runs; the input volume alone is "
        f"{np.prod(o['shape']) * 4 / 2**20:.0f} MB."
    )
    return row


if __name__ == "__main__":
    if not harness.worker_cli(SIDES):
        harness.standalone(run, __doc__.splitlines()[0])
