"""Mean 3D SSIM of a 256³ pair: ours against scikit-image with the same window and settings.

ours: :func:`resrecover.evaluate.metrics.ssim_3d` (uniform 7³ window, K1 0.01, K2 0.03, sample
covariance, reflect boundaries, mean over the voxels ≥ 3 from every face).

peer: :func:`skimage.metrics.structural_similarity` with ``win_size=7``, ``data_range=1``, its
defaults for the rest (uniform window, sample covariance, the same cropped mean), on the same
float32 volumes. The pair is the 1 µm foam (256³) and its degraded version (Gaussian blur σ 5
voxels plus noise), as the evaluation compares a recovered volume with the ground truth.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import harness

NAME = "ssim"
TITLE = "3D SSIM"
DEFAULTS = {"n": 256, "window_px": 7, "repeats": 3, "budget_s": 120.0}

#: tiny sizes for `run_all.py --smoke` (checks that the script works, measures nothing)
SMOKE = {"n": 48}


def _opts(options):
    return harness.merged_options(DEFAULTS, options)


def prepare(workdir: Path, options: dict) -> tuple[Path, Path]:
    import numpy as np
    from scipy import ndimage as ndi

    o = _opts(options)
    workdir = Path(workdir)
    reference = harness.cached_foam(workdir, n=o["n"], voxel_size_um=1.0)
    degraded = workdir / f"ssim_degraded_{o['n']}.npy"
    if not degraded.exists():
        foam = np.load(reference)
        blurred = ndi.gaussian_filter(foam, 5.0, truncate=4.0)
        blurred += np.random.default_rng(12).normal(0.0, 0.02, foam.shape).astype(np.float32)
        harness.save_array(degraded, blurred.astype(np.float32))
    return degraded, reference


def _load(workdir, o):
    import numpy as np

    a, b = prepare(workdir, o)
    return np.load(a), np.load(b)


def side_ours(workdir: Path, options: dict) -> dict:
    from resrecover.evaluate.metrics import ssim_3d

    o = _opts(options)
    a, b = _load(workdir, o)
    baseline = harness.current_rss_mb()
    timing = harness.measure(
        lambda: ssim_3d(a, b, data_range=1.0, window_px=o["window_px"]),
        repeats=o["repeats"],
        warmup=lambda: ssim_3d(a[:32], b[:32], data_range=1.0, window_px=o["window_px"]),
    )
    timing["value"] = float(timing["result"])
    timing["baseline_rss_mb"] = round(baseline, 1)
    return timing


def side_peer(workdir: Path, options: dict) -> dict:
    from skimage.metrics import structural_similarity

    o = _opts(options)
    a, b = _load(workdir, o)
    baseline = harness.current_rss_mb()

    def call(x=a, y=b):
        return structural_similarity(x, y, data_range=1.0, win_size=o["window_px"])

    timing = harness.measure(call, repeats=o["repeats"], warmup=lambda: call(a[:32], b[:32]))
    timing["value"] = float(timing["result"])
    timing["baseline_rss_mb"] = round(baseline, 1)
    return timing


SIDES = {"ours": side_ours, "peer": side_peer}


def run(workdir: Path, options: dict | None = None) -> dict:
    o = _opts(options)
    workdir, ours, peer = harness.prepare_and_run_pair(__file__, workdir, o, prepare)
    row = harness.result_row(
        NAME, TITLE, ours, peer,
        sizes=f"{o['n']}³ float32 pair (foam at 1 µm vs its blurred, noisy version), uniform {o['window_px']}³ window",
        ours_label="resrecover.evaluate.metrics.ssim_3d",
        peer_label=f"skimage.metrics.structural_similarity (win_size={o['window_px']}, data_range=1, defaults)",
        target="≥ 5× faster, equal within 1e-4",
        notes=["scikit-image's SSIM is single-threaded (ndimage filters); ours is too (numpy), so the "
               "ratio is one core against one core."],
    )
    if harness.side_failed(row, ours, peer):
        return row
    diff = abs(ours["value"] - peer["value"])
    row["check"] = f"ours {ours['value']:.7f}, peer {peer['value']:.7f}, |diff| {diff:.1e}"
    row["check_short"] = f"|ΔSSIM| {diff:.1e}"
    row["met"] = bool(row["ratio"] is not None and row["ratio"] >= 5.0 and diff <= 1e-4)
    return row


if __name__ == "__main__":
    harness.main(SIDES, run, __doc__)
