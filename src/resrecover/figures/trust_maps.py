"""fig10 (ours): trust maps without ground truth beside the ground truth's MS-SSIM maps (fig8).

One row per method and σ (alternate realization, central z slice): the MS-SSIM map against the
ground truth (what a user cannot have), the data-consistency residual and the ensemble
disagreement (what every recovery carries). Where the maps work, their bright spots sit on the
MS-SSIM map's bright spots; the Spearman ρ of each map with 1 − MS-SSIM over the foam
(results/tables/trust_validation.csv) is printed in its panel.

A last row shows the spurious-pore classifier (:mod:`resrecover.trust.spurious`) on the same
realization: per method, the ROC curve of ``p_spurious`` at each σ beside the pore's size alone,
with their bootstrap bands (results/tables/trust_roc.csv), and a reliability diagram of
``p_spurious`` (results/tables/trust_reliability.csv).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from .data import as_path_list, central_slice, crop_box, read_table, result_key, select_methods, sigma_key
from .images import _bare_image_axis, _blank, add_scale_bar, map_display_range
from .style import MSSSIM_CMAP, method_color, method_label, sigma_label

RESIDUAL_CMAP = "magma"
DISAGREEMENT_CMAP = "viridis"
PANELS = ("msssim", "residual", "disagreement")
COLORBAR_LABELS = {
    "disagreement": "std of members\n(material fraction)",
    "tta_variance": "variance over flips\n(material fraction²)",
}
PANEL_TITLES = {
    "msssim": "MS-SSIM vs truth",
    "residual": "residual",
    "disagreement": "disagreement / TTA var.",
}


def trust_slice(path: str | Path, dataset: str) -> tuple[np.ndarray, float]:
    """Central z slice of one map of a trust file (NaN kept) and the voxel size (µm)."""
    from ..io import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: trust-map file not found")
    with h5py.File(path, "r") as fh:
        if dataset not in fh:
            raise InputError(f"{path}: no dataset '{dataset}'; expected residual and disagreement")
        ds = fh[dataset]
        image = ds[ds.shape[0] // 2].astype(np.float32)
        voxel = float(fh.attrs.get("voxel_size_um", 1.0))
    return image, voxel


def _correlations(path) -> dict:
    """{(method, σ, map): Spearman ρ} from the validation table (empty if absent)."""
    if not path or not Path(path).is_file():
        return {}
    table = read_table(path, ["method", "realization", "sigma_um", "quantity", "map", "value"])
    rows = table[(table["quantity"] == "spearman_vs_1_minus_msssim") & (table["realization"] == "alternate")]
    return {(r.method, sigma_key(r.sigma_um), r.map): float(r.value) for r in rows.itertuples(index=False)}


def _label(ax, text: str) -> None:
    ax.text(0.03, 0.97, text, transform=ax.transAxes, va="top", fontsize=6,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1.5})


def _roc_panel(ax, roc, method: str) -> None:
    """ROC of p_spurious (solid) and of size alone (dashed) at each σ, with their bootstrap bands."""
    rows = roc[roc["method"] == method]
    if rows.empty:
        _blank(ax, f"no classifier ROC\nfor {method_label(method)}")
        return
    sigmas = sorted(rows["sigma_um"].unique())
    shades = np.linspace(0.35, 1.0, len(sigmas))
    for shade, sigma in zip(shades, sigmas):
        for score, style in (("p_spurious", "-"), ("size_baseline", "--")):
            curve = rows[(rows["sigma_um"] == sigma) & (rows["score"] == score)].sort_values("fpr")
            if curve.empty:
                continue
            color = method_color(method) if score == "p_spurious" else "0.45"
            ax.fill_between(curve["fpr"], curve["tpr_low"], curve["tpr_high"], color=color, alpha=0.12 * shade,
                            linewidth=0)
            ax.plot(curve["fpr"], curve["tpr"], style, color=color, alpha=shade, lw=1.0,
                    label=f"{'p_spurious' if score == 'p_spurious' else 'size alone'}, {sigma_label(sigma)}")
    ax.plot([0, 1], [0, 1], ":", color="0.7", lw=0.8)
    if not (rows["score"] == "p_spurious").any():
        # the classifier was not fitted (too few spurious pores to learn from): its constant ranks nothing
        ax.text(0.97, 0.36, "no p_spurious:\nmodel not fitted\n(too few spurious\npores to learn from)",
                ha="right", va="center", fontsize=5.5, color="0.3", transform=ax.transAxes)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="real pores flagged (FPR)", ylabel="spurious pores caught (TPR)")
    ax.set_title(f"{method_label(method)}: is this pore real?")
    ax.legend(loc="lower right", fontsize=5)


def _reliability_panel(ax, reliability) -> None:
    """Observed share of spurious pores vs mean p_spurious per bin, one line per method and σ."""
    if reliability.empty:
        _blank(ax, "no reliability table")
        return
    for (method, sigma), rows in reliability.groupby(["method", "sigma_um"], sort=True):
        rows = rows[rows["n"] > 0].sort_values("p_mean")
        ax.plot(rows["p_mean"], rows["observed"], "o-", ms=2.5, lw=0.8, color=method_color(method),
                alpha=0.4 + 0.6 * float(sigma) / float(reliability["sigma_um"].max()),
                label=f"{method_label(method)}, {sigma_label(sigma)}")
    top = max(float(reliability[["p_mean", "observed"]].max().max()), 0.05)
    ax.plot([0, top], [0, top], ":", color="0.6", lw=0.8)
    ax.set(xlim=(0, top * 1.05), ylim=(0, top * 1.05), xlabel="mean p_spurious in the bin",
           ylabel="share spurious in the bin")
    ax.set_title("reliability of p_spurious")
    ax.legend(loc="upper left", fontsize=5)


def fig10_trust_maps(inputs: dict, config: dict | None) -> Figure:
    """MS-SSIM map | residual | disagreement, one row per (method, σ); alternate, central slice."""
    trust = [result_key(p) for p in as_path_list(inputs.get("maps"))]
    quality = {(e.method, sigma_key(e.sigma_um)): e.path
               for e in (result_key(p) for p in as_path_list(inputs.get("msssim"))) if e.sigma_um is not None}
    trust = [e for e in trust if e.sigma_um is not None]
    allowed = dict(config or {})
    if config is not None and "trust" in config:
        allowed["methods"] = [m for m in config.get("methods", []) if m in config["trust"]["methods"]]
    methods = select_methods([e.method for e in trust], allowed if config is not None else None, baselines=())
    sigmas = sorted({sigma_key(e.sigma_um) for e in trust})
    rows = [(m, s) for m in methods for s in sigmas]
    rho = _correlations(inputs.get("validation"))
    nrows = max(len(rows), 1)
    classifier = bool(inputs.get("roc")) and bool(inputs.get("reliability"))
    fig = Figure(figsize=(7.6, 2.15 * (nrows + classifier) + 0.8), layout="constrained")
    axes = fig.subplots(nrows + classifier, len(PANELS), squeeze=False)
    if classifier:
        roc = read_table(inputs["roc"], ["method", "sigma_um", "score", "fpr", "tpr", "tpr_low", "tpr_high"])
        reliability = read_table(inputs["reliability"], ["method", "sigma_um", "bin", "p_mean", "observed", "n"])
        for j, ax in enumerate(axes[-1, :-1]):
            if j < len(methods):
                _roc_panel(ax, roc, methods[j])
            else:
                _blank(ax)
        _reliability_panel(axes[-1, -1], reliability)
    if not rows:
        _blank(axes[0, 0], "no trust maps in the inputs")
        for ax in axes[0, 1:]:
            _blank(ax)
    for i, (method, sigma) in enumerate(rows):
        entry = next(e for e in trust if e.method == method and sigma_key(e.sigma_um) == sigma)
        for j, panel in enumerate(PANELS):
            ax = axes[i, j]
            if panel == "msssim":
                path = quality.get((method, sigma))
                if path is None:
                    _blank(ax, "no MS-SSIM map")
                    continue
                image, voxel = central_slice(path, allow_nonfinite=True)
                box = crop_box(image.shape, voxel, config)
                vmin, vmax = map_display_range(image[box])
                artist = ax.imshow(image[box], cmap=MSSSIM_CMAP, vmin=vmin, vmax=vmax, interpolation="nearest")
                fig.colorbar(artist, ax=ax, shrink=0.85, pad=0.02, label="local MS-SSIM")
                add_scale_bar(ax, box[1].stop - box[1].start, voxel)
            else:
                image, voxel = trust_slice(entry.path, panel)
                if panel == "disagreement" and not np.isfinite(image).any():
                    # no ensemble: the network's test-time-augmentation variance is its map of doubt
                    panel = "tta_variance"
                    image, voxel = trust_slice(entry.path, panel)
                box = crop_box(image.shape, voxel, config)
                crop = image[box]
                finite = crop[np.isfinite(crop)]
                if finite.size == 0:
                    _blank(ax, "no ensemble, no network\n(disagreement and TTA variance NaN)"
                           if panel == "tta_variance" else "empty map")
                    continue
                if panel == "residual":
                    low = max(float(np.percentile(finite, 1)), 1e-2)
                    high = max(float(np.percentile(finite, 99.9)), low * 10)
                    artist = ax.imshow(crop, cmap=RESIDUAL_CMAP, norm=LogNorm(low, high), interpolation="nearest")
                    fig.colorbar(artist, ax=ax, shrink=0.85, pad=0.02, label="noise variances (log)")
                else:
                    high = max(float(np.percentile(finite, 99.5)), 1e-6)
                    artist = ax.imshow(crop, cmap=DISAGREEMENT_CMAP, vmin=0.0, vmax=high, interpolation="nearest")
                    fig.colorbar(artist, ax=ax, shrink=0.85, pad=0.02, label=COLORBAR_LABELS[panel])
                value = rho.get((method, sigma, panel))
                if value is not None and np.isfinite(value):
                    _label(ax, f"ρ vs 1 − MS-SSIM = {value:.2f}")
            _bare_image_axis(ax)
            if i == 0:
                ax.set_title(PANEL_TITLES[PANELS[j]])
            if j == 0:
                ax.set_ylabel(f"{method_label(method)}\n{sigma_label(sigma)}", color=method_color(method),
                              fontweight="bold")
    fig.suptitle(
        "Trust maps without ground truth vs the ground truth's MS-SSIM map, alternate realization, central slice\n"
        "(bright = suspect in every panel; ρ: Spearman correlation with 1 − MS-SSIM over the foam)"
        + ("\nlast row: the spurious-pore classifier on the same realization, 95% bootstrap bands" if classifier else ""),
        fontsize=8.5,
    )
    return fig
