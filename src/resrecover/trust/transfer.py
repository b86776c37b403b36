"""Does the spurious-pore classifier carry over to another structure? results/tables/trust_transfer.csv.

Rule ``trust_transfer`` (workflow/rules/transfer.smk; ``make transfer``) sets the realization
``transfer`` (ellipsoidal voids, :mod:`resrecover.phantom.ellipsoids`) beside ``alternate`` (the
foam): both recovered by the models trained on the ``train`` foam, both scored by the classifier
fitted on ``train``'s pores (rule ``trust_model``) with the conformal flag list calibrated on
``train``'s (rule ``flag_pores``). Nothing is fitted or chosen here: every number is a measurement
of fixed models on pores with known truth, and the alternate rows say what "no transfer" looks like.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_write_csv
from .conformal import fdr_and_power
from .maps import TrustError
from .score import roc_auc_bootstrap, spurious_labels
from .spurious import ranks_pores
from .validate import labelled_pores, roc_auc

log = logging.getLogger(__name__)

#: which structure each realization holds (every other realization is a foam)
STRUCTURES = {"transfer": "ellipsoids"}
#: columns of results/tables/trust_transfer.csv
TRANSFER_COLUMNS = [
    "structure", "realization", "method", "sigma_um",
    "n_gt_pores", "recovery_pct", "matched_pct", "n_pores", "n_spurious",
    "auc_p_spurious", "auc_ci_low", "auc_ci_high",
    "auc_size", "auc_size_ci_low", "auc_size_ci_high",
    "fdr_setting", "n_flagged", "fdr_achieved", "power", "in_domain",
]


def _auc(score, y, n_boot: int) -> tuple[float, float, float]:
    """(AUC, 95% low, high): the bootstrap interval of ``n_boot`` resamples, NaN when ``n_boot`` is 0."""
    if n_boot < 1:
        return roc_auc(score, y), float("nan"), float("nan")
    return roc_auc_bootstrap(score, y, n_boot=n_boot)


def transfer_row(scored: pd.DataFrame, summary: pd.Series, config: dict, method: str, realization: str,
                 sigma_um: float) -> dict:
    """One row of :data:`TRANSFER_COLUMNS` for one recovered volume.

    ``scored``: its per-pore table as rule ``flag_pores`` writes it (``p_spurious``, ``flagged``;
    without them, the classifier's columns are NaN); ``summary``: its pore summary (the evaluation's
    ``pores_summary.csv`` row: ``recovery_pct``, ``n_matched``, ``n_missed``, ``n_gt_cut_by_ends``,
    ``n_mis_sized``). ``recovery_pct`` is the paper's measure (recovered pores / ground-truth pores,
    spurious ones included); ``matched_pct`` = 100 × matched / ground-truth pores leaves the
    spurious ones out (and the real pores recovered at the wrong size).

    ``auc_*``: ROC AUC of ``p_spurious`` (and of the pore's smallness, −diameter, the map-free
    baseline) for spurious (no ground-truth match) vs matched pores, with a stratified bootstrap
    95% interval of ``trust.classifier.bootstrap`` resamples; ``fdr_achieved`` and ``power`` of the
    flag list at ``trust.classifier.fdr`` (``n_flagged`` pores); ``in_domain``: whether the
    recovery's input passed its model's out-of-distribution check (column ``calibrated``).
    """
    block = config["trust"]["classifier"]
    n_boot = int(block["bootstrap"])
    scored = labelled_pores(scored)  # a pore cut by an end of the ground truth is neither kind
    y = spurious_labels(scored)
    nan = float("nan")
    n_gt = sum(int(summary.get(key, 0)) for key in ("n_matched", "n_missed", "n_gt_cut_by_ends", "n_mis_sized"))
    row = {
        "structure": STRUCTURES.get(realization, "foam"),
        "realization": realization,
        "method": method,
        "sigma_um": float(sigma_um),
        "n_gt_pores": n_gt,
        "recovery_pct": float(summary["recovery_pct"]),
        "matched_pct": 100.0 * int(summary["n_matched"]) / n_gt if n_gt else float("nan"),
        "n_pores": int(len(scored)),
        "n_spurious": int(y.sum()),
        "fdr_setting": float(block["fdr"]),
        "in_domain": bool(scored["calibrated"].astype(bool).all()) if "calibrated" in scored.columns else True,
    }
    if "diameter_um" not in scored.columns:
        raise TrustError(f"pore table of {method}/{realization}/σ {sigma_um:g}: no column 'diameter_um'")
    smallness = -scored["diameter_um"].to_numpy(dtype=np.float64)
    row.update(zip(("auc_size", "auc_size_ci_low", "auc_size_ci_high"), _auc(smallness, y, n_boot)))
    if "p_spurious" in scored.columns:
        p = scored["p_spurious"].to_numpy(dtype=np.float64)
        # a model not fitted (too few spurious pores to learn from) ranks nothing: no AUC, not 0.5
        auc = _auc(p, y, n_boot) if ranks_pores(p) else (nan,) * 3
        row.update(zip(("auc_p_spurious", "auc_ci_low", "auc_ci_high"), auc))
        fdr, power, n_flagged = fdr_and_power(scored["flagged"].to_numpy(dtype=bool), y)
        row.update(fdr_achieved=fdr, power=power, n_flagged=n_flagged)
    else:  # no classifier (trust.classifier.enabled: false): only the size baseline and the recovery
        row.update(auc_p_spurious=nan, auc_ci_low=nan, auc_ci_high=nan, fdr_achieved=nan, power=nan, n_flagged=0)
    return row


def transfer_table_from_files(volumes, output_path: str | Path, config: dict) -> pd.DataFrame:
    """Write results/tables/trust_transfer.csv: one row per (realization, method, σ) of ``volumes``.

    ``volumes``: one dict per recovered volume, its keys as the rule passes them (``method``,
    ``realization``, ``sigma_um``; never read from a path) and its files: ``pores`` (the scored
    per-pore table of rule ``flag_pores``, or rule ``trust_pores``' without a classifier) and
    ``summary`` (its ``pores_summary.csv``). Sorted by realization (``alternate`` first, the foam
    the classifier was made for), method and σ.
    """
    rows = []
    for volume in volumes:
        scored = pd.read_csv(volume["pores"])
        summaries = pd.read_csv(volume["summary"])
        if len(summaries) != 1:
            raise TrustError(f"{volume['summary']}: {len(summaries)} rows; expected one volume's pore summary")
        rows.append(transfer_row(scored, summaries.iloc[0], config, volume["method"], volume["realization"],
                                 volume["sigma_um"]))
    table = pd.DataFrame(rows, columns=TRANSFER_COLUMNS)
    order = {"alternate": 0, "transfer": 1}
    table = table.sort_values(["realization", "method", "sigma_um"], key=lambda c: c.map(order).fillna(2)
                              if c.name == "realization" else c, kind="mergesort").reset_index(drop=True)
    atomic_write_csv(table, output_path)
    if table.empty:
        log.warning("%s: no volume (trust disabled, or no trust method); the table is empty", output_path)
    for rec in table.itertuples(index=False):
        log.info("%s %s σ %g: %d pores (%d spurious), AUC %.3f [%.3f, %.3f] (size %.3f), FDR %.3f, power %.3f, "
                 "recovery %.1f%% (matched %.1f%%)%s", rec.realization, rec.method, rec.sigma_um, rec.n_pores,
                 rec.n_spurious, rec.auc_p_spurious, rec.auc_ci_low, rec.auc_ci_high, rec.auc_size, rec.fdr_achieved,
                 rec.power, rec.recovery_pct, rec.matched_pct,
                 "" if rec.in_domain else " (input outside the model's training domain)")
    return table
