"""The paper's figures 1-9 (docs/design.md#figures-and-tables), drawn from the result files of docs/results.md.

>>> make_figure("fig5_pore_recovery", {"pores_summary": "results/tables/pores_summary.csv"},
...             "fig5.png", "fig5.pdf", config)  # doctest: +SKIP
"""

from .make import FIGURE_BUILDERS, FIGURE_NAMES, make_figure, save_figure
from .style import METHOD_COLORS, METHOD_LABELS, METHOD_ORDER, method_color, method_label

__all__ = [
    "FIGURE_BUILDERS",
    "FIGURE_NAMES",
    "METHOD_COLORS",
    "METHOD_LABELS",
    "METHOD_ORDER",
    "make_figure",
    "method_color",
    "method_label",
    "save_figure",
]
