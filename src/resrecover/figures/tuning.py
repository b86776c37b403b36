"""Fig. 11 (ours): learning curves on the validation realization, the evidence behind each training budget."""

from __future__ import annotations

from matplotlib.figure import Figure

from ..evaluate.learning_curve import CHOSEN, CURVE_COLUMNS
from .data import as_path_list, read_table
from .style import method_color, method_label, order_methods, sigma_label

#: the two panels of each σ: pores found (the paper's headline) and SSIM
_PANELS = (("recovery_pct", "ground-truth pores found (%)"), ("ssim", "SSIM"))


def fig11_learning_curves(inputs: dict, config: dict | None) -> Figure:
    """Pores found and SSIM on ``validation`` vs training iterations: one column per σ, one line per
    (network, settings); the config's own settings solid, each alternative dashed."""
    curves = read_table(as_path_list(inputs["curves"])[0], CURVE_COLUMNS)
    sigmas = sorted(curves["sigma_um"].unique())
    ncols = max(len(sigmas), 1)
    fig = Figure(figsize=(3.0 * ncols + 0.6, 5.2), layout="constrained")
    axes = fig.subplots(len(_PANELS), ncols, squeeze=False, sharex="col")
    for col, sigma in enumerate(sigmas):
        at_sigma = curves[curves["sigma_um"] == sigma]
        for method in order_methods(at_sigma["method"].unique()):
            for settings in sorted(at_sigma["settings"].unique(), key=lambda name: name != CHOSEN):
                sub = at_sigma[(at_sigma["method"] == method) & (at_sigma["settings"] == settings)]
                if sub.empty:
                    continue
                sub = sub.sort_values("iteration")
                for row, (column, _) in enumerate(_PANELS):
                    axes[row, col].plot(
                        sub["iteration"],
                        sub[column],
                        marker="o",
                        markersize=3,
                        color=method_color(method),
                        linestyle="-" if settings == CHOSEN else "--",
                        gid=f"curve:{method}:{settings}",
                        label=f"{method_label(method)} ({settings})",
                    )
        axes[0, col].set_title(f"validation, input {sigma_label(sigma)}")
        axes[-1, col].set_xlabel("training iterations")
        for row in range(len(_PANELS)):
            axes[row, col].set_xscale("log")
            axes[row, col].grid(True, linewidth=0.4, alpha=0.5)
    for row, (_, label) in enumerate(_PANELS):
        axes[row, 0].set_ylabel(label)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize="small")
    return fig
