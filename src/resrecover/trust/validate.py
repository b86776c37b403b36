"""Does a trust map find what the ground truth finds? Rank statistics against the ground-truth checks.

On the phantoms the ground truth tells where a recovery is wrong, in two ways the study already
computes: the MS-SSIM quality map (voxels) and the one-to-one pore matching (spurious pores have
``matched_gt_label == 0``). A trust map that works without ground truth should agree with both:

- :func:`spearman_map_correlation`: Spearman rank correlation between a trust map and
  1 − MS-SSIM over the foam (positive = the map is high where the recovery is poor);
- :func:`roc_auc`: the area under the ROC curve of a per-pore score separating spurious pores
  from matched ones (1 = every spurious pore scores above every matched pore, 0.5 = chance);
  computed as the Mann-Whitney U statistic, ties counting one half.

Both are rank statistics, so they do not depend on the maps' units or calibration.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

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


def pore_auc_rows(table: pd.DataFrame, method: str, realization: str, sigma_um: float) -> list[dict]:
    """ROC AUC rows of one per-pore trust table: spurious (``matched_gt_label == 0``) vs matched.

    Scores are oriented so that a high score means "suspect": the residual and disagreement means
    as they are, and 1 − trust.
    """
    for column in ("matched_gt_label", "residual_mean", "disagreement_mean", "trust"):
        if column not in table.columns:
            raise TrustError(f"per-pore trust table of {method}/{realization}/σ {sigma_um:g}: no column '{column}'")
    spurious = table["matched_gt_label"].to_numpy() == 0
    rows = []
    for name, score in (
        ("residual", table["residual_mean"]),
        ("disagreement", table["disagreement_mean"]),
        ("trust", 1.0 - table["trust"]),
    ):
        score = score.to_numpy(dtype=np.float64)
        n = int(np.isfinite(score).sum())
        rows.append(_row(method, realization, sigma_um, "roc_auc_spurious", name, roc_auc(score, spurious), n))
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
