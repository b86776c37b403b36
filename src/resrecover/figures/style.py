"""One look for every figure: a colour and a label per method, realization line styles, grey scale.

Every figure takes its colours from here, so DeepNet is the same blue in fig2, fig3, fig5, ... fig9.
The palette is Okabe-Ito (readable with the common colour-vision deficiencies).
"""

from __future__ import annotations

import hashlib

from ..config import sigma_tag

#: Methods in the order panels, bars and legends list them (recovery methods first, then baselines).
METHOD_ORDER: tuple[str, ...] = ("deepnet", "srcnn", "rl", "fdk", "ground_truth")

METHOD_COLORS: dict[str, str] = {
    "deepnet": "#0072B2",  # blue
    "srcnn": "#E69F00",  # orange
    "rl": "#009E73",  # bluish green
    "fdk": "#7F7F7F",  # grey: the un-recovered LRES input
    "ground_truth": "#000000",  # black
}

METHOD_LABELS: dict[str, str] = {
    "deepnet": "DeepNet",
    "srcnn": "SRCNN",
    "rl": "RL",
    "fdk": "FDK input",
    "ground_truth": "Ground truth",
}

#: Colours for methods added later (docs/design.md#who-it-is-for: a new method joins every figure).
EXTRA_COLORS: tuple[str, ...] = ("#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#882255", "#44AA99")

#: Baselines are drawn dashed wherever methods are drawn as lines.
BASELINE_LINESTYLE = "--"

#: How the two foam realizations are told apart when both appear in one panel.
REALIZATION_STYLES: dict[str, dict] = {
    "train": {"linestyle": ":", "marker": "o", "fillstyle": "none"},
    "alternate": {"linestyle": "-", "marker": "s", "fillstyle": "full"},
}
REALIZATION_LABELS: dict[str, str] = {"train": "train", "alternate": "alternate"}

#: Grey scale of every slice image (fig1, fig2, fig4), in material fraction (void 0, material 1):
#: fixed rather than per-image so that lost brightness or contrast (e.g. RL) stays visible.
GREY_RANGE: tuple[float, float] = (-0.2, 1.2)
GREY_CMAP = "gray"

#: MS-SSIM maps (fig8): reversed so that low similarity is bright, as in the paper's Figure 8.
MSSSIM_CMAP = "inferno_r"

DPI = 150

#: Matplotlib settings applied while a figure is built and saved.
RC_PARAMS: dict = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 6.5,
    "legend.framealpha": 0.85,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": DPI,
    "svg.fonttype": "none",
}


def method_color(method: str) -> str:
    """Colour of ``method``; a method unknown here gets a stable colour derived from its name."""
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    # sha256 rather than hash(): the same name gets the same colour in every process and figure
    index = int.from_bytes(hashlib.sha256(method.encode()).digest()[:4], "little")
    return EXTRA_COLORS[index % len(EXTRA_COLORS)]


def method_label(method: str, realization: str | None = None) -> str:
    """Display name of ``method``, with the realization in brackets when one is given."""
    label = METHOD_LABELS.get(method, method)
    return f"{label} ({realization})" if realization else label


def order_methods(methods) -> list[str]:
    """Unique ``methods`` in :data:`METHOD_ORDER`; unknown ones follow, alphabetically."""
    unique = set(methods)
    known = [m for m in METHOD_ORDER if m in unique]
    return known + sorted(unique - set(METHOD_ORDER))


def sigma_label(sigma_um: float) -> str:
    """'σ = 3 µm' (as in the paper's "3 µm resolution", the blur standard deviation)."""
    return f"σ = {sigma_tag(sigma_um)} µm"


def is_baseline(method: str) -> bool:
    """Whether ``method`` is a reference drawn for comparison, not a recovery method."""
    return method in ("fdk", "ground_truth")
