"""Figures made of slices: fig1 (training pairs), fig2 (DeepNet, train vs alternate), fig4 (slice grid),
fig8 (MS-SSIM maps). The pixels are the data; every image is the central z slice of its volume.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

from ..config import sigma_tag
from .data import (
    as_path_list,
    central_slice,
    crop_box,
    read_attr,
    read_table,
    result_key,
    select_methods,
    select_sigmas,
    sigma_key,
)
from .style import (
    GREY_CMAP,
    GREY_RANGE,
    METHOD_LABELS,
    MSSSIM_CMAP,
    REALIZATION_LABELS,
    REALIZATION_STYLES,
    method_color,
    method_label,
    sigma_label,
)

NICE_LENGTHS_UM = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def scale_bar_length_um(width_um: float, fraction: float = 0.25) -> float:
    """The round length (1, 2, 5 × 10^k µm) closest below ``fraction`` of an image width."""
    target = width_um * fraction
    fitting = [length for length in NICE_LENGTHS_UM if length <= target]
    return fitting[-1] if fitting else NICE_LENGTHS_UM[0]


def add_scale_bar(ax, width_px: int, voxel_size_um: float) -> None:
    """A white scale bar with its length in µm at the lower left of an image axis."""
    length_um = scale_bar_length_um(width_px * voxel_size_um)
    bar = AnchoredSizeBar(
        ax.transData,
        length_um / voxel_size_um,
        f"{length_um:g} µm",
        "lower left",
        pad=0.3,
        color="white",
        frameon=False,
        size_vertical=max(width_px / 80, 0.5),
        fontproperties={"size": 6},
    )
    ax.add_artist(bar)


def _bare_image_axis(ax) -> None:
    """No ticks or spines, but ylabel still shown (the row label)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def show_slice(ax, image: np.ndarray, box, cmap=GREY_CMAP, vmin=GREY_RANGE[0], vmax=GREY_RANGE[1]):
    """Draw the ``box`` crop of a slice on the fixed grey scale; returns the image artist."""
    artist = ax.imshow(image[box], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    _bare_image_axis(ax)
    return artist


def _blank(ax, text: str | None = None) -> None:
    ax.set_axis_off()
    if text:
        ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=7, color="0.4")


def _grey_colorbar(fig, artist, axes) -> None:
    fig.colorbar(artist, ax=axes, shrink=0.8, fraction=0.03, pad=0.01, label="material fraction (void 0, material 1)")


# --------------------------------------------------------------------------------------------- fig1
def fig1_training_pairs(inputs: dict, config: dict | None) -> Figure:
    """HRES target (σ = target) beside each LRES input, central z slice of the ``train`` realization."""
    volumes = {result_key(p).sigma_um: p for p in as_path_list(inputs.get("volumes"))}
    volumes = {sigma_key(s): p for s, p in volumes.items() if s is not None}
    target = sigma_key(config["scan"]["target_sigma_um"]) if config else min(volumes, default=1.0)
    sigmas = sorted(volumes, key=lambda s: (s != target, s))  # the target first
    fig = Figure(figsize=(1.9 * max(len(sigmas), 1) + 0.9, 2.55), layout="constrained")
    axes = fig.subplots(1, max(len(sigmas), 1), squeeze=False)[0]
    artist = None
    for ax, sigma in zip(axes, sigmas):
        image, voxel_um = central_slice(volumes[sigma])
        box = crop_box(image.shape, voxel_um, config)
        artist = show_slice(ax, image, box)
        kind = "HRES target" if sigma == target else "LRES input"
        ax.set_title(f"{kind}\n{sigma_label(sigma)}")
        if ax is axes[0]:
            add_scale_bar(ax, box[1].stop - box[1].start, voxel_um)
            ax.set_ylabel("train realization")
    if artist is None:
        _blank(axes[0], "no reconstructions in the inputs")
    else:
        _grey_colorbar(fig, artist, list(axes))
    fig.suptitle("Training pairs: HRES target and LRES inputs (FDK, central slice)", fontsize=9)
    return fig


# --------------------------------------------------------------------------------------------- fig2
def fig2_deepnet_train_vs_alternate(inputs: dict, config: dict | None) -> Figure:
    """DeepNet output on the train and the alternate realization (slices) and its metrics vs σ."""
    recovered = [result_key(p) for p in as_path_list(inputs.get("volumes"))]
    recovered = [r for r in recovered if r.method == "deepnet" and r.sigma_um is not None]
    truths = {result_key(p, "ground_truth").realization: p for p in as_path_list(inputs.get("ground_truth"))}
    realizations = [r for r in ("train", "alternate") if r in truths or any(v.realization == r for v in recovered)]
    sigmas = select_sigmas([r.sigma_um for r in recovered], config)
    ncols = 1 + max(len(sigmas), 1)

    fig = Figure(figsize=(max(1.75 * ncols + 0.9, 6.5), 2.0 * max(len(realizations), 1) + 2.3), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[2.0 * max(len(realizations), 1), 2.1])
    axes = top.subplots(max(len(realizations), 1), ncols, squeeze=False)
    artist = None
    for row, realization in enumerate(realizations):
        columns = [("ground_truth", None)] + [("deepnet", s) for s in sigmas]
        for col, (method, sigma) in enumerate(columns):
            ax = axes[row, col]
            if method == "ground_truth":
                path = truths.get(realization)
            else:
                path = next(
                    (r.path for r in recovered if r.realization == realization and sigma_key(r.sigma_um) == sigma),
                    None,
                )
            if path is None:
                _blank(ax, "not in this run" if method == "deepnet" else "no ground truth")
                continue
            image, voxel_um = central_slice(path)
            box = crop_box(image.shape, voxel_um, config)
            artist = show_slice(ax, image, box)
            if row == 0:
                ax.set_title("Ground truth" if method == "ground_truth" else f"DeepNet, {sigma_label(sigma)} input")
            if col == 0:
                ax.set_ylabel(f"{REALIZATION_LABELS[realization]} realization")
                if row == 0:
                    add_scale_bar(ax, box[1].stop - box[1].start, voxel_um)
    if not recovered:
        for row in range(axes.shape[0]):
            for col in range(1, ncols):
                _blank(axes[row, col], "DeepNet is not among\nthis run's methods" if col == 1 else None)
    if artist is not None:
        _grey_colorbar(top, artist, list(axes.ravel()))

    ssim_ax, recovery_ax = bottom.subplots(1, 2)
    _deepnet_metric_panel(ssim_ax, inputs.get("image_metrics"), "ssim", "SSIM vs ground truth", config)
    if _deepnet_metric_panel(
        recovery_ax, inputs.get("pores_summary"), "recovery_pct", "pores recovered (% of ground truth)", config
    ):
        recovery_ax.axhline(100, color=method_color("ground_truth"), lw=0.8, ls="-", zorder=0)
        recovery_ax.text(
            0.02, 100, " ground truth = 100 %", transform=recovery_ax.get_yaxis_transform(), va="bottom", fontsize=6
        )
    fig.suptitle("DeepNet on the training realization and on an unseen (alternate) realization", fontsize=9)
    return fig


def _deepnet_metric_panel(ax, table_path, column: str, ylabel: str, config: dict | None) -> bool:
    """``column`` vs σ for DeepNet, one line per realization (styles of :data:`REALIZATION_STYLES`).

    Returns whether anything was plotted.
    """
    ax.set_xlabel("LRES input resolution σ (µm)")
    ax.set_ylabel(ylabel)
    if not table_path:
        _blank(ax, "no table")
        return False
    table = read_table(as_path_list(table_path)[0], ["method", "realization", "sigma_um", column])
    rows = table[(table["method"] == "deepnet") & table["sigma_um"].notna()]
    if "deepnet" not in select_methods(["deepnet"], config):  # rows left from an earlier run
        rows = rows.iloc[0:0]
    sigmas = select_sigmas(rows["sigma_um"], config)
    rows = rows[rows["sigma_um"].map(sigma_key).isin(sigmas)]
    if rows.empty:
        ax.text(
            0.5,
            0.5,
            "DeepNet is not among\nthis run's methods",
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=7,
            color="0.4",
        )
        ax.set_yticks([])
        ax.set_xticks([])
        return False
    for realization in ("train", "alternate"):
        sub = rows[rows["realization"] == realization].sort_values("sigma_um")
        if sub.empty:
            continue
        ax.plot(
            sub["sigma_um"],
            sub[column],
            color=method_color("deepnet"),
            gid="method:deepnet",
            label=f"{METHOD_LABELS['deepnet']}, {REALIZATION_LABELS[realization]}",
            **REALIZATION_STYLES[realization],
        )
    ax.set_xticks(sigmas, [sigma_tag(s) for s in sigmas])
    ax.legend(loc="best")
    return True


# --------------------------------------------------------------------------------------------- fig4
def fig4_slice_grid(inputs: dict, config: dict | None) -> Figure:
    """Inputs row + one row per method, σ as columns, plus the ground truth; alternate realization."""
    entries = [result_key(p, "fdk") for p in as_path_list(inputs.get("inputs"))]  # the un-recovered FDK inputs
    entries += [result_key(p) for p in as_path_list(inputs.get("recovered"))]
    entries = [e for e in entries if e.sigma_um is not None]
    truth = as_path_list(inputs.get("ground_truth"))
    methods = select_methods([e.method for e in entries], config)
    # the un-recovered input on top, as in the paper's Figure 4
    methods = (["fdk"] if "fdk" in methods else []) + [m for m in methods if m != "fdk"]
    sigmas = select_sigmas([e.sigma_um for e in entries], config)
    nrows, ncols = max(len(methods), 1), len(sigmas) + 1

    fig = Figure(figsize=(1.7 * ncols + 1.0, 1.7 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    artist = None
    for row, method in enumerate(methods):
        for col, sigma in enumerate(sigmas):
            ax = axes[row, col]
            path = next((e.path for e in entries if e.method == method and sigma_key(e.sigma_um) == sigma), None)
            if path is None:
                _blank(ax, "missing")
                continue
            image, voxel_um = central_slice(path)
            box = crop_box(image.shape, voxel_um, config)
            artist = show_slice(ax, image, box)
            if row == 0:
                ax.set_title(f"{sigma_label(sigma)}")
            if col == 0:
                ax.set_ylabel(method_label(method), color=method_color(method), fontweight="bold")
                if row == 0:
                    add_scale_bar(ax, box[1].stop - box[1].start, voxel_um)
    for row in range(1, nrows):
        _blank(axes[row, -1])  # the ground truth is shown once, in the inputs row
    gt_ax = axes[0, -1]
    if truth:
        image, voxel_um = central_slice(truth[0])
        box = crop_box(image.shape, voxel_um, config)
        artist = show_slice(gt_ax, image, box)
        gt_ax.set_title(METHOD_LABELS["ground_truth"])
    else:
        _blank(gt_ax, "no ground truth")
    if artist is not None and nrows > 1:
        # the column under the ground truth is empty: the colour bar goes there
        cax = axes[1, -1].inset_axes([0.1, 0.05, 0.1, 0.9])
        fig.colorbar(artist, cax=cax, label="material fraction\n(void 0, material 1)")
    elif artist is not None:
        _grey_colorbar(fig, artist, list(axes.ravel()))
    fig.suptitle("Alternate realization, central slice: LRES inputs (top) and each method's recovery", fontsize=9)
    return fig


# --------------------------------------------------------------------------------------------- fig8
def map_display_range(image: np.ndarray, low_percentile: float = 1.0) -> tuple[float, float]:
    """Colour range of one MS-SSIM map (per map, as in the paper): a low percentile up to the maximum."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    vmin, vmax = float(np.percentile(finite, low_percentile)), float(finite.max())
    if vmax - vmin < 1e-6:
        vmin, vmax = vmin - 0.005, vmax + 0.005
    return vmin, vmax


def fig8_msssim_maps(inputs: dict, config: dict | None) -> Figure:
    """MS-SSIM maps (central slice) per method (rows) and σ (columns); bright = low similarity."""
    entries = [result_key(p) for p in as_path_list(inputs.get("maps"))]
    entries = [e for e in entries if e.sigma_um is not None]
    methods = select_methods([e.method for e in entries], config)
    sigmas = sorted({sigma_key(e.sigma_um) for e in entries})
    nrows, ncols = max(len(methods), 1), max(len(sigmas), 1)
    fig = Figure(figsize=(2.5 * ncols + 1.2, 2.0 * nrows + 0.7), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    if not entries:
        _blank(axes[0, 0], "no MS-SSIM maps in the inputs")
    for row, method in enumerate(methods):
        for col, sigma in enumerate(sigmas):
            ax = axes[row, col]
            entry = next((e for e in entries if e.method == method and sigma_key(e.sigma_um) == sigma), None)
            if entry is None:
                _blank(ax, "missing")
                continue
            image, voxel_um = central_slice(entry.path, allow_nonfinite=True)
            box = crop_box(image.shape, voxel_um, config)
            vmin, vmax = map_display_range(image[box])
            artist = show_slice(ax, image, box, cmap=MSSSIM_CMAP, vmin=vmin, vmax=vmax)
            fig.colorbar(artist, ax=ax, shrink=0.85, pad=0.02, label="local MS-SSIM")
            score = read_attr(entry.path, "msssim")
            if score is not None:
                ax.text(
                    0.03,
                    0.97,
                    f"MS-SSIM = {float(score):.3f}",
                    transform=ax.transAxes,
                    va="top",
                    fontsize=6,
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1.5},
                )
            if row == 0:
                ax.set_title(sigma_label(sigma))
            if col == 0:
                ax.set_ylabel(method_label(method), color=method_color(method), fontweight="bold")
                if row == 0:
                    add_scale_bar(ax, box[1].stop - box[1].start, voxel_um)
    fig.suptitle(
        "MS-SSIM quality maps vs ground truth, alternate realization\n"
        "(central slice; bright = low similarity; colour range per map)",
        fontsize=9,
    )
    return fig
