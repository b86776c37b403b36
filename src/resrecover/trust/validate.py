"""Does a trust map find what the ground truth finds? Rank statistics against the ground-truth checks.

On the phantoms the ground truth tells where a recovery is wrong, in two ways the study already
computes: the MS-SSIM quality map (voxels) and the one-to-one pore matching (spurious pores have
``matched_gt_label == 0``). A trust map that works without ground truth should agree with both:

- :func:`spearman_map_correlation`: Spearman rank correlation between a trust map and
  1 − MS-SSIM over the foam (positive = the map is high where the recovery is poor);
- :func:`roc_auc`: the area under the ROC curve of a per-pore score separating spurious pores
  from matched ones (1 = every spurious pore scores above every matched pore, 0.5 = chance);
  computed as the Mann-Whitney U statistic, ties counting one half;
- :func:`size_stratified_auc`: the same over pairs of pores of similar size only. Spurious pores
  are mostly small, so smallness alone separates them well; this says what a map adds to that.

Both are rank statistics, so they do not depend on the maps' units or calibration.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ..evaluate.pores import CUT_BY_ENDS
from .maps import TrustError

#: columns of results/tables/trust_validation.csv
VALIDATION_COLUMNS = ["method", "realization", "sigma_um", "quantity", "map", "value", "n"]
#: the most voxels ranked for one Spearman correlation (a regular subsample beyond)
MAX_SPEARMAN_VOXELS = 4_000_000


def spearman_map_correlation(trust_map, msssim_map, mask=None, max_voxels: int = MAX_SPEARMAN_VOXELS):
    """Spearman ρ between ``trust_map`` and 1 − ``msssim_map`` over ``mask``; returns (ρ, n voxels).

    Voxels where either map is NaN are left out; beyond ``max_voxels`` a regular stride subsample
    (deterministic) is ranked. NaN when fewer than 3 voxels remain or a map is constant.
    """
    a = np.asarray(trust_map, dtype=np.float64)
    b = 1.0 - np.asarray(msssim_map, dtype=np.float64)
    if a.shape != b.shape:
        raise TrustError(f"trust map shape {a.shape} differs from the MS-SSIM map shape {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    if mask is not None:
        keep &= np.broadcast_to(np.asarray(mask, bool), a.shape)
    a, b = a[keep], b[keep]
    if a.size > max_voxels:
        step = int(np.ceil(a.size / max_voxels))
        a, b = a[::step], b[::step]
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), int(a.size)
    rho = stats.spearmanr(a, b).statistic
    return float(rho), int(a.size)


def roc_auc(scores, positive) -> float:
    """Area under the ROC curve of ``scores`` for the boolean labels ``positive`` (higher = positive).

    NaN scores are left out; NaN when either class is empty.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if scores.shape != positive.shape:
        raise TrustError(f"{scores.shape[0]} scores for {positive.shape[0]} labels; expected one score per pore")
    keep = np.isfinite(scores)
    scores, positive = scores[keep], positive[keep]
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(scores)  # average ranks: ties count one half
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def size_stratified_auc(scores, positive, diameters, n_strata: int = 4) -> float:
    """ROC AUC counting only pairs of pores of similar size: what a score adds beyond pore size.

    Strata are the quantiles of the positive (spurious) pores' diameters; the AUC of each stratum
    is weighted by its number of (positive, negative) pairs, so the result is the probability that a
    spurious pore scores above a matched pore of about its size. NaN if no stratum holds both.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    diameters = np.asarray(diameters, dtype=np.float64)
    keep = np.isfinite(scores) & np.isfinite(diameters)
    scores, positive, diameters = scores[keep], positive[keep], diameters[keep]
    if not positive.any() or positive.all():
        return float("nan")
    edges = np.unique(np.quantile(diameters[positive], np.linspace(0, 1, n_strata + 1)))
    if edges.size < 2:
        edges = np.array([diameters[positive][0], diameters[positive][0]])
    stratum = np.clip(np.searchsorted(edges, diameters, side="right") - 1, 0, edges.size - 2)
    inside = (diameters >= edges[0]) & (diameters <= edges[-1])
    total = weight = 0.0
    for k in range(edges.size - 1):
        sel = inside & (stratum == k)
        pairs = float((positive & sel).sum()) * float((~positive & sel).sum())
        if pairs > 0:
            total += roc_auc(scores[sel], positive[sel]) * pairs
            weight += pairs
    return total / weight if weight > 0 else float("nan")


def labelled_pores(pore_df: pd.DataFrame) -> pd.DataFrame:
    """The rows whose label (real or spurious) is known: all but the pores cut by an end of the
    ground truth (``matched_gt_label`` = :data:`resrecover.evaluate.pores.CUT_BY_ENDS`), which are
    neither. Real pores at the wrong size (:data:`~resrecover.evaluate.pores.MIS_SIZED`) stay: they are real."""
    if "matched_gt_label" not in pore_df.columns:
        raise TrustError(f"pore table: columns {list(pore_df.columns)}; expected a 'matched_gt_label' column")
    matched = pd.to_numeric(pore_df["matched_gt_label"], errors="coerce")
    return pore_df[~(matched == CUT_BY_ENDS)]


def pore_auc_rows(table: pd.DataFrame, method: str, realization: str, sigma_um: float) -> list[dict]:
    """ROC AUC rows of one per-pore trust table: spurious (``matched_gt_label == 0``) vs real (matched
    or at the wrong size; the pores cut by an end of the ground truth, neither, are left out:
    :func:`labelled_pores`).

    Scores are oriented so that a high score means "suspect": the residual, disagreement and (where
    the table has it) test-time-augmentation variance means as they are, and 1 − trust. A baseline that needs no map, the pore's smallness (map
    ``size_baseline``, score −diameter), is given beside them: spurious pores are mostly small, so
    a map is only useful where it beats that.
    """
    for column in ("matched_gt_label", "residual_mean", "disagreement_mean", "trust"):
        if column not in table.columns:
            raise TrustError(f"per-pore trust table of {method}/{realization}/σ {sigma_um:g}: no column '{column}'")
    table = labelled_pores(table)
    spurious = table["matched_gt_label"].to_numpy() == 0
    rows = []
    scores = [
        ("residual", table["residual_mean"]),
        ("disagreement", table["disagreement_mean"]),
        ("trust", 1.0 - table["trust"]),
    ]
    if "tta_variance_mean" in table.columns:
        scores.append(("tta_variance", table["tta_variance_mean"]))
    for name, score in scores:
        score = score.to_numpy(dtype=np.float64)
        n = int(np.isfinite(score).sum())
        rows.append(_row(method, realization, sigma_um, "roc_auc_spurious", name, roc_auc(score, spurious), n))
        if "diameter_um" in table.columns:
            within = size_stratified_auc(score, spurious, table["diameter_um"])
            rows.append(_row(method, realization, sigma_um, "roc_auc_spurious_within_size", name, within, n))
    if "diameter_um" in table.columns:
        smallness = -table["diameter_um"].to_numpy(dtype=np.float64)
        rows.append(_row(method, realization, sigma_um, "roc_auc_spurious", "size_baseline",
                         roc_auc(smallness, spurious), int(np.isfinite(smallness).sum())))
    rows.append(_row(method, realization, sigma_um, "spurious_pores_scored", "", float(spurious.sum()), len(table)))
    return rows


def _row(method, realization, sigma_um, quantity, map_name, value, n) -> dict:
    return {
        "method": method,
        "realization": realization,
        "sigma_um": float(sigma_um),
        "quantity": quantity,
        "map": map_name,
        "value": float(value) if value is not None else float("nan"),
        "n": int(n),
    }
