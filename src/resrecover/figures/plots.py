"""Figures drawn from tables: fig3 (image metrics), fig5 (pore recovery), fig6 (pore-size histograms),
fig7 (sphericity), fig9 (Gaussian fit). Every plotted number is read from a CSV of results/tables/ or
results/pores/; nothing is recomputed here except the quartiles of fig7's boxes.

Artists drawn for a method carry ``gid="method:<name>"`` so that a test can check its colour.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from ..config import sigma_tag
from .data import as_path_list, read_table, select_methods, select_sigmas, sigma_key, table_key
from .style import (
    BASELINE_LINESTYLE,
    METHOD_LABELS,
    is_baseline,
    method_color,
    method_label,
    sigma_label,
)

SIGMA_AXIS_LABEL = "LRES input resolution σ (µm)"
COMPARED_REALIZATION = "alternate"  # all method comparisons are on the unseen realization (paper)


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=7, color="0.4")


def _sigma_rows(table: pd.DataFrame, realization: str, config: dict | None) -> tuple[pd.DataFrame, list[float]]:
    """Rows of one realization with a σ among the selected levels, and those levels."""
    rows = table[(table["realization"] == realization) & table["sigma_um"].notna()].copy()
    sigmas = select_sigmas(rows["sigma_um"], config)
    rows["sigma_key"] = rows["sigma_um"].map(sigma_key)
    return rows[rows["sigma_key"].isin(sigmas)], sigmas


def _sigma_ticks(ax, sigmas: list[float]) -> None:
    ax.set_xticks(sigmas, [sigma_tag(s) for s in sigmas])
    ax.set_xlabel(SIGMA_AXIS_LABEL)


def _panel_columns(methods: list[str], rows: pd.DataFrame, include_train_deepnet: bool = True):
    """Panels of fig6/fig7, as in the paper: DeepNet on train, then every method on alternate."""
    panels = []
    if (
        include_train_deepnet
        and "deepnet" in methods
        and ((rows["method"] == "deepnet") & (rows["realization"] == "train")).any()
    ):
        panels.append(("deepnet", "train"))
    panels += [(m, COMPARED_REALIZATION) for m in methods]
    return panels


# --------------------------------------------------------------------------------------------- fig3
METRIC_PANELS = (
    ("mse", "MSE (material fraction²)", "(a) MSE, lower is better"),
    ("psnr", "PSNR (dB)", "(b) PSNR, higher is better"),
    ("ssim", "SSIM", "(c) SSIM, closer to 1 is better"),
)


def fig3_image_metrics(inputs: dict, config: dict | None) -> Figure:
    """MSE, PSNR and SSIM vs σ for every method on the alternate realization; FDK input dashed."""
    table = read_table(
        as_path_list(inputs["image_metrics"])[0], ["method", "realization", "sigma_um", "mse", "psnr", "ssim"]
    )
    rows, sigmas = _sigma_rows(table, COMPARED_REALIZATION, config)
    methods = select_methods(rows["method"], config)
    fig = Figure(figsize=(9.0, 3.0), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, (column, ylabel, title) in zip(axes, METRIC_PANELS):
        for method in methods:
            sub = rows[rows["method"] == method].sort_values("sigma_um")
            ax.plot(
                sub["sigma_um"],
                sub[column],
                color=method_color(method),
                gid=f"method:{method}",
                linestyle=BASELINE_LINESTYLE if is_baseline(method) else "-",
                marker="o",
                markersize=4,
                label=method_label(method),
            )
        _sigma_ticks(ax, sigmas)
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left")
        if rows.empty:
            _no_data(ax, "no rows for the alternate realization")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=len(handles), handlelength=3)
    fig.suptitle("Image quality vs ground truth, alternate realization", fontsize=9)
    return fig


# --------------------------------------------------------------------------------------------- fig5
def fig5_pore_recovery(inputs: dict, config: dict | None) -> Figure:
    """(a) pores recovered (% of ground truth) per method and σ; (b) spurious, wrong-size and missed pores (ours)."""
    table = read_table(
        as_path_list(inputs["pores_summary"])[0], ["method", "realization", "sigma_um", "n_pores", "recovery_pct"]
    )
    rows, sigmas = _sigma_rows(table, COMPARED_REALIZATION, config)
    train_rows, _ = _sigma_rows(table, "train", config)
    methods = select_methods(rows["method"], config)
    truth = table[(table["method"] == "ground_truth") & (table["realization"] == COMPARED_REALIZATION)]

    fig = Figure(figsize=(9.0, 3.4), layout="constrained")
    ax_rec, ax_err = fig.subplots(1, 2)
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(sigmas), dtype=float)
    for k, method in enumerate(methods):
        offset = (k - (len(methods) - 1) / 2) * width
        sub = rows[rows["method"] == method].set_index("sigma_key").reindex(sigmas)
        style = {"color": method_color(method), "gid": f"method:{method}", "width": width * 0.95}
        if is_baseline(method):
            style.update(hatch="///", edgecolor="white", linewidth=0)
        bars = ax_rec.bar(x + offset, sub["recovery_pct"], label=method_label(method), **style)
        ax_rec.bar_label(bars, fmt="%.0f", fontsize=5.5, label_type="center", rotation=90, color="white")
        tr = train_rows[train_rows["method"] == method].set_index("sigma_key").reindex(sigmas)
        if tr["recovery_pct"].notna().any():
            ax_rec.plot(
                x + offset,
                tr["recovery_pct"],
                linestyle="none",
                marker="D",
                markersize=3.5,
                color=method_color(method),
                markerfacecolor="white",
                gid=f"method:{method}",
            )
        if {"n_spurious", "n_missed"} <= set(sub.columns):
            ax_err.bar(x + offset, sub["n_spurious"], **style)
            if "n_mis_sized" in sub.columns:
                # real pores at the wrong size: neither invented nor lost, stacked on the spurious ones
                ax_err.bar(x + offset, sub["n_mis_sized"], bottom=sub["n_spurious"], alpha=0.45,
                           **{**style, "hatch": "xxxx", "edgecolor": "white"})
            ax_err.bar(x + offset, -sub["n_missed"], alpha=0.45, **{**style, "hatch": "....", "edgecolor": "white"})
    gt_label = "ground truth = 100 %"
    if not truth.empty and np.isfinite(truth["n_pores"].iloc[0]):
        gt_label += f" ({int(truth['n_pores'].iloc[0])} pores)"
    ax_rec.axhline(100, color=method_color("ground_truth"), linewidth=0.9, gid="method:ground_truth", label=gt_label)
    top = np.nanmax(
        np.r_[rows["recovery_pct"].to_numpy(dtype=float), train_rows["recovery_pct"].to_numpy(dtype=float), 100.0]
    )
    ax_rec.set_ylim(0, top * 1.18)
    ax_rec.set_ylabel("pores found (% of ground-truth count)")
    ax_rec.set_title("(a) Pore recovery, alternate realization (◇ train)", loc="left")
    ax_err.axhline(0, color="black", linewidth=0.6)
    ax_err.set_ylabel("pores: spurious, wrong size (+) / missed (−)")
    ax_err.set_title("(b) Spurious, wrong-size and missed pores vs ground truth (ours)", loc="left")
    if not {"n_spurious", "n_missed"} <= set(rows.columns):
        _no_data(ax_err, "no matching columns in pores_summary.csv")
    for ax in (ax_rec, ax_err):
        ax.set_xticks(x, [sigma_tag(s) for s in sigmas])
        ax.set_xlabel(SIGMA_AXIS_LABEL)
        if rows.empty:
            _no_data(ax, "no rows for the alternate realization")
    handles, labels = ax_rec.get_legend_handles_labels()
    handles += [
        Line2D([], [], linestyle="none", marker="D", markerfacecolor="white", markeredgecolor="0.3"),
        Patch(facecolor="0.5", label="spurious"),
        Patch(facecolor="0.5", alpha=0.45, hatch="....", edgecolor="white"),
    ]
    labels += ["train realization", "(b) spurious: no GT match", "(b) missed: GT pore not found"]
    if "n_mis_sized" in rows.columns:
        handles.append(Patch(facecolor="0.5", alpha=0.45, hatch="xxxx", edgecolor="white"))
        labels.append("(b) wrong size: real pore, IoU < 0.3")
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(handles), 5))
    return fig


# --------------------------------------------------------------------------------------------- fig6
def _aligned_bins(*frames: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The union of the bins of ``frames`` (start, end) and each frame's counts on it (0 where absent)."""
    bins = sorted({(float(s), float(e)) for f in frames for s, e in zip(f["bin_start_um"], f["bin_end_um"])})
    starts = np.array([b[0] for b in bins])
    ends = np.array([b[1] for b in bins])
    counts = []
    for f in frames:
        lookup = {(float(s), float(e)): c for s, e, c in zip(f["bin_start_um"], f["bin_end_um"], f["count"])}
        counts.append(np.array([lookup.get(b, 0) for b in bins], dtype=float))
    return starts, ends, counts


def _draw_histogram(ax, starts, ends, counts, **style) -> None:
    """Step histogram when the bins are contiguous, outlined bars otherwise."""
    if len(starts) and np.allclose(starts[1:], ends[:-1]):
        ax.stairs(counts, np.r_[starts, ends[-1]], **style)
    else:
        fill = style.pop("fill", False)
        color = style.pop("color")
        ax.bar(
            starts,
            counts,
            width=ends - starts,
            align="edge",
            fill=fill,
            color=color if fill else None,
            edgecolor=color,
            **style,
        )


def _porosity(summary: pd.DataFrame | None, method: str, realization: str, sigma: float | None) -> float:
    if summary is None:
        return np.nan
    sel = (summary["method"] == method) & (summary["realization"] == realization)
    sel &= (
        summary["sigma_um"].isna()
        if sigma is None
        else summary["sigma_um"].map(lambda v: np.isfinite(v) and sigma_key(v) == sigma)
    )
    values = summary.loc[sel, "porosity"]
    return float(values.iloc[0]) if len(values) else np.nan


def _phi(value: float) -> str:
    return "φ = n/a" if not np.isfinite(value) else f"φ = {value:.3f}"


def fig6_pore_size_histograms(inputs: dict, config: dict | None) -> Figure:
    """Pore-size histograms per method (columns) and σ (rows), ground truth overlaid, porosity in legends."""
    hist = read_table(
        as_path_list(inputs["histogram"])[0],
        ["method", "realization", "sigma_um", "bin_start_um", "bin_end_um", "count"],
    )
    summary = None
    if inputs.get("pores_summary"):
        summary = read_table(
            as_path_list(inputs["pores_summary"])[0], ["method", "realization", "sigma_um", "porosity"]
        )
    measured = hist[hist["sigma_um"].notna()].copy()
    measured["sigma_key"] = measured["sigma_um"].map(sigma_key)
    sigmas = select_sigmas(measured["sigma_um"], config)
    methods = select_methods(measured["method"], config)
    panels = _panel_columns(methods, measured)
    nrows, ncols = max(len(sigmas), 1), max(len(panels), 1)

    fig = Figure(figsize=(2.15 * ncols + 0.5, 1.75 * nrows + 0.7), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    bin_width = float(np.median(hist["bin_end_um"] - hist["bin_start_um"])) if len(hist) else np.nan
    top = 0.0
    for col, (method, realization) in enumerate(panels):
        truth = hist[(hist["method"] == "ground_truth") & (hist["realization"] == realization)]
        gt_phi = _porosity(summary, "ground_truth", realization, None)
        for row, sigma in enumerate(sigmas):
            ax = axes[row, col]
            sub = measured[
                (measured["method"] == method)
                & (measured["realization"] == realization)
                & (measured["sigma_key"] == sigma)
            ]
            starts, ends, (gt_counts, counts) = _aligned_bins(truth, sub)
            if len(starts):
                _draw_histogram(ax, starts, ends, gt_counts, fill=True, color="0.82", label=f"GT: {_phi(gt_phi)}")
                _draw_histogram(
                    ax,
                    starts,
                    ends,
                    gt_counts,
                    color=method_color("ground_truth"),
                    linewidth=0.5,
                    gid="method:ground_truth",
                )
                if not sub.empty:
                    phi = _porosity(summary, method, realization, sigma)
                    _draw_histogram(
                        ax,
                        starts,
                        ends,
                        counts,
                        color=method_color(method),
                        linewidth=1.3,
                        gid=f"method:{method}",
                        label=f"{method_label(method)}: {_phi(phi)}",
                    )
                else:
                    _no_data(ax, "missing")
                ax.legend(loc="upper right", fontsize=5.5, handlelength=1.2, borderpad=0.3, labelspacing=0.2)
                top = max(top, float(np.max(np.r_[gt_counts, counts], initial=0)))
            else:
                _no_data(ax, "no pores")
            if row == 0:
                ax.set_title(method_label(method, realization), color=method_color(method), fontweight="bold")
            if col == 0:
                ax.set_ylabel(f"{sigma_label(sigma)}\npores per {bin_width:g} µm bin")
            if row == nrows - 1:
                ax.set_xlabel("equivalent diameter (µm)")
    if top > 0:  # headroom for the porosity legends above the bars (all panels share the y axis)
        axes[0, 0].set_ylim(0, top * 1.45)
    if not panels:
        _no_data(axes[0, 0], "no histograms in the inputs")
    fig.suptitle("Pore-size distributions vs ground truth (porosity φ = pore volume / foam volume)", fontsize=9)
    return fig


# --------------------------------------------------------------------------------------------- fig7
MAX_POINTS_PER_BOX = 400


def sphericity_box(values: np.ndarray) -> dict:
    """What a fig7 box shows: quartiles, mean and standard deviation of the sphericities."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"n": 0}
    q1, q3 = np.percentile(values, [25, 75])
    return {
        "n": int(values.size),
        "q1": float(q1),
        "q3": float(q3),
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
    }


def _draw_box(ax, position: float, values: np.ndarray, color: str, gid: str, rng) -> dict:
    """Box (quartiles), mean line with its value, whiskers ±1 s.d., a jittered sample of the pores."""
    stats = sphericity_box(values)
    if stats["n"] == 0:
        ax.text(
            position,
            0.5,
            "no pores",
            rotation=90,
            ha="center",
            va="center",
            fontsize=6,
            transform=ax.get_xaxis_transform(),
            color="0.4",
        )
        return stats
    half = 0.32
    ax.add_patch(
        Rectangle(
            (position - half, stats["q1"]),
            2 * half,
            stats["q3"] - stats["q1"],
            facecolor=color,
            alpha=0.22,
            edgecolor=color,
            linewidth=0.8,
            gid=gid,
        )
    )
    lo, hi = stats["mean"] - stats["std"], stats["mean"] + stats["std"]
    ax.vlines(position, lo, hi, color=color, linewidth=0.9, gid=gid)
    ax.hlines([lo, hi], position - half / 2, position + half / 2, color=color, linewidth=0.9, gid=gid)
    ax.hlines(stats["mean"], position - half, position + half, color=color, linewidth=2.0, gid=gid)
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size > MAX_POINTS_PER_BOX:  # a fixed-seed sample keeps the PDF small and the figure stable
        values = rng.choice(values, MAX_POINTS_PER_BOX, replace=False)
    jitter = rng.uniform(-half * 0.8, half * 0.8, values.size)
    ax.scatter(position + jitter, values, s=2.0, color=color, alpha=0.35, linewidths=0, gid=gid, zorder=1)
    ax.annotate(
        f"{stats['mean']:.3f}",
        (position, hi),
        xytext=(0, 2),
        textcoords="offset points",
        ha="center",
        va="bottom",
        fontsize=5.5,
        color=color,
    )
    return stats


def _read_pore_tables(paths) -> dict[tuple[str, str, float | None], pd.DataFrame]:
    """Pore tables by the (method, realization, σ) of their key columns; a table without pores has none to draw."""
    tables = {}
    for path in as_path_list(paths):
        table = read_table(path, ["method", "realization", "sigma_um", "sphericity"])
        key = table_key(table, path)
        if key is not None:
            tables[key] = table
    return tables


def fig7_sphericity(inputs: dict, config: dict | None) -> Figure:
    """Sphericity boxes per σ with the ground truth, one panel per method (DeepNet also on train)."""
    tables = _read_pore_tables(inputs.get("pores"))
    truths = _read_pore_tables(inputs.get("ground_truth_pores"))
    keys = pd.DataFrame([(m, r) for m, r, _ in tables], columns=["method", "realization"])
    methods = select_methods(keys["method"], config, baselines=()) if len(keys) else []
    sigmas = select_sigmas([s for _, _, s in tables], config)
    panels = _panel_columns(methods, keys) if len(keys) else []
    fig = Figure(figsize=(max(2.0, 0.45 * (len(sigmas) + 1)) * max(len(panels), 1) + 0.8, 3.3), layout="constrained")
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False, sharey=True)[0]
    rng = np.random.default_rng(0)
    low = []
    drawn = []  # (axis, position, values) to count the pores below the axis afterwards
    for ax, (method, realization) in zip(axes, panels):
        truth = truths.get(("ground_truth", realization, None))
        boxes = [(METHOD_LABELS["ground_truth"], "ground_truth", None if truth is None else truth["sphericity"])]
        boxes += [(sigma_tag(s), method, tables.get((method, realization, s), {}).get("sphericity")) for s in sigmas]
        for position, (_, box_method, values) in enumerate(boxes):
            stats = _draw_box(
                ax,
                position,
                np.asarray([] if values is None else values, dtype=float),
                method_color(box_method),
                f"method:{box_method}",
                rng,
            )
            if stats["n"]:
                low.append(min(stats["q1"], stats["mean"] - stats["std"]))
                drawn.append((ax, position, np.asarray(values, dtype=float)))
        ax.set_xticks(range(len(boxes)), ["GT"] + [sigma_tag(s) for s in sigmas])
        ax.set_xlim(-0.6, len(boxes) - 0.4)
        ax.set_xlabel("GT, then LRES input σ (µm)")
        ax.set_title(method_label(method, realization), color=method_color(method), fontweight="bold")
    bottom = max(min(low) - 0.03, 0.0) if low else 0.0
    axes[0].set_ylim(bottom, 1.03)
    axes[0].set_ylabel(r"sphericity $\pi^{1/3}(6V)^{2/3}/A$")
    for ax, position, values in drawn:
        # the axis starts just below the boxes and whiskers: say how many pores lie under it
        n_below = int(np.count_nonzero(values < bottom))
        if n_below:
            ax.text(position, bottom, f"↓{n_below}", ha="center", va="bottom", fontsize=5.5, color="0.3")
    if not panels:
        _no_data(axes[0], "no pore tables in the inputs")
    fig.legend(
        [
            Patch(facecolor="0.6", alpha=0.3, edgecolor="0.3"),
            Line2D([], [], color="0.3", linewidth=2),
            Line2D([], [], color="0.3", linewidth=0.9, marker="_", markersize=8),
            Line2D([], [], linestyle="none", marker="o", markersize=2, color="0.3"),
        ],
        ["quartiles (25–75 %)", "mean (value labelled)", "mean ± 1 s.d.", "pores (≤ 400 shown per box)"],
        loc="outside lower center",
        ncol=4,
    )
    fig.suptitle("Pore sphericity vs ground truth (1 = perfect sphere; values above 1 clipped)", fontsize=9)
    return fig


# --------------------------------------------------------------------------------------------- fig9
def fig9_gaussian_fit(inputs: dict, config: dict | None) -> Figure:
    """MSE vs blur σ of the blurred ground truth, one panel per input σ, minima marked with drop lines."""
    curves = read_table(
        as_path_list(inputs["gaussian_fit"])[0], ["method", "realization", "sigma_um", "blur_sigma_um", "mse"]
    )
    best = read_table(
        as_path_list(inputs["gaussian_fit_best"])[0],
        ["method", "realization", "sigma_um", "best_blur_sigma_um", "mse"],
    )
    rows, sigmas = _sigma_rows(curves, COMPARED_REALIZATION, config)
    best_rows, _ = _sigma_rows(best, COMPARED_REALIZATION, config)
    methods = select_methods(rows["method"], config)
    ncols = max(len(sigmas), 1)
    fig = Figure(figsize=(2.6 * ncols + 0.4, 3.2), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False, sharey=True)[0]
    for ax, sigma in zip(axes, sigmas):
        for method in methods:
            sub = rows[(rows["method"] == method) & (rows["sigma_key"] == sigma)].sort_values("blur_sigma_um")
            ax.plot(
                sub["blur_sigma_um"],
                sub["mse"],
                color=method_color(method),
                gid=f"method:{method}",
                linestyle=BASELINE_LINESTYLE if is_baseline(method) else "-",
                linewidth=1.2,
                label=method_label(method),
            )
        ax.axvline(sigma, color="0.6", linestyle=":", linewidth=0.8)
        ax.set_title(f"input {sigma_label(sigma)}")
        ax.set_xlabel("blur σ applied to ground truth (µm)")
        ax.set_yscale("log")
    if len(rows):
        for ax in axes:
            ax.autoscale_view()
        y0 = axes[0].get_ylim()[0]
        for ax, sigma in zip(axes, sigmas):
            minima = []
            for method in methods:
                sel = best_rows[(best_rows["method"] == method) & (best_rows["sigma_key"] == sigma)]
                if sel.empty:
                    continue
                x_best, y_best = float(sel["best_blur_sigma_um"].iloc[0]), float(sel["mse"].iloc[0])
                color = method_color(method)
                ax.plot(
                    [x_best, x_best], [y0, y_best], color=color, linewidth=0.8, linestyle="--", gid=f"method:{method}"
                )
                (marker,) = ax.plot(
                    [x_best], [y_best], marker="o", markersize=4, color=color, linestyle="none", gid=f"method:{method}"
                )
                minima.append((marker, f"{method_label(method)}: {x_best:.3g} µm"))
            ax.set_ylim(bottom=y0)
            if minima:  # the effective resolutions, read off the drop lines
                ax.legend(
                    *zip(*minima),
                    title="effective σ",
                    loc="best",
                    fontsize=5.5,
                    title_fontsize=6,
                    handletextpad=0.2,
                    borderpad=0.3,
                    labelspacing=0.2,
                )
    else:
        _no_data(axes[0], "no Gaussian-fit rows for the alternate realization")
    axes[0].set_ylabel("MSE vs blurred ground truth (material fraction²)")
    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.6", linestyle=":"))
    labels.append("input blur σ")
    fig.legend(handles, labels, loc="outside lower center", ncol=len(handles))
    fig.suptitle("Gaussian-fit effective resolution, alternate realization (minimum = effective σ)", fontsize=9)
    return fig
