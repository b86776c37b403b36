"""The study in one table: every method at every blur on the comparison realization.

``study_summary`` joins the image metrics, the pore summary and the two resolution figures into
``results/tables/summary.csv`` (and a Markdown copy for a README or a lab notebook), and
``paper_ordering`` checks the paper's central finding at one blur level: DeepNet recovers more
pores and has a higher SSIM than SRCNN, which beats Richardson-Lucy.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..io import atomic_output, atomic_write_csv
from .pores import HEADLINE_PORE_COLUMNS
from .stages import KEY_COLUMNS, EvaluationError, _require

#: Columns of results/tables/summary.csv, in order.
SUMMARY_COLUMNS = [
    "method",
    "sigma_um",
    "ssim",
    "psnr_db",
    *HEADLINE_PORE_COLUMNS,
    "effective_sigma_um",
    "fsc_resolution_um",
]

#: The order the paper finds, best first (methods absent from a run are skipped).
PAPER_ORDER = ("deepnet", "srcnn", "rl")


def _read(path, columns) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except FileNotFoundError as exc:
        raise EvaluationError(f"{path}: table not found") from exc
    _require(df, [*KEY_COLUMNS, *columns], path)
    return df[[*KEY_COLUMNS, *columns]]


def study_summary(image_metrics, pores_summary, gaussian_fit_best, fsc_resolution, realization: str) -> pd.DataFrame:
    """One row per (method, σ) of ``realization``, the baseline ``fdk`` (no recovery) included.

    Parameters
    ----------
    image_metrics, pores_summary, gaussian_fit_best, fsc_resolution : paths of the study's tables
        (``results/tables/*.csv``).
    realization : the realization compared (``alternate`` in the study: the models never saw it).

    Returns
    -------
    DataFrame with :data:`SUMMARY_COLUMNS`, sorted by σ and then in the order of ``PAPER_ORDER``
    (other methods after it, alphabetically).
    """
    merged = _read(image_metrics, ["ssim", "psnr"]).rename(columns={"psnr": "psnr_db"})
    parts = [
        (pores_summary, ["n_pores", "recovery_pct", "n_matched", "n_spurious", "porosity_error_pct", "sphericity_mean"]),
        (gaussian_fit_best, ["best_blur_sigma_um"]),
        (fsc_resolution, ["resolution_um"]),
    ]
    for path, columns in parts:
        merged = merged.merge(_read(path, columns), on=KEY_COLUMNS, how="left")
    merged = merged.rename(columns={"best_blur_sigma_um": "effective_sigma_um", "resolution_um": "fsc_resolution_um"})
    rows = merged[merged["realization"] == realization]
    if rows.empty:
        raise EvaluationError(f"{image_metrics}: no rows of realization {realization!r}")
    rank = {m: i for i, m in enumerate(PAPER_ORDER)}
    rows = rows.assign(_rank=rows["method"].map(lambda m: rank.get(m, len(rank))))
    rows = rows.sort_values(["sigma_um", "_rank", "method"], kind="mergesort")
    return rows[SUMMARY_COLUMNS].reset_index(drop=True)


def paper_ordering(summary: pd.DataFrame, sigma_um: float) -> dict[str, bool]:
    """Whether the paper's ordering DeepNet > SRCNN > RL holds at ``sigma_um`` for pore recovery
    and for SSIM: ``{"recovery_pct": bool, "ssim": bool}``. Methods missing from the run are left
    out of the comparison; fewer than two methods is an error."""
    at = summary[summary["sigma_um"] == float(sigma_um)].set_index("method")
    present = [m for m in PAPER_ORDER if m in at.index]
    if len(present) < 2:
        raise EvaluationError(f"sigma_um {sigma_um}: fewer than two of {', '.join(PAPER_ORDER)} in the summary")
    return {
        column: all(at.loc[a, column] > at.loc[b, column] for a, b in zip(present, present[1:]))
        for column in ("recovery_pct", "ssim")
    }


def summary_markdown(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table (numbers rounded for reading; the CSV keeps them all)."""
    header = [
        "method", "σ (µm)", "SSIM", "PSNR (dB)", "pores", "recovered (%)", "matched", "spurious",
        "porosity error (%)", "sphericity", "Gaussian-fit σ (µm)", "FSC res. (µm)",
    ]
    formats = ["{}", "{:g}", "{:.3f}", "{:.1f}", "{:.0f}", "{:.1f}", "{:.0f}", "{:.0f}", "{:+.1f}", "{:.3f}", "{:.2f}",
               "{:.1f}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary.itertuples(index=False):
        cells = ["–" if pd.isna(v) else f.format(v) for f, v in zip(formats, row)]
        if pd.isna(row.fsc_resolution_um):  # the FSC never fell below its threshold
            cells[-1] = "≤ Nyquist"
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Gaussian-fit σ: the blur of the ground truth that best matches the volume (0 = as sharp as the "
        "target). FSC res.: 1 / the frequency where the FSC with the ground truth falls below 1/7; "
        "'≤ Nyquist' where it stays above it up to the grid's Nyquist frequency (2 voxels).",
    ]
    return "\n".join(lines) + "\n"


def write_summary(
    image_metrics, pores_summary, gaussian_fit_best, fsc_resolution, realization: str, csv_out, markdown_out
) -> pd.DataFrame:
    """Write :func:`study_summary` as CSV and Markdown (rule ``summary_table``); returns it."""
    summary = study_summary(image_metrics, pores_summary, gaussian_fit_best, fsc_resolution, realization)
    atomic_write_csv(summary, csv_out)
    with atomic_output(Path(markdown_out)) as tmp:
        Path(tmp).write_text(summary_markdown(summary))
    return summary
