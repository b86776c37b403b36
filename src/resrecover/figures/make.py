"""One entry point for every figure rule: build the named figure, save it as PNG and PDF atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import matplotlib
from matplotlib.figure import Figure

from .. import ResrecoverError
from ..io import atomic_output
from .images import fig1_training_pairs, fig2_deepnet_train_vs_alternate, fig4_slice_grid, fig8_msssim_maps
from .plots import fig3_image_metrics, fig5_pore_recovery, fig6_pore_size_histograms, fig7_sphericity, fig9_gaussian_fit
from .style import DPI, RC_PARAMS
from .trust_maps import fig10_trust_maps
from .tuning import fig11_learning_curves

#: Rule name (workflow/rules/figures.smk) -> function(inputs, config) -> Figure.
FIGURE_BUILDERS: dict[str, Callable[[dict, dict | None], Figure]] = {
    "fig1_training_pairs": fig1_training_pairs,
    "fig2_deepnet_train_vs_alternate": fig2_deepnet_train_vs_alternate,
    "fig3_image_metrics": fig3_image_metrics,
    "fig4_slice_grid": fig4_slice_grid,
    "fig5_pore_recovery": fig5_pore_recovery,
    "fig6_pore_size_histograms": fig6_pore_size_histograms,
    "fig7_sphericity": fig7_sphericity,
    "fig8_msssim_maps": fig8_msssim_maps,
    "fig9_gaussian_fit": fig9_gaussian_fit,
}
FIGURE_NAMES: tuple[str, ...] = tuple(FIGURE_BUILDERS)
# ours, beyond the paper's nine: trust maps without ground truth (workflow/rules/trust.smk); kept out of
# FIGURE_NAMES (the paper's figures, which tests/test_figures.py draws from synthetic inputs of its own)
FIGURE_BUILDERS["fig10_trust_maps"] = fig10_trust_maps
# learning curves on the validation realization (workflow/rules/tuning.smk; not part of `all`)
FIGURE_BUILDERS["fig11_learning_curves"] = fig11_learning_curves


def save_figure(fig: Figure, png_path: str | os.PathLike, pdf_path: str | os.PathLike, dpi: int = DPI) -> None:
    """Write ``fig`` as PNG (``dpi``) and PDF; each file appears under its name only when complete."""
    for path, fmt in ((png_path, "png"), (pdf_path, "pdf")):
        with atomic_output(path, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi)


def make_figure(
    name: str,
    inputs: dict[str, str | list[str]],
    png_path: str | os.PathLike,
    pdf_path: str | os.PathLike,
    config: dict | None = None,
) -> Figure:
    """Build figure ``name`` from its input files and save it as PNG and PDF.

    Parameters
    ----------
    name : a figure rule name, e.g. ``"fig5_pore_recovery"`` (see :data:`FIGURE_NAMES`).
    inputs : the rule's named inputs (``dict(snakemake.input.items())``): each a path or a list of paths
        of the docs/results.md layout; method, realization and σ are read from the paths.
    png_path, pdf_path : outputs.
    config : the validated run config; restricts methods and σ to the configured ones and gives the
        crop (foam cylinder) of slice images. Without it, everything present in the inputs is shown.

    Returns
    -------
    The matplotlib Figure (already saved), for inspection by tests.
    """
    if name not in FIGURE_BUILDERS:
        raise ResrecoverError(f"figure name: {name!r} is unknown; expected one of {', '.join(FIGURE_NAMES)}")
    for path in (png_path, pdf_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(RC_PARAMS):
        fig = FIGURE_BUILDERS[name](dict(inputs), config)
        save_figure(fig, png_path, pdf_path)
    return fig
